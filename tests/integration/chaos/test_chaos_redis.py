"""Redis flushed, then killed and restarted, while rotations run (issue 13). The rotation service has a
Redis of its own here (killed with SIGKILL, so never the session's shared one). A stream of RotateSecret
calls (the random-value rotator, one secret each) comes in three bursts: FLUSHALL right after the first, a
SIGKILL of Redis right after the second and its restart (same port and data directory) before the third.
Afterwards every rotation ended Succeeded, each token has exactly one attempt and made exactly one version,
and no RotateSecret call failed: the store records the request in PostgreSQL and its lease brings back any
job Redis lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client import AsyncCofferClient
from coffer.embedded import EmbeddedRedis
from coffer.testing.stack import provisioned_stack
from coffer.testing.wait import eventually

from .conftest import LONG

pytestmark = pytest.mark.integration

ROTATIONS = 90 if LONG else 24
#: Redis stays down this long after the SIGKILL before it is started again.
DOWN_SECONDS = 5.0 if LONG else 1.5


async def test_redis_flushed_and_killed_during_rotations_each_rotation_ends_once(
    tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis")
    await asyncio.to_thread(own_redis.start)
    services = await provisioned_stack(
        home=tmp_path,
        pki_dir=pki_dir,
        database_url=database_url,
        COFFER_REDIS_URL=own_redis.url(),
        COFFER_ROTATION_POLL_SECONDS="0.2",
        COFFER_ROTATION_LEASE_SECONDS="2",
        COFFER_ROTATION_BACKOFF_BASE_SECONDS="0.05",
        COFFER_ROTATION_MAX_TRIES="5",
        COFFER_ROTATION_WORKERS="2",
        COFFER_ROTATION_STREAM_PREFIX=f"chaos:{uuid.uuid4().hex[:8]}",
    )
    try:
        await services.start_kms()
        await services.start_store()
        admin = await services.credential("user/admin")
        await services.rotation_credentials()
        gateway = await services.start_gateway()
        await services.start_rotation()
        client = AsyncCofferClient(f"127.0.0.1:{gateway.port}", services.ca_file, admin, max_attempts=5)
        names = [f"chaos/redis-{i}" for i in range(ROTATIONS)]
        initial: dict[str, str] = {}
        for name in names:
            initial[name] = (await client.create_secret(name=name, secret_string="v0")).version_id

        tokens: dict[str, str] = {}
        failures: list[str] = []

        async def rotate(name: str) -> None:
            try:
                reply = await client.call("RotateSecret", secret_id=name, rotation_lambda_arn="random-value")
                tokens[name] = reply.version_id  # type: ignore[attr-defined]
            except Exception as exc:  # counted: none is expected
                failures.append(f"{name}: {type(exc).__name__}: {exc}")

        async def in_flight(wave: list[str]) -> int:
            """How many of ``wave``'s rotations have not ended (read in the store)."""
            count = 0
            for name in wave:
                reply = await client.call("ListRotationAttempts", secret_id=name)
                assert isinstance(reply, sm.ListRotationAttemptsResponse)
                count += not any(a.status in ("Succeeded", "Failed") for a in reply.attempts)
            return count

        # Three waves, each a burst of RotateSecret calls at once: the first is followed at once by FLUSHALL,
        # the second by a SIGKILL of Redis (down DOWN_SECONDS, then restarted), the third runs after.
        third = ROTATIONS // 3
        waves = [names[:third], names[third : 2 * third], names[2 * third :]]
        started = time.monotonic()
        hit: dict[str, int] = {}
        await asyncio.gather(*(rotate(name) for name in waves[0]))
        flusher = aioredis.from_url(own_redis.url())
        try:
            await flusher.flushall()
        finally:
            await flusher.aclose()
        hit["flushed"] = await in_flight(waves[0])
        await asyncio.gather(*(rotate(name) for name in waves[1]))
        await asyncio.to_thread(own_redis.kill)
        hit["killed"] = await in_flight(waves[1])
        await asyncio.sleep(DOWN_SECONDS)
        await asyncio.to_thread(own_redis.start)
        await asyncio.gather(*(rotate(name) for name in waves[2]))
        assert failures == [], failures
        assert set(tokens) == set(names)
        # the faults hit rotations in flight (the burst cannot have ended before them)
        assert hit["flushed"] > 0 and hit["killed"] > 0, hit

        async def unfinished() -> list[str]:
            left = []
            for name, token in tokens.items():
                reply = await client.call("ListRotationAttempts", secret_id=name)
                assert isinstance(reply, sm.ListRotationAttemptsResponse)
                done = [
                    a for a in reply.attempts if a.version_id == token and a.status in ("Succeeded", "Failed")
                ]
                if not done:
                    left.append(name)
            return left

        await eventually(
            unfinished, until=lambda left: not left, timeout=90, interval=0.5, message="every rotation to end"
        )
        took = time.monotonic() - started

        retried = 0
        for name, token in tokens.items():
            reply = await client.call("ListRotationAttempts", secret_id=name)
            assert isinstance(reply, sm.ListRotationAttemptsResponse)
            assert [a.version_id for a in reply.attempts] == [token], name  # one attempt, never twice
            attempt = reply.attempts[0]
            assert attempt.status == "Succeeded", (
                name,
                attempt.error,
            )  # the random-value rotator cannot fail
            retried += attempt.tries > 1
            listed = await client.list_secret_version_ids(secret_id=name, include_deprecated=True)
            assert {v.version_id for v in listed.versions} == {initial[name], token}, name  # one version each
            assert (await client.get_secret_value(secret_id=name)).version_id == token
        print(
            f"\nRedis chaos: {ROTATIONS} rotations, all Succeeded once in {took:.1f} s; "
            f"in flight when Redis was flushed {hit['flushed']}, when it was killed {hit['killed']} "
            f"(down {DOWN_SECONDS:.1f} s); "
            f"{retried} needed more than one try; 0 RotateSecret failures"
        )
        await client.close()
    finally:
        await services.aclose()
        await asyncio.to_thread(own_redis.stop)

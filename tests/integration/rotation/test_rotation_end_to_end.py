"""Rotation end to end, in-process: kms → store → gateway and the rotation service (scheduler, Redis stream,
workers) on real PostgreSQL and Redis. Rotations are asked for through the public API and watched through it
(ListRotationAttempts, DescribeSecret, GetSecretValue)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.pki import ensure_pki
from coffer.rotation.queue import JobQueue
from coffer.testing.wait import eventually

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "rotation_function" / "api_key_function.py"
STEP_NAMES = ["createSecret", "setSecret", "testSecret", "finishSecret"]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coffer_example_api_key_function_e2e", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def attempts(stack: Any, secret_id: str) -> list[sm.RotationAttempt]:
    reply = await stack.client.call("ListRotationAttempts", secret_id=secret_id)
    assert isinstance(reply, sm.ListRotationAttemptsResponse)
    return list(reply.attempts)


async def wait_attempt(
    stack: Any, secret_id: str, token: str, statuses: set[str], within: float = 20.0
) -> sm.RotationAttempt:

    async def this_attempt() -> sm.RotationAttempt | None:
        return next((a for a in await attempts(stack, secret_id) if a.version_id == token), None)

    attempt = await eventually(
        this_attempt,
        until=lambda a: a is not None and a.status in statuses,
        timeout=within,
        interval=0.1,
        message=f"attempt {token} to reach {statuses}",
    )
    assert attempt is not None
    return attempt


def stages_of(describe: sm.DescribeSecretResponse) -> dict[str, list[str]]:
    return {vid: sorted(s.stages) for vid, s in describe.version_ids_to_stages.items()}


class HeldFunction:
    """The example rotation function, served over TLS with its own CA and registered; ``hold(step)`` makes
    the next call of that step wait until ``release()``; ``fail_set`` makes setSecret refuse."""

    def __init__(self, stack: Any, tmp_path: Path) -> None:
        self.stack = stack
        self.example = load_example()
        self.pki = tmp_path / f"fn-pki-{uuid.uuid4().hex[:6]}"
        ensure_pki(self.pki, identities=["api-key-function"])
        self.target = self.example.KeyFileTarget(tmp_path / f"keys-{uuid.uuid4().hex[:6]}.json")
        self.hold_step: str | None = None
        self.reached = asyncio.Event()
        self.released = asyncio.Event()
        self.fail_set = False
        self.calls: list[str] = []
        self.server: Any = None
        self.arn = ""

    async def before_step(self, step: str, token: str) -> None:
        self.calls.append(step)
        if step == self.hold_step:
            self.hold_step = None
            self.reached.set()
            await self.released.wait()
        if step == "setSecret" and self.fail_set:
            raise self.example.StepFailed("the target refused the new key")

    def hold(self, step: str) -> None:
        self.hold_step, self.reached, self.released = step, asyncio.Event(), asyncio.Event()

    def release(self) -> None:
        self.released.set()

    async def start(self, name: str) -> str:
        function = self.example.ApiKeyRotationFunction(
            self.stack.client, self.target, before_step=self.before_step
        )
        self.server, port = await self.example.serve(
            function,
            bind="127.0.0.1:0",
            cert_pem=(self.pki / "api-key-function.crt").read_bytes(),
            key_pem=(self.pki / "api-key-function.key").read_bytes(),
            caller_ca_pem=self.stack.ca_file.read_bytes(),
        )
        reply = await self.stack.client.call(
            "RegisterRotationFunction",
            name=name,
            endpoint=f"127.0.0.1:{port}",
            ca_pem=(self.pki / "ca.crt").read_text(),
            server_name="api-key-function",
        )
        self.arn = reply.function.arn
        return self.arn

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0.2)


async def test_random_value_rotation_end_to_end(stack: Any) -> None:
    await stack.start_rotation()
    created = await stack.client.create_secret(name="app/token", secret_string="first-value")
    watch = stack.client.watch_secrets(secret_ids=["app/token"])
    assert (await anext(watch)).kind == "Heartbeat"
    reply = await stack.client.call("RotateSecret", secret_id="app/token", rotation_lambda_arn="random-value")
    token = reply.version_id
    attempt = await wait_attempt(stack, "app/token", token, {"Succeeded", "Failed"})
    assert attempt.status == "Succeeded", attempt.error
    # The change stream told the rotation's story: started, the pending value put, succeeded.
    seen: list[tuple[str, str, list[str]]] = []
    async for event in watch:
        if event.kind != "Heartbeat":
            seen.append((event.kind, event.version_id, list(event.version_stages)))
        if event.kind == "RotationSucceeded":
            break
    await watch.aclose()
    assert seen[0] == ("RotationStarted", token, ["AWSPENDING"])
    assert ("VersionCreated", token, ["AWSPENDING"]) in seen
    assert seen[-1] == ("RotationSucceeded", token, ["AWSCURRENT"])
    done = {(s.step, s.status) for s in attempt.steps}
    assert done == {(step, "succeeded") for step in STEP_NAMES}
    current = await stack.client.get_secret_value(secret_id="app/token")
    previous = await stack.client.get_secret_value(secret_id="app/token", version_stage="AWSPREVIOUS")
    assert current.version_id == token and current.secret_string not in ("", "first-value")
    assert len(current.secret_string) == 32
    assert previous.version_id == created.version_id and previous.secret_string == "first-value"
    describe = await stack.client.describe_secret(secret_id="app/token")
    assert describe.rotation_enabled and describe.rotation_lambda_arn == "random-value"
    assert describe.HasField("last_rotated_date")
    assert all("AWSPENDING" not in labels for labels in stages_of(describe).values())


async def test_a_rate_schedule_rotates_by_itself_when_due(stack: Any) -> None:
    await stack.start_rotation()
    await stack.client.create_secret(name="app/scheduled", secret_string="v0")
    await stack.client.call(
        "RotateSecret",
        secret_id="app/scheduled",
        rotation_lambda_arn="random-value",
        rotation_rules={"schedule_expression": "rate(4 hours)"},
        rotate_immediately=False,
    )
    # The configuration test (testSecret on a temporary copy) runs first; AWSCURRENT stays.
    await eventually(
        lambda: attempts(stack, "app/scheduled"),
        until=lambda found: bool(found) and all(a.status in ("Succeeded", "Failed") for a in found),
        timeout=20,
        interval=0.1,
        message="the configuration test to finish",
    )
    assert (await stack.client.get_secret_value(secret_id="app/scheduled")).secret_string == "v0"
    before = len(await attempts(stack, "app/scheduled"))
    # Move the clock: the next rotation is due now (four hours pass in one UPDATE).
    conn = await asyncpg.connect(stack.env["COFFER_DATABASE_URL"])
    try:
        await conn.execute(
            "UPDATE store.secrets SET next_rotation_at = now() - interval '1 second' WHERE name = $1",
            "app/scheduled",
        )
    finally:
        await conn.close()
    await eventually(
        lambda: attempts(stack, "app/scheduled"),
        until=lambda found: len(found) > before and found[0].status in ("Succeeded", "Failed"),
        timeout=20,
        interval=0.1,
        message="the due rotation to finish",
    )
    newest = (await attempts(stack, "app/scheduled"))[0]
    assert len(await attempts(stack, "app/scheduled")) > before
    assert newest.status == "Succeeded" and newest.rotate_immediately, newest
    current = await stack.client.get_secret_value(secret_id="app/scheduled")
    assert current.version_id == newest.version_id and current.secret_string != "v0"
    describe = await stack.client.describe_secret(secret_id="app/scheduled")
    assert describe.HasField("last_rotated_date") and describe.HasField("next_rotation_date")
    assert describe.next_rotation_date.ToDatetime() > describe.last_rotated_date.ToDatetime()


async def test_a_custom_function_rotates_a_secret_end_to_end(stack: Any, tmp_path: Path) -> None:
    await stack.start_rotation()
    fn = HeldFunction(stack, tmp_path)
    arn = await fn.start("api-keys")
    try:
        await stack.client.create_secret(name="svc/api-key", secret_string="key-0")
        fn.target.add("key-0")
        token = (
            await stack.client.call("RotateSecret", secret_id="svc/api-key", rotation_lambda_arn=arn)
        ).version_id
        attempt = await wait_attempt(stack, "svc/api-key", token, {"Succeeded", "Failed"})
        assert attempt.status == "Succeeded", attempt.error
        current = await stack.client.get_secret_value(secret_id="svc/api-key")
        assert current.version_id == token and current.secret_string != "key-0"
        assert fn.target.keys() == ["key-0", current.secret_string]
        assert fn.calls == STEP_NAMES
    finally:
        await fn.stop()


async def test_redis_loss_and_a_restart_mid_rotation_still_complete(stack: Any, tmp_path: Path) -> None:
    await stack.start_rotation()
    fn = HeldFunction(stack, tmp_path)
    arn = await fn.start("held")
    try:
        await stack.client.create_secret(name="svc/flushed", secret_string="key-0")
        fn.target.add("key-0")
        # 1: FLUSHALL while a worker is inside setSecret: it finishes anyway.
        fn.hold("setSecret")
        token = (
            await stack.client.call("RotateSecret", secret_id="svc/flushed", rotation_lambda_arn=arn)
        ).version_id
        await asyncio.wait_for(fn.reached.wait(), 20)
        r = aioredis.from_url(stack.env["COFFER_REDIS_URL"])
        await r.flushall()
        fn.release()
        attempt = await wait_attempt(stack, "svc/flushed", token, {"Succeeded", "Failed"})
        assert attempt.status == "Succeeded", attempt.error

        # 2: the service stops inside testSecret and Redis loses everything; a new service process finds the
        # unfinished rotation in PostgreSQL once the lease has run out, and completes it.
        fn.hold("testSecret")
        token2 = (await stack.client.call("RotateSecret", secret_id="svc/flushed")).version_id
        await asyncio.wait_for(fn.reached.wait(), 20)
        await stack.stop_rotation()
        await r.flushall()
        await r.aclose()
        fn.release()
        await stack.start_rotation()
        attempt = await wait_attempt(stack, "svc/flushed", token2, {"Succeeded", "Failed"})
        assert attempt.status == "Succeeded", attempt.error
        assert attempt.tries >= 2
        current = await stack.client.get_secret_value(secret_id="svc/flushed")
        assert current.version_id == token2
    finally:
        await fn.stop()


async def test_a_failing_target_retries_then_fails_and_a_later_rotation_recovers(
    stack: Any, tmp_path: Path
) -> None:
    await stack.start_rotation()
    fn = HeldFunction(stack, tmp_path)
    arn = await fn.start("refusing")
    try:
        created = await stack.client.create_secret(name="svc/refused", secret_string="key-0")
        fn.target.add("key-0")
        fn.fail_set = True
        token = (
            await stack.client.call("RotateSecret", secret_id="svc/refused", rotation_lambda_arn=arn)
        ).version_id
        attempt = await wait_attempt(stack, "svc/refused", token, {"Succeeded", "Failed"})
        assert attempt.status == "Failed"
        assert attempt.tries == 3  # COFFER_ROTATION_MAX_TRIES
        assert "the target refused the new key" in attempt.error
        assert [s.status for s in attempt.steps if s.step == "setSecret"].count("failed") == 3
        assert not any(s.step == "finishSecret" for s in attempt.steps)
        current = await stack.client.get_secret_value(secret_id="svc/refused")
        assert current.version_id == created.version_id and current.secret_string == "key-0"
        queue = JobQueue(stack.rotation.redis, prefix=stack.settings.rotation_stream_prefix)
        letters = [d for d in await queue.dead_letters() if d.job is not None and d.job.token == token]
        assert letters and "the target refused the new key" in letters[0].error

        # AWS: the AWSPENDING left behind blocks a new rotation until it is removed.
        with pytest.raises(Exception) as blocked:
            await stack.client.call("RotateSecret", secret_id="svc/refused")
        assert "previous rotation isn't complete" in str(blocked.value)
        await stack.client.update_secret_version_stage(
            secret_id="svc/refused", version_stage="AWSPENDING", remove_from_version_id=token
        )
        fn.fail_set = False  # the target is fixed
        token2 = (await stack.client.call("RotateSecret", secret_id="svc/refused")).version_id
        attempt = await wait_attempt(stack, "svc/refused", token2, {"Succeeded", "Failed"})
        assert attempt.status == "Succeeded", attempt.error
        assert (await stack.client.get_secret_value(secret_id="svc/refused")).version_id == token2
    finally:
        await fn.stop()


async def test_rotate_secret_wakes_the_scheduler_through_the_store_stream(stack: Any) -> None:
    # Polling every minute: only the store's WatchRotationRequests stream can start this rotation in time.
    await stack.start_rotation(COFFER_ROTATION_POLL_SECONDS="60")
    await asyncio.sleep(1.0)  # the watch stream opens; the start-up poll has passed
    await stack.client.create_secret(name="app/notified", secret_string="v0")
    token = (
        await stack.client.call("RotateSecret", secret_id="app/notified", rotation_lambda_arn="random-value")
    ).version_id
    attempt = await wait_attempt(stack, "app/notified", token, {"Succeeded", "Failed"}, within=10.0)
    assert attempt.status == "Succeeded", attempt.error

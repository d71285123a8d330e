"""The rotation attempt history does not grow without bound: the newest N finished attempts of each secret
are kept, older ones deleted (with their steps); an open attempt is never deleted. Role sessions are deleted
an hour after they expired."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.store.housekeeping import Housekeeper
from coffer.store.repository import StoreRepository
from coffer.testing.stack import insert_session

from .conftest import StoreStack

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_only_the_newest_finished_attempts_are_kept(stack: StoreStack) -> None:
    ids = {}
    for name in ("many", "few"):
        created = await stack.store.CreateSecret(
            pb.CreateSecretRequest(name=name, client_request_token=str(uuid.uuid4()), secret_string="v")
        )
        ids[name] = await stack.db.fetchval("SELECT id FROM store.secrets WHERE arn = $1", created.arn)

    async def attempt(secret: str, n: int, status: str) -> int:
        finished = None if status == "Pending" else T0 + timedelta(minutes=n)
        attempt_id: int = await stack.db.fetchval(
            "INSERT INTO store.rotation_attempts (secret_id, token, rotator, rotate_immediately, trigger,"
            " status, requested_at, finished_at) VALUES ($1, $2, 'postgres', true, 'api', $3, $4, $5)"
            " RETURNING id",
            ids[secret],
            f"tok-{secret}-{n}",
            status,
            T0 + timedelta(minutes=n),
            finished,
        )
        await stack.db.execute(
            "INSERT INTO store.rotation_steps (attempt_id, try_number, step, status, worker_id, started_at)"
            " VALUES ($1, 1, 'createSecret', 'succeeded', 'w', $2)",
            attempt_id,
            T0,
        )
        return attempt_id

    made = [await attempt("many", n, "Failed" if n % 2 else "Succeeded") for n in range(250)]
    open_one = await attempt("many", 250, "Pending")
    few = [await attempt("few", n, "Succeeded") for n in range(3)]

    keeper = Housekeeper(
        StoreRepository(stack.store_runtime.pool),
        stack.clock,
        peers=[],
        outbox_max_rows=100_000,
        outbox_keep_seconds=600,
        attempts_kept=100,
    )
    result = await keeper.run_once()
    assert result.attempts == 150
    kept = await stack.db.fetch("SELECT id FROM store.rotation_attempts ORDER BY id")
    assert [r["id"] for r in kept] == [*made[150:], open_one, *few]
    steps = await stack.db.fetchval("SELECT count(*) FROM store.rotation_steps")
    assert steps == 100 + 1 + 3
    assert (await keeper.run_once()).attempts == 0


async def test_role_sessions_expired_over_an_hour_ago_are_deleted(stack: StoreStack) -> None:
    """Every AssumeRole adds a session row: the housekeeper deletes those that expired more than an hour
    ago; live sessions, sessions expired less than an hour ago and long-term keys stay."""
    now = stack.clock.now()
    # expiries counted from the store's (manual) clock, which the housekeeper reads
    for name, expires_in in (
        ("old", -timedelta(hours=2)),
        ("recent", -timedelta(minutes=5)),
        ("live", timedelta(hours=1)),
    ):
        creds = await insert_session(stack.db, "coffer-rotation", name, lifetime=timedelta(hours=1))
        await stack.db.execute(
            "UPDATE store.iam_access_keys SET expires_at = $2 WHERE access_key_id = $1",
            creds.access_key_id,
            now + expires_in,
        )
    long_term = await stack.db.fetchval("SELECT count(*) FROM store.iam_access_keys WHERE expires_at IS NULL")
    keeper = Housekeeper(
        StoreRepository(stack.store_runtime.pool),
        stack.clock,
        peers=[],
        outbox_max_rows=100_000,
        outbox_keep_seconds=600,
        attempts_kept=100,
    )
    # (The store's own housekeeping loop may run a round meanwhile: the table's state is what is checked.)

    async def sessions_left() -> set[str]:
        rows = await stack.db.fetch(
            "SELECT session_name FROM store.iam_access_keys WHERE expires_at IS NOT NULL"
        )
        return {r["session_name"] for r in rows}

    await keeper.run_once()
    assert await sessions_left() == {"recent", "live"}
    stack.clock.advance(timedelta(hours=1))  # "recent" is now more than an hour past its expiry
    await keeper.run_once()
    assert await sessions_left() == {"live"}
    assert (await keeper.run_once()).sessions == 0
    assert await stack.db.fetchval("SELECT count(*) FROM store.iam_access_keys WHERE expires_at IS NULL") == (
        long_term
    )

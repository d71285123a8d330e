"""The rotation service as a process (the ``make run`` deployment) rotating a real PostgreSQL password with
the built-in ``postgresql-single-user`` rotator, SIGKILLed while each of the four steps is in progress, in
turn, then started again: the attempt ends Succeeded, AWSCURRENT's password logs in to the target, the old one
is refused, and the staging labels are right (issue 3).

Nothing in the product is told about the test. Each step is held from outside with a database lock the step
itself needs, so the worker is provably *inside* the step (its step row says ``started`` and a backend of the
step waits on the test's lock) when it is killed:

- createSecret / finishSecret write through the store (PutSecretValue / UpdateSecretVersionStage), which locks
  the secret's row in ``store.secrets`` FOR UPDATE: the test holds that row lock. The worker's bookkeeping
  (lease, step records) locks only its ``store.rotation_attempts`` row, so it is not blocked by it.
- setSecret runs ALTER ROLE on the target: an uncommitted ``ALTER ROLE <user> VALID UNTIL 'infinity'`` in
  another session makes it wait on that transaction.
- testSecret logs in with the pending password: a new session takes a lock on its database object after
  authenticating, so an uncommitted ``ALTER DATABASE <db> RENAME`` (AccessExclusiveLock on it) holds the
  login.

To reach a later step with the hold already in place, the test gates the worker between steps:
``LOCK TABLE store.rotation_steps IN SHARE MODE`` blocks the worker's next step record (an INSERT) while the
test swaps one hold for the next.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.aio import AsyncCofferClient
from coffer.devrun import Deployment
from coffer.settings import Settings
from coffer.testing.scram_postgres import ScramPostgres, scram_postgres
from coffer.testing.wait import eventually

pytestmark = pytest.mark.e2e

ROTATOR = "postgresql-single-user"
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
#: The bound of every wait in this module (seconds).
WAIT = 20.0
POLL = 0.05

T = TypeVar("T")


@pytest.fixture(scope="module")
def target() -> Iterator[ScramPostgres]:
    """The rotated database: a PostgreSQL that checks passwords (scram-sha-256)."""
    with scram_postgres() as server:
        yield server


@dataclass(frozen=True)
class Crashable:
    deployment: Deployment
    database_url: str  # the deployment's own database (the store's tables)


@pytest.fixture(scope="module")
def crashable(e2e_tools: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashable]:
    database_url = e2e_tools.new_database()
    env = e2e_tools.env_for(tmp_path_factory.mktemp("crash-pg") / "home", database_url=database_url)
    env.update(
        {
            "COFFER_ROTATION_POLL_SECONDS": "0.3",
            "COFFER_ROTATION_LEASE_SECONDS": "2",
            "COFFER_ROTATION_BACKOFF_BASE_SECONDS": "0.1",
            "COFFER_ROTATION_WORKERS": "2",
            "COFFER_ROTATION_ALLOWED_TARGETS": "127.0.0.1",  # the target database listens on loopback
        }
    )
    lines: list[str] = []
    deployment = Deployment(Settings.from_env(env), echo=lines.append, health_timeout=60.0)
    deployment.start()
    try:
        yield Crashable(deployment=deployment, database_url=database_url)
    finally:
        deployment.stop()


async def until_found(what: str, probe: Callable[[], Awaitable[T | None]], within: float = WAIT) -> T:
    """``probe()`` until it returns something other than None; fail after ``within`` seconds."""
    found: T | None = await eventually(
        probe, until=lambda v: v is not None, timeout=within, interval=POLL, message=f"waiting for {what}"
    )
    assert found is not None
    return found


class Hold:
    """An open transaction holding a lock (``sql``) on one server; ``observer`` is another session there."""

    def __init__(self, what: str, conn: asyncpg.Connection, observer: asyncpg.Connection) -> None:
        self.what = what
        self.conn = conn
        self.observer = observer
        self.pid: int = conn.get_server_pid()
        self.released = False

    @classmethod
    async def take(
        cls,
        what: str,
        conn: asyncpg.Connection,
        observer: asyncpg.Connection,
        sql: str,
        *args: object,
    ) -> Hold:
        hold = cls(what, conn, observer)
        await conn.execute("BEGIN")
        rows = await conn.fetch(sql, *args)
        if sql.lstrip().upper().startswith("SELECT"):
            assert rows, f"{what}: nothing to lock"
        return hold

    async def waiters(self) -> list[asyncpg.Record]:
        """Backends waiting on a lock this transaction holds."""
        rows: list[asyncpg.Record] = await self.observer.fetch(
            "SELECT pid, state, wait_event_type, wait_event, query FROM pg_stat_activity"
            " WHERE $1 = ANY(pg_blocking_pids(pid))",
            self.pid,
        )
        return rows

    async def wait_for_waiter(self, needle: str = "") -> asyncpg.Record:
        """The backend waiting on this hold (whose statement contains ``needle``)."""

        async def probe() -> asyncpg.Record | None:
            for row in await self.waiters():
                if row["wait_event_type"] == "Lock" and needle in (row["query"] or ""):
                    return row
            return None

        return await until_found(f"a backend waiting on {self.what} ({needle!r})", probe)

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            await self.conn.execute("ROLLBACK")
        finally:
            await self.conn.close()


async def pid_settled(observer: asyncpg.Connection, pid: int) -> None:
    """Wait until backend ``pid`` is idle or gone (its transaction committed or rolled back)."""

    async def probe() -> bool | None:
        state = await observer.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
        return True if state in (None, "idle") else None

    await until_found(f"backend {pid} to finish its transaction", probe)


async def terminate(observer: asyncpg.Connection, pid: int) -> None:
    """End a backend orphaned by the killed worker (its client is gone) and wait until it has exited."""
    await observer.fetchval("SELECT pg_terminate_backend($1)", pid)

    async def probe() -> bool | None:
        alive = await observer.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        return True if alive == 0 else None

    await until_found(f"backend {pid} to exit", probe)


async def rotate(admin: AsyncCofferClient, secret_id: str) -> str:
    reply = await admin.call("RotateSecret", secret_id=secret_id, rotation_lambda_arn=ROTATOR)
    assert isinstance(reply, sm.RotateSecretResponse)
    return reply.version_id


async def attempt_of(admin: AsyncCofferClient, secret_id: str, token: str) -> sm.RotationAttempt | None:
    reply = await admin.call("ListRotationAttempts", secret_id=secret_id)
    assert isinstance(reply, sm.ListRotationAttemptsResponse)
    return next((a for a in reply.attempts if a.version_id == token), None)


async def step_started(admin: AsyncCofferClient, secret_id: str, token: str, step: str) -> sm.RotationAttempt:
    """The attempt, once its current try has recorded ``step`` as started (and not finished)."""

    async def probe() -> sm.RotationAttempt | None:
        attempt = await attempt_of(admin, secret_id, token)
        if attempt is None:
            return None
        for record in attempt.steps:
            if record.try_number == attempt.tries and record.step == step and record.status == "started":
                return attempt
        return None

    return await until_found(f"{step} to be started", probe)


async def finished(admin: AsyncCofferClient, secret_id: str, token: str) -> sm.RotationAttempt:
    async def probe() -> sm.RotationAttempt | None:
        attempt = await attempt_of(admin, secret_id, token)
        return attempt if attempt is not None and attempt.status in ("Succeeded", "Failed") else None

    return await until_found(f"rotation {token} to finish", probe, within=WAIT * 2)


async def logs_in(target: ScramPostgres, user: str, password: str, database: str) -> bool:
    try:
        conn = await target.connect(user, password, database=database)
    except asyncpg.InvalidPasswordError:
        return False
    try:
        assert await conn.fetchval("SELECT current_user") == user
    finally:
        await conn.close()
    return True


@pytest.mark.parametrize("step", STEPS)
async def test_sigkill_inside_each_postgres_rotation_step_then_restart_completes_it(
    step: str, crashable: Crashable, target: ScramPostgres
) -> None:
    deployment = crashable.deployment
    admin = AsyncCofferClient(deployment.endpoint, deployment.ca_file, deployment.admin)
    tag = uuid.uuid4().hex[:8]
    user, dbname, name = f"crash_{tag}", f"crashdb_{tag}", f"db/crash-{step}-{tag}"
    first_password = secrets.token_urlsafe(18)
    target_su = await target.connect()
    store_db = await asyncpg.connect(crashable.database_url)
    holds: list[Hold] = []

    async def on_target(what: str, sql: str) -> Hold:
        hold = await Hold.take(what, await target.connect(), target_su, sql)
        holds.append(hold)
        return hold

    async def on_store(what: str, sql: str, *args: object) -> Hold:
        hold = await Hold.take(what, await asyncpg.connect(crashable.database_url), store_db, sql, *args)
        holds.append(hold)
        return hold

    async def gate_after_set_secret(role_lock: Hold) -> Hold:
        """With the worker waiting inside setSecret on ``role_lock``: let setSecret finish and stop the worker
        at its next step record (setSecret succeeded), before it goes on to testSecret."""
        await role_lock.wait_for_waiter("ALTER ROLE")
        await step_started(admin, name, token, "setSecret")
        gate = await on_store("store.rotation_steps", "LOCK TABLE store.rotation_steps IN SHARE MODE")
        await role_lock.release()
        await gate.wait_for_waiter("INSERT INTO store.rotation_steps")
        return gate

    lock_role = f"ALTER ROLE \"{user}\" VALID UNTIL 'infinity'"
    lock_row = "SELECT 1 FROM store.secrets WHERE name = $1 FOR UPDATE"
    try:
        await target_su.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{first_password}'")
        await target_su.execute(f'CREATE DATABASE "{dbname}"')
        document = {
            "engine": "postgres",
            "host": target.tcp_host,
            "port": target.port,
            "ssl": False,  # the embedded target's build has no TLS
            "username": user,
            "password": first_password,
            "dbname": dbname,
        }
        created = await admin.create_secret(name=name, secret_string=json.dumps(document))
        original = created.version_id
        await admin.get_secret_value(secret_id=name)  # LastAccessedDate is today: reads won't touch the row

        # --- hold the worker inside `step` ------------------------------------------------------------------
        if step == "createSecret":
            gate = await on_store("store.rotation_steps", "LOCK TABLE store.rotation_steps IN SHARE MODE")
            token = await rotate(admin, name)
            await gate.wait_for_waiter("INSERT INTO store.rotation_steps")  # about to record createSecret
            hold = await on_store("the secret's row", lock_row, name)
            await gate.release()
            waiter = await hold.wait_for_waiter("FROM store.secrets s WHERE")  # PutSecretValue's lock
        else:
            role_lock = await on_target("the role's pg_authid row", lock_role)
            token = await rotate(admin, name)
            if step == "setSecret":
                hold = role_lock
                waiter = await hold.wait_for_waiter("ALTER ROLE")
            elif step == "testSecret":
                gate = await gate_after_set_secret(role_lock)
                hold = await on_target(
                    "the target database", f'ALTER DATABASE "{dbname}" RENAME TO "{dbname}_held"'
                )
                await gate.release()
                # the pending login: authenticated, it waits for the lock on its database
                waiter = await hold.wait_for_waiter()
            else:
                gate = await gate_after_set_secret(role_lock)
                hold = await on_store("the secret's row", lock_row, name)
                await gate.release()
                waiter = await hold.wait_for_waiter("FROM store.secrets s WHERE")  # UpdateSecretVersionStage
        inside = await step_started(admin, name, token, step)
        killed_try = inside.tries
        assert inside.status == "InProgress", inside

        # --- crash, let go, restart -------------------------------------------------------------------------
        code = await asyncio.to_thread(deployment.kill_service, "rotation", signal.SIGKILL)
        assert code == -signal.SIGKILL
        if hold.observer is target_su:
            await terminate(target_su, waiter["pid"])  # the dead worker's session: the change never happens
            await hold.release()
        else:
            await hold.release()
            await pid_settled(store_db, waiter["pid"])  # the store finishes (or drops) the dead call's write
        await asyncio.to_thread(deployment.start_service, "rotation")

        # --- the rotation completes -------------------------------------------------------------------------
        attempt = await finished(admin, name, token)
        assert attempt.status == "Succeeded", (step, attempt.error)
        assert attempt.tries > killed_try, attempt
        held = [r for r in attempt.steps if r.try_number == killed_try and r.step == step]
        assert [r.status for r in held] == ["started"], attempt  # the killed try never finished the step
        last = {r.step: r.status for r in attempt.steps if r.try_number == attempt.tries}
        assert last == dict.fromkeys(STEPS, "succeeded"), attempt

        current = await admin.get_secret_value(secret_id=name)
        assert current.version_id == token
        new_doc = json.loads(current.secret_string)
        assert new_doc == {**document, "password": new_doc["password"]}
        assert new_doc["password"] != first_password
        previous = await admin.get_secret_value(secret_id=name, version_stage="AWSPREVIOUS")
        assert previous.version_id == original
        assert json.loads(previous.secret_string) == document

        assert await logs_in(target, user, new_doc["password"], dbname), "AWSCURRENT's password is refused"
        assert not await logs_in(target, user, first_password, dbname), "the old password still works"

        described = await admin.describe_secret(secret_id=name)
        stages = {vid: sorted(s.stages) for vid, s in described.version_ids_to_stages.items()}
        assert stages == {token: ["AWSCURRENT"], original: ["AWSPREVIOUS"]}, stages
    finally:
        for hold in holds:
            await hold.release()
        if "rotation" not in deployment.processes:
            await asyncio.to_thread(deployment.start_service, "rotation")
        await store_db.close()
        await target_su.close()
        await admin.close()

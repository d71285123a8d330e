"""Leader election for the jobs that must run once per deployment however many replicas of a service run
(issue 11): the store's purge and housekeeping loops, the kms's maintenance (key purge and automatic
rotation). Each job has a PostgreSQL advisory lock of its own (a stable 64-bit key derived from its name);
a replica runs the job only while it holds that lock on a dedicated connection.

- Campaign: every ``retry_seconds`` a replica tries ``pg_try_advisory_lock`` (never a blocking wait: no
  event says the lock was released).
- Lead: the job runs in a task of its own; every ``retry_seconds`` the lock's connection is checked with a
  bounded ``SELECT 1``. A lost connection (the database restarted, the network cut) loses the lock with it:
  the job is cancelled at once and the replica campaigns again.
- Fail over: when the leader's process dies, PostgreSQL ends its session and releases the lock; another
  replica takes it at its next try, so within ``retry_seconds`` (plus the time PostgreSQL needs to notice
  a connection that vanished without closing: immediate on a crash of the process, TCP keepalive on a host
  that disappeared).

The jobs are transactional already (a purge round locks what it purges), so two leaders for a moment (the
old one not yet noticing its loss) would not double an effect; the election keeps the work, and its logs,
to one replica. The replicator elects its own leader the same way (``coffer.store.replicator``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog

from coffer.loops import cancel_and_wait
from coffer.metrics import set_leader

log = structlog.get_logger("coffer.leader")

#: How long the lock connection's liveness check may take before the lock counts as lost.
CHECK_TIMEOUT_SECONDS = 5.0
#: How often a replica tries for a free lock and a leader checks its own: the longest a failover waits.
LEADER_RETRY_SECONDS = 1.0


def lock_key(job: str) -> int:
    """The advisory lock key of ``job``: the first 8 bytes of SHA-256("coffer-leader:" + job), signed."""
    digest = hashlib.sha256(f"coffer-leader:{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass
class Leadership:
    """Runs one job on one replica at a time (see the module docstring)."""

    dsn: str
    job: str
    retry_seconds: float = LEADER_RETRY_SECONDS
    #: Whether this replica holds the lock (and so runs the job) now.
    is_leader: bool = False
    #: How many times this replica became the leader.
    terms: int = 0

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Forever: campaign, and while leading run ``work()`` (a loop that runs until cancelled)."""
        key = lock_key(self.job)
        set_leader(self.job, False)
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=CHECK_TIMEOUT_SECONDS)
                while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):  # noqa: ASYNC110 - no event tells of a release
                    await asyncio.sleep(self.retry_seconds)
                await self._lead(conn, work)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the lock's connection failed or the job did: campaign again
                log.warning("leader.lost", job=self.job, error_type=type(exc).__name__, error=str(exc)[:200])
            finally:
                if self.is_leader:
                    log.info("leader.stepped_down", job=self.job)
                self.is_leader = False
                set_leader(self.job, False)
                if conn is not None:
                    await close_connection(conn)
            await asyncio.sleep(self.retry_seconds)

    async def _lead(self, conn: asyncpg.Connection, work: Callable[[], Awaitable[None]]) -> None:
        self.is_leader = True
        set_leader(self.job, True)
        self.terms += 1
        log.info("leader.elected", job=self.job, term=self.terms)
        task = asyncio.ensure_future(work())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.retry_seconds)
                if done:
                    task.result()  # the job is a loop: ending at all (or raising) is reported
                    raise RuntimeError(f"the {self.job} job ended")
                await asyncio.wait_for(conn.fetchval("SELECT 1"), CHECK_TIMEOUT_SECONDS)
        finally:
            await cancel_and_wait(task, logger=log)


async def close_connection(conn: asyncpg.Connection) -> None:
    """Close the lock's connection (releasing the lock); one that cannot close cleanly is terminated."""
    if conn.is_closed():
        return
    try:
        await asyncio.shield(conn.close(timeout=2))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()

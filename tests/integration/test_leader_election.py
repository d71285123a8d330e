"""Leader election of the jobs that run once per deployment (issue 11, ``coffer.leader``) against real
PostgreSQL: of several replicas exactly one runs a job; when the leader goes (its process ends, its lock's
connection is killed) another takes over within a couple of seconds; two stores on one database split
nothing twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from coffer.leader import Leadership, lock_key
from coffer.metrics import REGISTRY
from coffer.store.__main__ import serve as serve_store
from coffer.testing.stack import provisioned_stack
from coffer.testing.wait import eventually

pytestmark = pytest.mark.integration

RETRY = 0.2


async def test_one_replica_runs_the_job_and_another_takes_over_when_it_goes(database_url: str) -> None:
    running: list[str] = []

    def job(name: str) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            running.append(name)
            try:
                await asyncio.Event().wait()  # a loop that runs until cancelled
            finally:
                running.remove(name)

        return work

    replicas = {name: Leadership(database_url, "test.job", retry_seconds=RETRY) for name in ("a", "b", "c")}
    tasks = {name: asyncio.ensure_future(lead.run(job(name))) for name, lead in replicas.items()}
    try:
        await eventually(lambda: list(running), until=lambda r: len(r) == 1, timeout=10)
        for _ in range(10):  # and it stays one
            await asyncio.sleep(RETRY)
            assert len(running) == 1 and sum(lead.is_leader for lead in replicas.values()) == 1
        first = running[0]

        # The leader's process ends: its session goes, and with it the lock.
        tasks[first].cancel()
        await asyncio.gather(tasks[first], return_exceptions=True)
        gone = time.monotonic()
        await eventually(lambda: list(running), until=lambda r: len(r) == 1 and r[0] != first, timeout=10)
        took = time.monotonic() - gone
        assert took < 5 * RETRY + 2, took
        second = running[0]

        # The leader's lock connection is killed from outside (a restart, a cut): it steps down, and the
        # lock goes to one replica (possibly itself again, once it reconnects) — never to two at once.
        admin = await asyncpg.connect(database_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND ((classid::bigint << 32) | objid::bigint) = $1",
                lock_key("test.job"),
            )
        finally:
            await admin.close()
        assert killed == 1
        # it noticed (stepped down, or already re-elected after reconnecting)
        await eventually(
            lambda: (replicas[second].is_leader, replicas[second].terms),
            until=lambda state: not state[0] or state[1] > 1,
            timeout=10,
        )
        await eventually(lambda: list(running), until=lambda r: len(r) == 1, timeout=10)
        assert sum(lead.is_leader for name, lead in replicas.items() if name != first) == 1
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert running == []


async def test_the_leader_gauge_says_who_leads(database_url: str) -> None:
    """``coffer_leader{service,job}`` is 0 while a replica stands by, 1 while it leads, 0 once it stopped."""

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("coffer_leader", {"service": "test", "job": "test.gauge"})

    blocker = await asyncpg.connect(database_url)  # holds the lock first: the replica must stand by
    try:
        assert await blocker.fetchval("SELECT pg_try_advisory_lock($1)", lock_key("test.gauge"))
        lead = Leadership(database_url, "test.gauge", retry_seconds=RETRY)

        async def work() -> None:
            await asyncio.Event().wait()

        task = asyncio.ensure_future(lead.run(work))
        try:
            await eventually(gauge, until=lambda v: v == 0, timeout=10)
            await asyncio.sleep(3 * RETRY)
            assert gauge() == 0 and not lead.is_leader
            await blocker.execute("SELECT pg_advisory_unlock_all()")
            await eventually(gauge, until=lambda v: v == 1, timeout=10)
            assert lead.is_leader
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert gauge() == 0
    finally:
        await blocker.close()


async def test_two_stores_on_one_database_elect_one_purger_and_fail_over(
    tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    services = await provisioned_stack(
        home=tmp_path, pki_dir=pki_dir, database_url=database_url, COFFER_PURGE_INTERVAL_SECONDS="0.5"
    )
    try:
        await services.start_kms()
        first = await services.start_store()
        second = await serve_store(services.settings("store", COFFER_STORE_ADDR="127.0.0.1:0"))
        try:
            stores = (first, second)
            for job in ("purge_leadership", "housekeeping_leadership"):

                def leaders(attr: str = job) -> list[bool]:
                    return [bool(getattr(s, attr) and getattr(s, attr).is_leader) for s in stores]

                await eventually(leaders, until=lambda flags: sum(flags) == 1, timeout=10)
            leader = first if first.purge_leadership and first.purge_leadership.is_leader else second
            other = second if leader is first else first
            await leader.aclose()
            gone = time.monotonic()
            await eventually(
                lambda: bool(other.purge_leadership and other.purge_leadership.is_leader),
                until=bool,
                timeout=10,
            )
            assert time.monotonic() - gone < 5
            housekeeping = other.housekeeping_leadership
            assert housekeeping is not None
            await eventually(lambda: housekeeping.is_leader, until=bool, timeout=10)
        finally:
            await second.aclose()
    finally:
        await services.aclose()

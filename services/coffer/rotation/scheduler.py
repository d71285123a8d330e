"""The scheduler: asks the store which rotations need a job (``ClaimDueRotations`` — new attempts, scheduled
ones that came due, unfinished ones whose lease expired) and puts one job per attempt on the Redis stream.

It wakes every ``poll_seconds``, and at once when PostgreSQL sends ``NOTIFY coffer_rotation_requested``
(RotateSecret does) if a database URL is configured. Duplicate jobs are harmless — a worker must take the
attempt's lease in PostgreSQL before it runs anything — so several schedulers may run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from coffer import logs
from coffer.core import errors
from coffer.rotation.control import RotationControl
from coffer.rotation.queue import JobQueue

log = logs.get_logger("coffer.rotation.scheduler")

CHANNEL = "coffer_rotation_requested"
CLAIM_LIMIT = 100


class Scheduler:
    def __init__(
        self,
        *,
        control: RotationControl,
        queue: JobQueue,
        poll_seconds: float,
        database_url: str = "",
    ) -> None:
        self._control = control
        self._queue = queue
        self._poll_seconds = poll_seconds
        self._database_url = database_url
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """One pass: claim what is due and enqueue it. Returns the number of jobs enqueued."""
        jobs = await self._control.claim_due(limit=CLAIM_LIMIT)
        if jobs:
            await self._queue.ensure_group()
        for job in jobs:
            await self._queue.enqueue(job)
        if jobs:
            log.info("rotation.jobs_enqueued", count=len(jobs))
        return len(jobs)

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen()) if self._database_url else None
        try:
            while True:
                self._wake.clear()
                try:
                    await self.run_once()
                except errors.CofferError as exc:
                    log.warning("rotation.claim_failed", error_code=exc.code, error=str(exc))
                except Exception as exc:  # Redis down, ...: try again at the next tick
                    log.warning("rotation.claim_failed", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _listen(self) -> None:
        """LISTEN for RotateSecret's NOTIFY; reconnect after a lost connection (polling covers the gap)."""

        def on_notify(*_args: Any) -> None:
            self._wake.set()

        def on_lost(*_args: Any) -> None:
            lost.set()

        while True:
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._database_url, timeout=10)
                conn.add_termination_listener(on_lost)
                await conn.add_listener(CHANNEL, on_notify)
                self._wake.set()  # anything requested while we were not listening
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("rotation.listen_failed", error=type(exc).__name__)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(max(1.0, self._poll_seconds))

"""The scheduler: asks the store which rotations need a job (``ClaimDueRotations`` — new attempts, scheduled
ones that came due, unfinished ones whose lease expired) and puts one job per attempt on the Redis stream.

It wakes every ``poll_seconds``, and at once when the store says a rotation was requested (RotateSecret):
the store's ``WatchRotationRequests`` stream, followed with back-off reconnects (polling covers the gaps). The
scheduler has no database access. Duplicate jobs are harmless — a worker must take the attempt's lease in
the store before it runs anything — so several schedulers may run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from coffer import logs
from coffer.core import errors
from coffer.rotation.control import DueRotations
from coffer.rotation.queue import JobQueue

log = logs.get_logger("coffer.rotation.scheduler")

CLAIM_LIMIT = 100
WATCH_RETRY_SECONDS = 0.5
WATCH_MAX_RETRY_SECONDS = 30.0


class Scheduler:
    def __init__(
        self,
        *,
        control: DueRotations,
        queue: JobQueue,
        poll_seconds: float,
    ) -> None:
        self._control = control
        self._queue = queue
        self._poll_seconds = poll_seconds
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
        listener = asyncio.create_task(self._watch(), name="rotation-scheduler-watch")
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
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _watch(self) -> None:
        """Follow the store's rotation requests; each message (the first one included: requests may have been
        missed while not watching) wakes the loop. Reconnect with back-off when the stream breaks."""
        delay = WATCH_RETRY_SECONDS
        while True:
            try:
                async for _ in self._control.watch_requests():
                    delay = WATCH_RETRY_SECONDS
                    self._wake.set()
            except (grpc.aio.AioRpcError, errors.CofferError):
                log.warning("rotation.watch_failed", retry_seconds=delay, exc_info=True)
            else:
                log.info("rotation.watch_ended", retry_seconds=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_MAX_RETRY_SECONDS)

"""The scheduler: asks the store which rotations need a job (``ClaimDueRotations`` — new attempts, scheduled
ones that came due, unfinished ones whose lease expired) and puts one job per attempt on the Redis stream.

It wakes every ``poll_seconds``, and at once when the store says a rotation was requested (RotateSecret):
the store's ``WatchRotationRequests`` stream, followed with back-off reconnects (polling covers the gaps). The
scheduler has no database access. Duplicate jobs are harmless — a worker must take the attempt's lease in
the store before it runs anything — so several schedulers may run side by side.
"""

from __future__ import annotations

import asyncio

from coffer import logs
from coffer.loops import cancel_and_wait, run_forever
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
        """Claim and enqueue every ``poll_seconds`` and whenever woken, following the store's requests in a
        task beside it; failures (the store or Redis away) are logged with their traceback and retried."""
        watcher = asyncio.create_task(
            run_forever(
                self._follow_requests,
                name="rotation.watch",
                interval=WATCH_RETRY_SECONDS,
                retry_after=WATCH_RETRY_SECONDS,
                retry_max=WATCH_MAX_RETRY_SECONDS,
                logger=log,
            ),
            name="rotation-scheduler-watch",
        )
        try:
            await run_forever(
                self._claim_round,
                name="rotation.claim",
                interval=self._poll_seconds,
                wake=self._wake,
                logger=log,
            )
        finally:
            await cancel_and_wait(watcher, logger=log)

    async def _claim_round(self) -> None:
        await self.run_once()

    async def _follow_requests(self) -> None:
        """Follow the store's rotation requests until the stream ends; each message (the first one included:
        requests may have been missed while not watching) wakes the claim loop. A broken stream raises, and
        ``run_forever`` reconnects with back-off."""
        async for _ in self._control.watch_requests():
            self._wake.set()
        log.info("rotation.watch_ended")

"""The background loop of the kms service: every ``interval`` seconds, purge keys whose DeletionDate has
passed and perform due automatic rotations (``KmsApp.run_maintenance``). With a ``Leadership`` it runs on one
kms replica at a time (``coffer.leader``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from coffer.kms.model import MaintenanceReport
from coffer.leader import Leadership
from coffer.loops import cancel_and_wait, run_forever

log = structlog.get_logger("coffer.kms")


class MaintenanceLoop:
    def __init__(
        self,
        *,
        run: Callable[[], Awaitable[MaintenanceReport]],
        interval: float,
        leadership: Leadership | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("the maintenance interval must be positive")
        self._run = run
        self._interval = interval
        self.leadership = leadership
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="kms-maintenance")

    async def _round(self) -> None:
        report = await self._run()
        if report.purged or report.rotated:
            log.info("kms.maintenance", purged=len(report.purged), rotated=len(report.rotated))

    async def _loop(self) -> None:
        if self.leadership is not None:
            await self.leadership.run(self._rounds)
        else:
            await self._rounds()

    async def _rounds(self) -> None:
        await run_forever(self._round, name="kms.maintenance", interval=self._interval, logger=log)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task, logger=log)

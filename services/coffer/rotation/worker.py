"""Rotation workers: read jobs from the stream (consumer group), take the attempt's lease in PostgreSQL, run
the steps (each recorded as started BEFORE the target is touched, then succeeded or failed), and report the
outcome: CompleteRotation, or FailRotationTry (the store schedules the next try with back-off, or marks the
attempt Failed — then the job goes to the dead-letter stream). The lease is renewed while a step runs; a
worker that loses it stops. Entries a crashed worker never acknowledged are reclaimed with XAUTOCLAIM; the
lease (not Redis) is what keeps two workers off the same attempt.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from coffer import logs, metrics
from coffer.api.store.v1 import store_pb2
from coffer.core import errors
from coffer.core.rotation import STEP_STATUSES
from coffer.core.targets import with_detail
from coffer.loops import cancel_and_wait, run_forever
from coffer.rotation.control import RotationControl
from coffer.rotation.queue import Delivery, JobQueue
from coffer.rotation.rotators import RotatorRegistry
from coffer.rotation.rotators.base import (
    CREATE_SECRET,
    FINISH_SECRET,
    SET_SECRET,
    STEPS,
    TEST_SECRET,
    RotationStepError,
    Rotator,
    SecretsApi,
    StepContext,
)

log = logs.get_logger("coffer.rotation.worker")

STARTED, SUCCEEDED, FAILED = STEP_STATUSES
MAX_ERROR_LENGTH = 1000


class LeaseLost(Exception):
    """Another worker holds the attempt now (our lease expired): stop without reporting an outcome."""


def new_worker_id(index: int) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{index}-{uuid.uuid4().hex[:6]}"


def describe_error(exc: BaseException) -> str:
    """What the attempt records: our own messages (RotationStepError, CofferError) are written to be shown,
    a RotationStepError's detail follows them for operators only (``coffer.core.targets.with_detail``);
    anything else is named by its type and message, cut short."""
    if isinstance(exc, errors.CofferError):
        text = f"{exc.code}: {exc}"
    elif isinstance(exc, RotationStepError):
        text = with_detail(str(exc) or type(exc).__name__, exc.detail)
    elif isinstance(exc, TimeoutError):
        text = "The step timed out."
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_LENGTH]


def _step_fn(rotator: Rotator, step: str) -> Callable[[StepContext], Awaitable[None]]:
    return {
        CREATE_SECRET: rotator.create_secret,
        SET_SECRET: rotator.set_secret,
        TEST_SECRET: rotator.test_secret,
        FINISH_SECRET: rotator.finish_secret,
    }[step]


class Worker:
    def __init__(
        self,
        *,
        worker_id: str,
        queue: JobQueue,
        control: RotationControl,
        registry: RotatorRegistry,
        api: SecretsApi,
        lease_seconds: float,
        step_timeout: float = 600.0,
    ) -> None:
        self.worker_id = worker_id
        self._queue = queue
        self._control = control
        self._registry = registry
        self._api = api
        self._lease_seconds = max(1, round(lease_seconds))
        self._step_timeout = step_timeout
        self._next_reclaim = 0.0

    async def run(self) -> None:
        """Read and handle jobs forever (reclaiming crashed workers' entries about once per lease). A round
        that fails (Redis or the store unreachable) is logged with its traceback and retried after a second,
        backing off to five while failures repeat."""
        self._next_reclaim = 0.0
        await run_forever(
            self._round,
            name="rotation.worker",
            interval=0,
            retry_after=1.0,
            retry_max=5.0,
            logger=log.bind(worker=self.worker_id),
        )

    async def _round(self) -> float:
        """Handle what one read returns (the read itself waits up to a second for work)."""
        now = asyncio.get_running_loop().time()
        deliveries: list[Delivery] = []
        if now >= self._next_reclaim:
            self._next_reclaim = now + max(1.0, self._lease_seconds / 2)
            deliveries = await self._queue.reclaim(
                self.worker_id, min_idle_ms=int(self._lease_seconds * 1000)
            )
        if not deliveries:
            deliveries = await self._queue.read(self.worker_id, count=1, block_ms=1000)
        for delivery in deliveries:
            await self.handle(delivery)
        return 0.0

    async def handle(self, delivery: Delivery) -> None:
        job = delivery.job
        try:
            if job is None:
                log.warning("rotation.bad_job", entry=delivery.entry_id)
                return
            await self.run_job(job)
        finally:
            await self._queue.ack(delivery.entry_id)

    async def run_job(self, job: store_pb2.RotationJob) -> str:
        """Run one job if its lease can be taken. Returns the outcome: ``skipped``, ``succeeded``,
        ``retry``, ``failed`` or ``lease_lost`` (counted in ``coffer_rotation_attempts_total``)."""
        outcome = await self._run_job(job)
        kind = "custom" if job.rotator.startswith("arn:") else (job.rotator or "unknown")
        metrics.ROTATION_ATTEMPTS.labels("rotation", kind, outcome).inc()
        return outcome

    async def _run_job(self, job: store_pb2.RotationJob) -> str:
        lease = await self._control.acquire_lease(
            job, worker_id=self.worker_id, lease_seconds=self._lease_seconds
        )
        if not lease.acquired:
            log.info("rotation.job_skipped", secret=job.secret_arn, token=job.token, reason=lease.reason)
            return "skipped"
        if lease.HasField("job"):
            job = lease.job
        log.info(
            "rotation.job_started",
            secret=job.secret_arn,
            token=job.token,
            rotator=job.rotator,
            try_number=job.try_number,
            worker=self.worker_id,
        )
        steps_task = asyncio.create_task(self._run_steps(job))
        renewer = asyncio.create_task(self._renew(job, steps_task))
        try:
            await steps_task
        except LeaseLost:
            log.warning("rotation.lease_lost", secret=job.secret_arn, token=job.token, worker=self.worker_id)
            return "lease_lost"
        except asyncio.CancelledError:
            if renewer.done() and not renewer.cancelled() and renewer.result() is False:
                log.warning("rotation.lease_lost", secret=job.secret_arn, token=job.token)
                return "lease_lost"
            raise
        except Exception as exc:
            error = describe_error(exc)
            reply = await self._control.fail_try(job, worker_id=self.worker_id, error=error)
            if reply.final:
                await self._queue.dead_letter(job, error=error)
                log.warning("rotation.failed", secret=job.secret_arn, token=job.token, error=error)
                return "failed"
            log.info(
                "rotation.retry_scheduled",
                secret=job.secret_arn,
                token=job.token,
                error=error,
                next_try_seconds=reply.next_try_seconds,
            )
            return "retry"
        finally:
            await cancel_and_wait(renewer, logger=log)
        await self._control.complete(job, worker_id=self.worker_id)
        log.info("rotation.succeeded", secret=job.secret_arn, token=job.token)
        return "succeeded"

    async def _run_steps(self, job: store_pb2.RotationJob) -> None:
        rotator = await self._registry.resolve(job.rotator)
        try:
            ctx = StepContext(secret_arn=job.secret_arn, token=job.token, api=self._api)
            steps = STEPS if job.rotate_immediately else (TEST_SECRET,)
            for step in steps:
                await self._control.record_step(job, worker_id=self.worker_id, step=step, status=STARTED)
                try:
                    await asyncio.wait_for(_step_fn(rotator, step)(ctx), timeout=self._step_timeout)
                except Exception as exc:
                    if isinstance(exc, RotationStepError) and exc.step is None:
                        exc.step = step
                    await self._control.record_step(
                        job, worker_id=self.worker_id, step=step, status=FAILED, error=describe_error(exc)
                    )
                    raise
                await self._control.record_step(job, worker_id=self.worker_id, step=step, status=SUCCEEDED)
        finally:
            await self._registry.release(rotator)

    async def _renew(self, job: store_pb2.RotationJob, steps: asyncio.Task[None]) -> bool:
        """Renew the lease every third of its length; cancel the steps if it was lost."""
        while not steps.done():
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                lease = await self._control.acquire_lease(
                    job, worker_id=self.worker_id, lease_seconds=self._lease_seconds
                )
            except errors.CofferError as exc:
                log.warning("rotation.lease_renewal_failed", error=describe_error(exc))
                continue
            if not lease.acquired:
                steps.cancel()
                return False
        return True


class WorkerPool:
    """``count`` workers in one process, each its own consumer in the group."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(w.run(), name=f"rotation-worker-{w.worker_id}") for w in self.workers
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks, logger=log)

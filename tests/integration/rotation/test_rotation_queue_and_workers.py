"""The rotation service's queue and workers against a real Redis (Valkey): stream + consumer group,
XAUTOCLAIM of a crashed worker's entry, dead letters, recovery from FLUSHALL; and the worker's protocol —
lease, each step recorded as started before it runs, Complete / FailRotationTry, dead letter when final, one
worker per attempt.

The store's bookkeeping is played by ``LeaseBook``, an in-memory stand-in with the store's lease semantics,
and secrets by ``VersionBook`` (AWS's staging-label rules); the whole flow against the real store and
gateway is in ``tests/e2e/test_e2e_rotation.py``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.store.v1 import store_pb2
from coffer.core import errors
from coffer.rotation.queue import JobQueue
from coffer.rotation.rotators import RotatorRegistry
from coffer.rotation.rotators.base import STEPS, RotationStepError, Rotator, SecretValue, StepContext
from coffer.rotation.rotators.random_value import RandomValueRotator
from coffer.rotation.worker import Worker
from coffer.testing.wait import eventually

pytestmark = pytest.mark.integration

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:app/key-AbCdEf"


# ------------------------------------------------------------------------------------------ stand-ins


@dataclass
class Attempt:
    job: store_pb2.RotationJob
    status: str = "Pending"
    tries: int = 0
    owner: str | None = None
    expires: float = 0.0
    error: str | None = None
    steps: list[tuple[int, str, str, str]] = field(default_factory=list)  # (try, step, status, worker)


class LeaseBook:
    """The store's RotationControlService semantics, in memory."""

    def __init__(self, *, max_tries: int = 3) -> None:
        self.attempts: dict[str, Attempt] = {}
        self.max_tries = max_tries

    def add(self, job: store_pb2.RotationJob) -> None:
        self.attempts[job.token] = Attempt(job=job)

    async def claim_due(self, *, limit: int) -> list[store_pb2.RotationJob]:
        now = time.monotonic()
        return [
            a.job
            for a in self.attempts.values()
            if a.status in ("Pending", "InProgress") and (a.owner is None or a.expires < now)
        ][:limit]

    async def acquire_lease(
        self, job: store_pb2.RotationJob, *, worker_id: str, lease_seconds: int
    ) -> store_pb2.AcquireRotationLeaseResponse:
        a = self.attempts[job.token]
        now = time.monotonic()
        if a.status not in ("Pending", "InProgress"):
            return store_pb2.AcquireRotationLeaseResponse(acquired=False, reason=a.status)
        if a.owner not in (None, worker_id) and a.expires >= now:
            return store_pb2.AcquireRotationLeaseResponse(acquired=False, reason=f"held by {a.owner}")
        if a.owner != worker_id or a.expires < now:
            a.tries += 1
        a.owner, a.expires, a.status = worker_id, now + lease_seconds, "InProgress"
        out = store_pb2.RotationJob()
        out.CopyFrom(a.job)
        out.try_number = a.tries
        return store_pb2.AcquireRotationLeaseResponse(acquired=True, job=out)

    def _held(self, job: store_pb2.RotationJob, worker_id: str) -> Attempt:
        a = self.attempts[job.token]
        assert a.owner == worker_id, f"{worker_id} wrote to an attempt leased by {a.owner}"
        return a

    async def record_step(
        self, job: store_pb2.RotationJob, *, worker_id: str, step: str, status: str, error: str | None = None
    ) -> None:
        a = self._held(job, worker_id)
        a.steps.append((a.tries, step, status, worker_id))

    async def complete(self, job: store_pb2.RotationJob, *, worker_id: str) -> None:
        a = self._held(job, worker_id)
        a.status, a.owner = "Succeeded", None

    async def fail_try(
        self, job: store_pb2.RotationJob, *, worker_id: str, error: str
    ) -> store_pb2.FailRotationTryResponse:
        a = self._held(job, worker_id)
        a.error, a.owner = error, None
        if a.tries >= self.max_tries:
            a.status = "Failed"
            return store_pb2.FailRotationTryResponse(final=True)
        a.status = "Pending"
        return store_pb2.FailRotationTryResponse(final=False, next_try_seconds=0)


class VersionBook:
    """A secret's versions and staging labels with AWS's rules (the SecretsApi surface)."""

    def __init__(self, current: str) -> None:
        self.values: dict[str, str | None] = {"v1": current}
        self.stages: dict[str, set[str]] = {"v1": {"AWSCURRENT"}}
        self.calls: list[str] = []

    def placeholder(self, token: str) -> None:
        self.values[token] = None
        self.stages[token] = {"AWSPENDING"}

    def version_with(self, label: str) -> str | None:
        return next((v for v, s in self.stages.items() if label in s), None)

    async def get_value(
        self, *, secret_id: str, version_id: str | None = None, version_stage: str | None = None
    ) -> SecretValue:
        vid = version_id or self.version_with(version_stage or "AWSCURRENT")
        if vid is None or self.values.get(vid) is None:
            raise errors.NotFound("Secrets Manager can't find the specified secret value.")
        if version_stage and version_stage not in self.stages[vid]:
            raise errors.NotFound("Secrets Manager can't find the specified secret value.")
        return SecretValue(ARN, "app/key", vid, self.values[vid], None, tuple(sorted(self.stages[vid])))

    async def put_pending_value(self, *, secret_id: str, token: str, secret_string: str) -> None:
        self.calls.append("put")
        if self.values.get(token) is not None:
            raise errors.AlreadyExists("already has a value")
        self.values[token] = secret_string
        for labels in self.stages.values():
            labels.discard("AWSPENDING")
        self.stages.setdefault(token, set()).add("AWSPENDING")

    async def version_stages(self, *, secret_id: str) -> dict[str, list[str]]:
        return {v: sorted(s) for v, s in self.stages.items() if s}

    async def move_current(self, *, secret_id: str, to_version_id: str, from_version_id: str | None) -> None:
        self.calls.append("move")
        assert from_version_id == self.version_with("AWSCURRENT")
        for labels in self.stages.values():
            labels.discard("AWSPREVIOUS")
        if from_version_id:
            self.stages[from_version_id].discard("AWSCURRENT")
            self.stages[from_version_id].add("AWSPREVIOUS")
        self.stages[to_version_id].add("AWSCURRENT")

    async def random_password(
        self, *, length: int = 32, exclude_characters: str = "", exclude_punctuation: bool = False
    ) -> str:
        return uuid.uuid4().hex[:length]

    async def rotation_functions(self) -> list[sm.RotationFunction]:
        return []


class Gate:
    """A rotator wrapper that can fail or hold chosen steps, and tracks concurrency."""

    def __init__(self, inner: RandomValueRotator, *, fail_at: str | None = None) -> None:
        self.name = "gated"
        self.inner = inner
        self.fail_at = fail_at
        self.hold_at: str | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.running = 0
        self.max_running = 0

    async def _step(self, step: str, ctx: StepContext) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if step == self.hold_at:
                self.held.set()
                await self.release.wait()
            if step == self.fail_at:
                raise RotationStepError(f"the target refused the new password at {step}")
            await getattr(self.inner, _method(step))(ctx)
        finally:
            self.running -= 1

    async def create_secret(self, ctx: StepContext) -> None:
        await self._step("createSecret", ctx)

    async def set_secret(self, ctx: StepContext) -> None:
        await self._step("setSecret", ctx)

    async def test_secret(self, ctx: StepContext) -> None:
        await self._step("testSecret", ctx)

    async def finish_secret(self, ctx: StepContext) -> None:
        await self._step("finishSecret", ctx)


def _method(step: str) -> str:
    return {
        "createSecret": "create_secret",
        "setSecret": "set_secret",
        "testSecret": "test_secret",
        "finishSecret": "finish_secret",
    }[step]


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[JobQueue]:
    client = aioredis.from_url(redis_url)
    q = JobQueue(client, prefix=f"test:{uuid.uuid4().hex[:8]}")
    await q.ensure_group()
    yield q
    await client.aclose()


def job_for(token: str, rotator: str = "random-value", *, immediately: bool = True) -> store_pb2.RotationJob:
    return store_pb2.RotationJob(secret_arn=ARN, token=token, rotator=rotator, rotate_immediately=immediately)


def worker(
    name: str, queue: JobQueue, book: LeaseBook, api: VersionBook, gate: Gate | None = None, lease: float = 1
) -> Worker:
    extra: dict[str, Callable[[], Rotator]] = {"gated": lambda: gate} if gate is not None else {}
    registry = RotatorRegistry(functions=api, default_ca_pem=b"", extra=extra)
    return Worker(worker_id=name, queue=queue, control=book, registry=registry, api=api, lease_seconds=lease)


# -------------------------------------------------------------------------------------------- queue


async def test_jobs_travel_as_protobuf_through_the_consumer_group(queue: JobQueue) -> None:
    job = job_for("tok-1")
    await queue.enqueue(job)
    [delivery] = await queue.read("w1", block_ms=100)
    assert delivery.job == job
    assert await queue.pending_count() == 1
    await queue.ack(delivery.entry_id)
    assert await queue.pending_count() == 0
    assert await queue.read("w1", block_ms=50) == []


async def test_a_crashed_consumers_entry_is_reclaimed_after_it_idles(queue: JobQueue) -> None:
    await queue.enqueue(job_for("tok-2"))
    [first] = await queue.read("crashed", block_ms=100)  # never acknowledged
    assert await queue.reclaim("rescuer", min_idle_ms=60_000) == []
    await asyncio.sleep(0.15)
    [again] = await queue.reclaim("rescuer", min_idle_ms=100)
    assert again.entry_id == first.entry_id and again.job is not None and again.job.token == "tok-2"


async def test_flushall_loses_the_group_and_the_queue_recreates_it(queue: JobQueue, redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    await client.flushall()
    await client.aclose()
    assert await queue.read("w1", block_ms=50) == []  # NOGROUP → group recreated
    await queue.enqueue(job_for("tok-3"))
    [delivery] = await queue.read("w1", block_ms=100)
    assert delivery.job is not None and delivery.job.token == "tok-3"


async def test_dead_letters_keep_the_job_and_the_reason(queue: JobQueue) -> None:
    await queue.dead_letter(job_for("tok-4"), error="setSecret: refused")
    [letter] = await queue.dead_letters()
    assert letter.job is not None and letter.job.token == "tok-4"
    assert letter.error == "setSecret: refused"


# ------------------------------------------------------------------------------------------- workers


async def test_a_job_runs_the_four_steps_recorded_before_and_after(queue: JobQueue) -> None:
    book, api = LeaseBook(), VersionBook("old-value")
    api.placeholder("tok-ok")
    book.add(job_for("tok-ok"))
    await queue.enqueue(job_for("tok-ok"))
    w = worker("w1", queue, book, api)
    [delivery] = await queue.read(w.worker_id, block_ms=100)
    await w.handle(delivery)
    attempt = book.attempts["tok-ok"]
    assert attempt.status == "Succeeded"
    assert [(s, st) for _t, s, st, _w in attempt.steps] == [
        (step, status) for step in STEPS for status in ("started", "succeeded")
    ]
    assert api.version_with("AWSCURRENT") == "tok-ok" and api.version_with("AWSPREVIOUS") == "v1"
    assert api.values["tok-ok"] not in (None, "old-value")
    assert await queue.pending_count() == 0


async def test_rotate_immediately_false_runs_only_test_secret(queue: JobQueue) -> None:
    book, api = LeaseBook(), VersionBook("old-value")
    api.values["tmp"] = "old-value"
    api.stages["tmp"] = {"AWSPENDING"}
    book.add(job_for("tmp", immediately=False))
    outcome = await worker("w1", queue, book, api).run_job(job_for("tmp", immediately=False))
    assert outcome == "succeeded"
    assert [s for _t, s, st, _w in book.attempts["tmp"].steps if st == "started"] == ["testSecret"]
    assert api.version_with("AWSCURRENT") == "v1" and api.calls == []


async def test_failing_tries_end_failed_with_the_reason_and_a_dead_letter(queue: JobQueue) -> None:
    book, api = LeaseBook(max_tries=3), VersionBook("old-value")
    gate = Gate(RandomValueRotator(), fail_at="setSecret")
    api.placeholder("tok-bad")
    book.add(job_for("tok-bad", "gated"))
    w = worker("w1", queue, book, api, gate)
    outcomes = [await w.run_job(job_for("tok-bad", "gated")) for _ in range(3)]
    assert outcomes == ["retry", "retry", "failed"]
    attempt = book.attempts["tok-bad"]
    assert attempt.status == "Failed" and attempt.tries == 3
    assert attempt.error == "the target refused the new password at setSecret"
    assert (3, "setSecret", "failed", "w1") in attempt.steps
    assert api.version_with("AWSCURRENT") == "v1"  # untouched
    assert api.calls == ["put"]  # createSecret stored the value once; later tries found it
    [letter] = await queue.dead_letters()
    assert letter.job is not None and letter.job.token == "tok-bad" and "setSecret" in letter.error
    assert await w.run_job(job_for("tok-bad", "gated")) == "skipped"  # finished attempts never run again


async def test_two_workers_never_run_the_same_attempt_at_once(queue: JobQueue) -> None:
    book, api = LeaseBook(), VersionBook("old-value")
    gate = Gate(RandomValueRotator())
    gate.hold_at = "setSecret"
    api.placeholder("tok-dup")
    book.add(job_for("tok-dup", "gated"))
    w1 = worker("w1", queue, book, api, gate, lease=3)
    w2 = worker("w2", queue, book, api, gate, lease=3)
    first = asyncio.create_task(w1.run_job(job_for("tok-dup", "gated")))
    await asyncio.wait_for(gate.held.wait(), 5)
    assert await w2.run_job(job_for("tok-dup", "gated")) == "skipped"
    gate.release.set()
    assert await first == "succeeded"
    assert gate.max_running == 1
    assert {w for _t, _s, _st, w in book.attempts["tok-dup"].steps} == {"w1"}


async def test_a_crashed_worker_s_job_is_reclaimed_and_completes(queue: JobQueue) -> None:
    book, api = LeaseBook(), VersionBook("old-value")
    gate = Gate(RandomValueRotator())
    gate.hold_at = "testSecret"
    api.placeholder("tok-crash")
    book.add(job_for("tok-crash", "gated"))
    await queue.enqueue(job_for("tok-crash", "gated"))
    crashing = worker("crashing", queue, book, api, gate, lease=1)
    [delivery] = await queue.read(crashing.worker_id, block_ms=100)
    task = asyncio.create_task(crashing.run_job(delivery.job))  # type: ignore[arg-type]
    await asyncio.wait_for(gate.held.wait(), 5)
    task.cancel()  # the process dies: no outcome, no XACK, the lease runs out
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.hold_at = None
    rescuer = worker("rescuer", queue, book, api, gate, lease=1)
    runner = asyncio.create_task(rescuer.run())
    try:
        await eventually(
            lambda: book.attempts["tok-crash"].status == "Succeeded",
            timeout=10,
            interval=0.05,
            message="the rescuer to finish the crashed rotation",
        )
    finally:
        runner.cancel()
    attempt = book.attempts["tok-crash"]
    assert attempt.status == "Succeeded" and attempt.tries == 2
    assert (2, "finishSecret", "succeeded", "rescuer") in attempt.steps
    assert api.calls.count("put") == 1 and api.version_with("AWSCURRENT") == "tok-crash"
    assert await queue.pending_count() == 0

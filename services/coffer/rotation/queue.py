"""The Redis Streams adapter: rotation jobs (``RotationJob`` protobuf bytes) on ``<prefix>:jobs``, read by the
consumer group ``coffer-rotation-workers``; jobs whose rotation failed for good on ``<prefix>:dead``.

Redis only carries jobs: PostgreSQL (behind the store) is the truth about every rotation, so a lost stream
(FLUSHALL, a restart without persistence) costs nothing but a poll interval — the scheduler finds the
rotations again with ClaimDueRotations. The group is therefore (re)created whenever Redis says it is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from redis.exceptions import ResponseError

from coffer.api.store.v1 import store_pb2

GROUP = "coffer-rotation-workers"
JOB_FIELD = b"job"
ERROR_FIELD = b"error"
#: Streams are trimmed (approximately) to this many entries; jobs are cheap to find again in PostgreSQL.
MAX_STREAM_LENGTH = 10_000


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stream entry handed to a worker. ``job`` is None when the payload could not be decoded."""

    entry_id: str
    job: store_pb2.RotationJob | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    job: store_pb2.RotationJob | None
    error: str


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decode(fields: dict[Any, Any]) -> store_pb2.RotationJob | None:
    raw = fields.get(JOB_FIELD, fields.get("job"))
    if not isinstance(raw, bytes):
        return None
    job = store_pb2.RotationJob()
    try:
        job.ParseFromString(raw)
    except DecodeError:
        return None
    return job


class JobQueue:
    def __init__(self, redis: aioredis.Redis, *, prefix: str = "coffer:rotation", group: str = GROUP) -> None:
        self._redis = redis
        self.jobs_key = f"{prefix}:jobs"
        self.dead_key = f"{prefix}:dead"
        self.group = group

    async def ensure_group(self) -> None:
        """Create the stream and the consumer group if either is missing (idempotent)."""
        try:
            await self._redis.xgroup_create(self.jobs_key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, job: store_pb2.RotationJob) -> str:
        entry_id = await self._redis.xadd(
            self.jobs_key,
            {JOB_FIELD: job.SerializeToString()},
            maxlen=MAX_STREAM_LENGTH,
            approximate=True,
        )
        return _text(entry_id)

    async def read(self, consumer: str, *, count: int = 1, block_ms: int = 1000) -> list[Delivery]:
        """New entries for ``consumer`` (blocking up to ``block_ms``)."""
        try:
            reply = await self._redis.xreadgroup(
                self.group, consumer, {self.jobs_key: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        deliveries: list[Delivery] = []
        streams: list[Any] = list(reply or ())
        for item in streams:
            for entry_id, fields in item[1]:
                deliveries.append(Delivery(_text(entry_id), _decode(fields or {})))
        return deliveries

    async def reclaim(self, consumer: str, *, min_idle_ms: int, count: int = 10) -> list[Delivery]:
        """Entries another consumer read but never acknowledged for ``min_idle_ms`` (a crashed worker),
        now owned by ``consumer`` (XAUTOCLAIM)."""
        try:
            reply = await self._redis.xautoclaim(
                self.jobs_key, self.group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        entries = reply[1] if len(reply) > 1 else []
        return [
            Delivery(_text(entry_id), _decode(fields or {}))
            for entry_id, fields in entries
            if fields is not None  # deleted entries come back as (id, None)
        ]

    async def ack(self, entry_id: str) -> None:
        await self._redis.xack(self.jobs_key, self.group, entry_id)

    async def dead_letter(self, job: store_pb2.RotationJob, *, error: str) -> str:
        entry_id = await self._redis.xadd(
            self.dead_key,
            {JOB_FIELD: job.SerializeToString(), ERROR_FIELD: error.encode("utf-8")},
            maxlen=MAX_STREAM_LENGTH,
            approximate=True,
        )
        return _text(entry_id)

    async def dead_letters(self, *, count: int = 100) -> list[DeadLetter]:
        entries: list[Any] = list(await self._redis.xrange(self.dead_key, count=count) or ())
        letters: list[DeadLetter] = []
        for entry_id, fields in entries:
            values: dict[Any, Any] = dict(fields or {})
            letters.append(DeadLetter(_text(entry_id), _decode(values), _text(values.get(ERROR_FIELD, b""))))
        return letters

    async def depth(self) -> tuple[int, int]:
        """(jobs not yet acknowledged: delivered and pending, or not delivered yet; dead letters)."""
        waiting = 0
        try:
            groups = await self._redis.xinfo_groups(self.jobs_key)
        except ResponseError:  # no stream yet
            groups = []
        for group in groups or ():
            name = group.get("name") if isinstance(group, dict) else None
            if name in (self.group, self.group.encode()):
                waiting = int(group.get("pending") or 0) + int(group.get("lag") or 0)
        dead = int(await self._redis.xlen(self.dead_key) or 0)
        return waiting, dead

    async def pending_count(self) -> int:
        try:
            info = await self._redis.xpending(self.jobs_key, self.group)
        except ResponseError:
            return 0
        return int(info.get("pending", 0)) if isinstance(info, dict) else 0

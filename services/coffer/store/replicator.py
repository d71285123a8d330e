"""The replicator: ships a region's outbox to each peer region's store (``ReplicationService.ApplyChanges``).

One leader per region: the store process that holds a PostgreSQL advisory lock on a dedicated connection (not
the pool; closing it, or the process dying, releases the lock). Per peer, a cursor (last acknowledged outbox
id) in ``store.replication_peers``; batches go out in outbox order and contain only the changes of secrets
replicated to that peer. New versions' values are decrypted here through this region's KMS and cross the mTLS
link in plaintext; the peer re-encrypts them under its own key. A peer that fails keeps its batch (retried
with exponential back-off) and the affected secrets show ``Failed`` with the reason; when it answers again the
backlog drains in order. Replication lag (outbox commit -> acknowledged by the peer) is kept as a metric.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import structlog

from coffer import metrics
from coffer.api.replication.v1 import replication_pb2 as rpb
from coffer.api.replication.v1 import replication_pb2_grpc
from coffer.clock import Clock
from coffer.core import errors
from coffer.leader import close_connection
from coffer.loops import run_forever, sleep_or_wake
from coffer.metrics import set_leader
from coffer.store.app import StoreApp
from coffer.store.repository import CHANGED_CHANNEL, ReplicationRepository
from coffer.store.snapshot import (
    REMOVE,
    UPSERT,
    ReplicatedVersion,
    SecretChange,
    SecretSnapshot,
    to_proto,
)
from coffer.store.sql.replication import Ack, OutboxRow

log = structlog.get_logger("coffer.store.replicator")

LEADER_LOCK = 0x636F6666_6572_05  # "coffer" + replicator leader
#: The replicator's name in ``coffer_leader{job}``.
REPLICATOR_JOB = "store.replicator"


class LagStats:
    """The last ``size`` replication lags in seconds (commit at the primary -> acknowledged by the peer)."""

    def __init__(self, size: int = 10_000) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(max(0.0, seconds))

    def __len__(self) -> int:
        return len(self._samples)

    def reset(self) -> None:
        self._samples.clear()

    def percentile(self, p: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))  # nearest rank
        return ordered[index]

    def summary(self) -> dict[str, float | int | None]:
        return {"count": len(self), "p50_s": self.percentile(50), "p99_s": self.percentile(99)}


@dataclass
class PeerLink:
    region: str
    stub: replication_pb2_grpc.ReplicationServiceStub
    channel: grpc.aio.Channel
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = field(default=None)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def outbox_change(row: OutboxRow, *, region: str) -> SecretChange:
    """The change one outbox row records (values are added by the replicator)."""
    return SecretChange(
        outbox_id=row.id,
        seq=row.change_seq,
        kind=REMOVE if row.removed else UPSERT,
        primary_arn=row.secret_arn,
        primary_region=region,
        snapshot=SecretSnapshot.from_outbox(row.payload["snapshot"]),
        replica_kms_key_id=None if row.removed else row.kms_key_id,
        force_overwrite=False if row.removed else row.force_overwrite,
    )


def build_change(row: OutboxRow, *, region: str) -> rpb.SecretChange:
    """The metadata of one outbox row as a SecretChange message (values are added by the caller)."""
    return to_proto(outbox_change(row, region=region))


class Replicator:
    def __init__(
        self,
        *,
        dsn: str,
        repo: ReplicationRepository,
        store: StoreApp,
        clock: Clock,
        region: str,
        peers: Sequence[PeerLink],
        interval: float,
        batch_size: int = 100,
        call_timeout: float = 10.0,
        backoff_base: float = 0.25,
        backoff_max: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._repo = repo
        self._sealer = store.sealer
        self._clock = clock
        self._region = region
        self._peers = list(peers)
        self._interval = interval
        self._batch = batch_size
        self._timeout = call_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._wake = asyncio.Event()
        self.lag = LagStats()
        self.is_leader = False

    @property
    def peers(self) -> list[PeerLink]:
        return self._peers

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Run forever: become the region's leader, then ship; on a lost connection (logged with its
        traceback) start over after ``interval``."""
        set_leader(REPLICATOR_JOB, False)
        await run_forever(
            self._lead_session, name="replication.replicator", interval=self._interval, logger=log
        )

    async def _lead_session(self) -> None:
        """One leader session on a dedicated connection; ends only by raising (the connection was lost)."""
        conn = await asyncpg.connect(self._dsn)
        try:
            await self._lead(conn)
        finally:
            self.is_leader = False
            set_leader(REPLICATOR_JOB, False)
            await close_connection(conn)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        # Another store process may hold the lock: poll for it (no event can tell us it was released).
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):  # noqa: ASYNC110
            await asyncio.sleep(self._interval)
        self.is_leader = True
        set_leader(REPLICATOR_JOB, True)
        log.info("replication.leader", region=self._region, peers=[p.region for p in self._peers])
        await conn.add_listener(CHANGED_CHANNEL, self._on_notify)
        while True:
            self._wake.clear()
            more = False
            for peer in self._peers:
                more = await self.ship_once(peer) or more
            if more:
                continue
            timeout = self._interval
            waiting = [p.retry_at - time.monotonic() for p in self._peers if p.retry_at]
            if waiting:
                timeout = max(0.01, min(timeout, *waiting))
            await sleep_or_wake(timeout, self._wake)
            await conn.fetchval("SELECT 1")  # the leader connection (and so the lock) is still there

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _values(self, row: OutboxRow) -> tuple[ReplicatedVersion, ...]:
        """The versions ``row``'s change created (every version for a seed), with their values."""
        snap_versions: list[str] = list(row.payload["snapshot"].get("versions") or [])
        if row.seed:
            wanted = snap_versions
        elif row.version_id is not None and row.version_id in snap_versions:
            wanted = [row.version_id]
        else:
            wanted = []
        if not wanted:
            return ()
        found = await self._repo.versions(row.secret_id, wanted)
        out: list[ReplicatedVersion] = []
        for vid in wanted:
            ver = found.get(vid)
            if ver is None:
                continue  # pruned since: the snapshot of a later change drops it at the replica too
            value = None
            if ver.stored is not None:
                value = await self._sealer.open(arn=row.secret_arn, stored=ver.stored)
            out.append(ReplicatedVersion(version_id=vid, created_date=ver.created_at, value=value))
        return tuple(out)

    async def ship_once(self, peer: PeerLink) -> bool:
        """Ship one batch to ``peer``; True when more is waiting."""
        if peer.retry_at and time.monotonic() < peer.retry_at:
            return False
        cursor = await self._repo.cursor(peer.region)
        rows, scanned = await self._repo.pending(peer.region, after=cursor, limit=self._batch)
        if not rows:
            metrics.REPLICATION_BACKLOG.labels("store", peer.region).set(0)
            metrics.REPLICATION_LAG.labels("store", peer.region).set(0)
            if scanned > cursor:
                await self._repo.advance(peer.region, scanned, now=self._clock.now())
            return False
        t0 = time.perf_counter()
        changes = [outbox_change(row, region=self._region) for row in rows]
        unreadable: dict[int, str] = {}
        new_versions: dict[int, tuple[ReplicatedVersion, ...]] = {}

        async def values(row: OutboxRow) -> None:
            try:
                new_versions[row.id] = await self._values(row)
            except (errors.Unavailable, errors.Internal):
                raise
            except errors.CofferError as exc:  # e.g. its KMS key is disabled: only this secret stops
                unreadable[row.secret_id] = (
                    f"Secrets Manager can't read version {row.version_id or '(seed)'} of the secret in "
                    f"{self._region} to replicate it: {exc.message}"
                )

        try:
            # Decrypt the batch's new values concurrently (each is its own KMS call).
            await asyncio.gather(*(values(row) for row in rows if not row.removed))
            sent = [
                (row, to_proto(ch.with_versions(new_versions.get(row.id, ()))))
                for row, ch in zip(rows, changes, strict=True)
                if row.secret_id not in unreadable
            ]
            t1 = time.perf_counter()
            results: list[rpb.ApplyResult] = []
            if sent:
                response = await peer.stub.ApplyChanges(
                    rpb.ApplyChangesRequest(source_region=self._region, changes=[ch for _, ch in sent]),
                    timeout=self._timeout,
                )
                results = list(response.results)
        except errors.CofferError as exc:
            await self._failed(peer, rows, exc)
            return False
        if len(results) != len(sent):
            await self._failed(
                peer, rows, errors.Internal(f"Region {peer.region} answered {len(results)} results.")
            )
            return False
        by_row = {row.id: result for (row, _), result in zip(sent, results, strict=True)}
        t2 = time.perf_counter()
        acked_at = datetime.now(UTC)
        acks: list[Ack] = []
        for row in rows:
            result = by_row.get(row.id) or rpb.ApplyResult(
                primary_arn=row.secret_arn,
                seq=row.change_seq,
                status="failed",
                message=unreadable.get(row.secret_id, "not sent"),
            )
            ok = result.status in ("applied", "duplicate")
            acks.append(
                Ack(
                    secret_id=row.secret_id,
                    seq=row.change_seq,
                    ok=ok,
                    message=result.message if result.HasField("message") else None,
                )
            )
            if result.status == "applied":
                self.lag.add((acked_at - row.committed_at).total_seconds())
            elif not ok:
                log.warning(
                    "replication.refused",
                    peer=peer.region,
                    arn=row.secret_arn,
                    seq=row.change_seq,
                    error=result.message,
                )
        await self._repo.acknowledge(peer.region, acks, cursor=scanned, now=self._clock.now())
        if peer.failures:
            log.info("replication.peer_back", peer=peer.region, after_failures=peer.failures)
        peer.failures, peer.retry_at, peer.last_error = 0, 0.0, None
        lags = [(acked_at - r.committed_at).total_seconds() for r in rows]
        full = len(rows) >= self._batch  # a full batch: more is waiting (at least a batch's worth, known)
        metrics.REPLICATION_BACKLOG.labels("store", peer.region).set(self._batch if full else 0)
        metrics.REPLICATION_LAG.labels("store", peer.region).set(max(lags) if full else 0)
        log.info(
            "replication.shipped",
            peer=peer.region,
            changes=len(rows),
            cursor=scanned,
            build_ms=round((t1 - t0) * 1000, 1),
            apply_ms=round((t2 - t1) * 1000, 1),
            ack_ms=round((time.perf_counter() - t2) * 1000, 1),
            lag_max_ms=round(max(lags) * 1000, 1),
            lag_p50_ms=_ms(self.lag.percentile(50)),
            lag_p99_ms=_ms(self.lag.percentile(99)),
            lag_samples=len(self.lag),
        )
        return len(rows) >= self._batch

    async def _failed(self, peer: PeerLink, rows: Sequence[OutboxRow], exc: errors.CofferError) -> None:
        peer.failures += 1
        delay = min(self._backoff_max, self._backoff_base * 2 ** (peer.failures - 1))
        peer.retry_at = time.monotonic() + delay
        reason = exc.message or type(exc).__name__
        peer.last_error = reason  # the whole detail, for the log below
        if isinstance(exc, errors.Unavailable):
            # The detail names addresses inside the deployment: callers of DescribeSecret get its gist only.
            late = "DEADLINE_EXCEEDED" in reason or "Deadline" in reason
            public = "its store did not answer in time" if late else "its store cannot be reached"
        else:
            public = reason
        if rows:  # what waits for this peer: at least this batch, the oldest of it this old
            metrics.REPLICATION_BACKLOG.labels("store", peer.region).set(len(rows))
            oldest = min(r.committed_at for r in rows)
            metrics.REPLICATION_LAG.labels("store", peer.region).set(
                (datetime.now(UTC) - oldest).total_seconds()
            )
        message = f"Region {peer.region} is unreachable or failed: {public} (retrying)"
        await self._repo.mark_unreachable(
            peer.region,
            sorted({r.secret_id for r in rows if not r.removed}),
            message=message,
            now=self._clock.now(),
        )
        log.warning(
            "replication.peer_failed",
            peer=peer.region,
            failures=peer.failures,
            retry_in_s=round(delay, 3),
            error=reason,
        )

    async def detach(self, primary_region: str, primary_arn: str, replica_region: str) -> None:
        """Tell the primary region its replica here was promoted (StopReplicationToReplica)."""
        for peer in self._peers:
            if peer.region == primary_region:
                await peer.stub.DetachReplica(
                    rpb.DetachReplicaRequest(primary_arn=primary_arn, replica_region=replica_region),
                    timeout=self._timeout,
                )
                return
        raise errors.Unavailable(f"Region {primary_region} is not a configured peer of this deployment.")

    async def aclose(self) -> None:
        for peer in self._peers:
            await peer.channel.close()

"""Cross-region replication use cases.

Primary side (public API): ReplicateSecretToRegions and RemoveRegionsFromReplication record the replica
regions (``store.replication_status``) and an outbox change in the same transaction; the replicator
(``replicator.py``) ships the changes. Replica side: :meth:`ReplicationApp.apply_changes` applies the
changes a peer region's replicator sends, idempotently (versions by version id, everything else by the
per-secret change sequence), re-encrypting every value under this region's KMS; StopReplicationToReplica
promotes a replica and tells its primary (DetachReplica). Protobuf never reaches this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from coffer.clock import Clock
from coffer.core import changes, errors
from coffer.core.arn import SecretRef
from coffer.core.model import (
    AWSCURRENT,
    AWSPENDING,
    AWSPREVIOUS,
    ReplicationStatus,
    SecretValue,
)
from coffer.core.validation import Checker
from coffer.store.app import (
    REPLICA_MESSAGE,
    StoreApp,
    add_replica_regions,
    check_replica_regions,
    check_writable,
)
from coffer.store.records import SealedValue
from coffer.store.repository import ReplicationRepository, StoreTx
from coffer.store.snapshot import REMOVE, UPSERT, SecretChange
from coffer.store.sql.replication import ReplicaHead

log = structlog.get_logger("coffer.store.replication")

_PRESEAL_CONCURRENCY = 16
#: Secrets applied at once (each holds a pooled connection while it applies).
_APPLY_CONCURRENCY = 4
_REENCRYPTED_LABELS = (AWSCURRENT, AWSPENDING, AWSPREVIOUS)
NAME_CLASH_MESSAGE = "Secret with this name already exists in this region"
OVERWRITE_REFUSED_MESSAGE = (
    "Secret with this name already exists in this region and is not a replica of this primary region's "
    "secret: ForceOverwriteReplicaSecret may not replace it (an operator must mark it overwritable)"
)

#: (primary region, primary ARN, this region) -> tell the primary its replica here was promoted.
DetachNotifier = Callable[[str, str, str], Awaitable[None]]


def replica_arn_of(arn: str, region: str) -> str:
    """The same ARN in another region (a replica's ARN is its primary's with the region replaced)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise errors.InvalidParameter(f"{arn} is not a secret ARN.")
    parts[3] = region
    return ":".join(parts)


def may_overwrite(clash: ReplicaHead, *, replica_arn: str, primary_region: str) -> bool:
    """Whether a peer's force-overwrite may replace ``clash``, a local secret holding the replica's name under
    another ARN: only an older replica of the same primary lineage (a replica of that same region's secret of
    that name, in the same partition and account: the primary was deleted and created again), or a secret an
    operator marked ``replication_overwritable``. Never a local primary or another region's replica."""
    if clash.overwritable:
        return True
    same_lineage = clash.arn.rsplit("-", 1)[0] == replica_arn.rsplit("-", 1)[0]
    return clash.is_replica and clash.primary_region == primary_region and same_lineage


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    primary_arn: str
    seq: int
    #: applied | duplicate | failed
    status: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicationResult:
    arn: str
    statuses: tuple[ReplicationStatus, ...]


class ReplicationApp:
    def __init__(
        self,
        *,
        repo: ReplicationRepository,
        store: StoreApp,
        clock: Clock,
        notify_detach: DetachNotifier | None = None,
    ) -> None:
        self._repo = repo
        self._store = store
        self._sealer = store.sealer
        self._config = store.config
        self._clock = clock
        self._notify_detach = notify_detach

    def _ref_of(self, secret_id: str) -> SecretRef:
        return self._store.ref(secret_id)

    async def _statuses(self, arn: str) -> tuple[ReplicationStatus, ...]:
        secret = await self._store.describe_secret(secret_id=arn)
        return secret.replication_status

    # --- public API (primary region) -------------------------------------------------------------------

    async def replicate_secret_to_regions(
        self, *, secret_id: str, regions: Sequence[tuple[str, str | None]], force_overwrite: bool
    ) -> ReplicationResult:
        c = Checker()
        c.secret_id(secret_id)
        for i, (region, key) in enumerate(regions, start=1):
            c.region(region, f"addReplicaRegions.{i}.member.region")
            c.kms_key_id(key)
        c.done()
        if not regions:
            raise errors.InvalidParameter("AddReplicaRegions must name at least one region.")
        check_replica_regions(self._config, [r for r, _ in regions])
        ref = self._ref_of(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            check_writable(locked)
            since = await tx.change_seq(locked.id) + 1
            await add_replica_regions(
                tx, self._config, locked.id, regions, since_seq=since, force=force_overwrite, now=now
            )
            await tx.record_change(
                locked.id,
                event="ReplicateSecretToRegions",
                now=now,
                payload={"regions": [r for r, _ in regions], "force": force_overwrite},
            )
        log.info("replication.regions_added", arn=locked.arn, regions=[r for r, _ in regions])
        return ReplicationResult(arn=locked.arn, statuses=await self._statuses(locked.arn))

    async def remove_regions_from_replication(
        self, *, secret_id: str, regions: Sequence[str]
    ) -> ReplicationResult:
        c = Checker()
        c.secret_id(secret_id)
        for i, region in enumerate(regions, start=1):
            c.region(region, f"removeReplicaRegions.{i}.member")
        c.done()
        if not regions:
            raise errors.InvalidParameter("RemoveReplicaRegions must name at least one region.")
        ref = self._ref_of(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            if locked.is_replica:
                raise errors.InvalidParameter(REPLICA_MESSAGE)
            unknown = sorted(set(regions) - set(locked.replica_regions))
            if unknown:
                raise errors.InvalidParameter(
                    f"The secret {locked.arn} has no replica in {', '.join(unknown)}."
                )
            await tx.drop_replica_status(locked.id, regions)
            await tx.record_change(
                locked.id,
                event="RemoveRegionsFromReplication",
                now=now,
                payload={"removed": sorted(set(regions))},
            )
        log.info("replication.regions_removed", arn=locked.arn, regions=sorted(set(regions)))
        return ReplicationResult(arn=locked.arn, statuses=await self._statuses(locked.arn))

    # --- public API (replica region) -------------------------------------------------------------------

    async def stop_replication_to_replica(self, *, secret_id: str) -> str:
        c = Checker()
        c.secret_id(secret_id)
        c.done()
        ref = self._ref_of(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            if not locked.is_replica:
                raise errors.InvalidRequest(
                    f"The secret {locked.arn} is not a replica: StopReplicationToReplica must be called in "
                    "a replica secret's region."
                )
            head = await tx.head_by_arn(locked.arn)
            assert head is not None
            primary_region = head.primary_region or ""
            await tx.promote(locked.id)
            await tx.record_change(
                locked.id, event="StopReplicationToReplica", now=now, payload={"primary": primary_region}
            )
        log.info("replication.replica_promoted", arn=locked.arn, primary_region=primary_region)
        if self._notify_detach is not None and primary_region:
            primary_arn = replica_arn_of(locked.arn, primary_region)
            try:
                await self._notify_detach(primary_region, primary_arn, self._config.region)
            except errors.CofferError as exc:
                # Promoted anyway; the primary marks this region Failed when its next change is refused.
                log.warning(
                    "replication.detach_unreachable",
                    arn=locked.arn,
                    primary_region=primary_region,
                    error=exc.message,
                )
        return locked.arn

    # --- ReplicationService (called by a peer region's replicator) -------------------------------------

    async def detach_replica(self, *, primary_arn: str, replica_region: str, caller_region: str) -> None:
        if replica_region != caller_region:
            raise errors.AccessDenied(
                f"Region {caller_region} may not detach the replica of region {replica_region}."
            )
        found = await self._repo.detach(primary_arn, replica_region)
        log.info("replication.replica_detached", arn=primary_arn, region=replica_region, known=found)

    async def apply_changes(
        self, *, source_region: str, caller_region: str, changes: Sequence[SecretChange]
    ) -> list[ApplyOutcome]:
        if source_region != caller_region:
            raise errors.AccessDenied(
                f"Replicator of region {caller_region} may not send changes for region {source_region}."
            )
        sealed = await self._preseal(changes)
        out: list[ApplyOutcome | None] = [None] * len(changes)

        async def one(change: SecretChange) -> ApplyOutcome:
            if change.primary_region != source_region:
                return ApplyOutcome(
                    primary_arn=change.primary_arn,
                    seq=change.seq,
                    status="failed",
                    message=f"The change's primary region {change.primary_region} is not {source_region}.",
                )
            try:
                return await self._apply_one(change, sealed)
            except (errors.Unavailable, errors.Internal):
                raise  # the whole batch is retried; what was applied is skipped next time (by seq)
            except errors.CofferError as exc:
                log.warning(
                    "replication.apply_refused", arn=change.primary_arn, seq=change.seq, error=exc.message
                )
                return ApplyOutcome(
                    primary_arn=change.primary_arn, seq=change.seq, status="failed", message=exc.message
                )

        # Changes of one name apply in order, one after the other; different names are independent and
        # apply concurrently (a name, not an ARN: a re-created primary replaces the old replica by name).
        by_name: dict[str, list[int]] = {}
        for index, change in enumerate(changes):
            by_name.setdefault(change.name, []).append(index)
        gate = asyncio.Semaphore(_APPLY_CONCURRENCY)

        async def in_order(indexes: list[int]) -> None:
            async with gate:
                for index in indexes:
                    out[index] = await one(changes[index])

        await asyncio.gather(*(in_order(indexes) for indexes in by_name.values()))
        return [o for o in out if o is not None]

    async def _resolved(self, kms_key_id: str | None) -> tuple[str | None, str | None]:
        return (None, None) if not kms_key_id else await self._store.resolve_key(kms_key_id)

    async def _preseal(self, changes: Sequence[SecretChange]) -> dict[tuple[str, str], SealedValue]:
        """Encrypt the batch's new values under this region's key concurrently, before the per-change
        transactions; a version the replica already has just wastes its data key. Failures are
        left to the per-change path (which reports them per change)."""
        region = self._config.region
        keys: dict[str | None, tuple[str | None, str | None]] = {}
        jobs: list[tuple[tuple[str, str], str | None, SecretValue]] = []
        for ch in changes:
            if ch.kind != UPSERT or ch.primary_region == region:
                continue
            kms_key = ch.replica_kms_key_id or None
            if kms_key not in keys:
                try:
                    keys[kms_key] = await self._resolved(kms_key)
                except errors.CofferError:
                    continue
            arn = replica_arn_of(ch.primary_arn, region)
            for nv in ch.new_versions:
                if nv.value is not None:
                    jobs.append(((arn, nv.version_id), keys[kms_key][0], nv.value))
        gate = asyncio.Semaphore(_PRESEAL_CONCURRENCY)

        async def seal(job: tuple[tuple[str, str], str | None, SecretValue]) -> SealedValue | None:
            (arn, vid), key_id, value = job
            async with gate:
                try:
                    return await self._sealer.seal(arn=arn, version_id=vid, key_id=key_id, value=value)
                except errors.CofferError:
                    return None

        results = await asyncio.gather(*(seal(job) for job in jobs))
        return {job[0]: res for job, res in zip(jobs, results, strict=True) if res is not None}

    async def _apply_one(
        self, ch: SecretChange, presealed: dict[tuple[str, str], SealedValue]
    ) -> ApplyOutcome:
        region = self._config.region
        replica_arn = replica_arn_of(ch.primary_arn, region)

        def outcome(status: str, message: str | None = None) -> ApplyOutcome:
            return ApplyOutcome(primary_arn=ch.primary_arn, seq=ch.seq, status=status, message=message)

        key_id: str | None = None
        key_arn: str | None = None
        if ch.kind == UPSERT:
            key_id, key_arn = await self._resolved(ch.replica_kms_key_id)
        async with self._repo.transaction() as tx:
            head = await tx.head_by_arn(replica_arn)
            if ch.kind == REMOVE:
                if head is not None and head.is_replica:
                    await tx.record_event(
                        head.id,
                        kind=changes.DELETED,
                        version_id=None,
                        detail=f"replica removed by its primary region {ch.primary_region}",
                        now=self._clock.now(),
                    )
                    await tx.delete_secret(head.id)
                    log.info("replication.replica_removed", arn=replica_arn)
                return outcome("applied")
            if ch.kind != UPSERT:
                return outcome("failed", f"Unknown change kind {ch.kind!r}.")
            if head is None:
                clash = await tx.head_by_name(ch.name, replica_arn.split(":")[4])
                if clash is not None:
                    if not ch.force_overwrite:
                        return outcome("failed", NAME_CLASH_MESSAGE)
                    if not may_overwrite(clash, replica_arn=replica_arn, primary_region=ch.primary_region):
                        log.warning("replication.overwrite_refused", arn=clash.arn, replica_arn=replica_arn)
                        return outcome("failed", OVERWRITE_REFUSED_MESSAGE)
                    await tx.delete_secret(clash.id)
                    log.info("replication.overwrote_secret", arn=clash.arn, replica_arn=replica_arn)
                secret_id = await tx.insert_replica(
                    arn=replica_arn,
                    name=ch.name,
                    region=region,
                    primary_region=ch.primary_region,
                    created_at=ch.snapshot.created_at or self._clock.now(),
                )
            else:
                if not head.is_replica:
                    return outcome(
                        "failed",
                        f"The secret {replica_arn} in {region} is no longer a replica "
                        "(StopReplicationToReplica was called there).",
                    )
                if head.change_seq >= ch.seq:
                    return outcome("duplicate")
                secret_id = head.id
            sealed_now = await self._apply_state(
                tx, secret_id, replica_arn, ch, key_id=key_id, key_arn=key_arn, presealed=presealed
            )
            if head is not None and head.kms_key_id != key_id:
                await self._reencrypt(tx, secret_id, replica_arn, key_id=key_id, fresh=sealed_now)
            # This region's watchers see the replicated change too (the stream's lock last, as always).
            current = ch.snapshot.labels.get(AWSCURRENT)
            newest = current if current in sealed_now else min(sealed_now, default=None)
            await tx.record_event(
                secret_id,
                kind=changes.VERSION_CREATED if newest is not None else changes.METADATA_CHANGED,
                version_id=newest,
                detail=f"replicated from {ch.primary_region}",
                now=self._clock.now(),
            )
        return outcome("applied")

    async def _reencrypt(
        self,
        tx: StoreTx,
        secret_id: int,
        replica_arn: str,
        *,
        key_id: str | None,
        fresh: set[str],
    ) -> None:
        """The replica's key changed (the region was added again with another KmsKeyId): re-encrypt the
        versions labelled AWSCURRENT/AWSPENDING/AWSPREVIOUS under the new key, as UpdateSecret does."""
        labels = await tx.labels(secret_id)
        targets = sorted({labels[lb] for lb in _REENCRYPTED_LABELS if lb in labels} - fresh)
        for stored in await tx.stored_values(secret_id, targets):
            sealed = await self._sealer.reseal(arn=replica_arn, stored=stored, key_id=key_id)
            await tx.store_value(secret_id, stored.version_id, sealed)
        log.info("replication.replica_reencrypted", arn=replica_arn, versions=len(targets))

    async def _apply_state(
        self,
        tx: StoreTx,
        secret_id: int,
        replica_arn: str,
        ch: SecretChange,
        *,
        key_id: str | None,
        key_arn: str | None,
        presealed: dict[tuple[str, str], SealedValue],
    ) -> set[str]:
        """Apply the change's state; returns the versions whose values were encrypted now."""
        sealed_now: set[str] = set()
        states = await tx.version_states(secret_id)
        now = self._clock.now()
        for nv in ch.new_versions:
            have = states.get(nv.version_id)
            if have is True or (have is False and nv.value is None):
                continue  # already here: versions are keyed by id, never applied twice
            created = nv.created_date or now
            if nv.value is None:
                await tx.insert_placeholder(secret_id, nv.version_id, now=created)
                states[nv.version_id] = False
                continue
            sealed = presealed.get((replica_arn, nv.version_id)) or await self._sealer.seal(
                arn=replica_arn, version_id=nv.version_id, key_id=key_id, value=nv.value
            )
            if have is False:
                await tx.store_value(secret_id, nv.version_id, sealed)
            else:
                await tx.insert_version(secret_id, nv.version_id, sealed, now=created)
            states[nv.version_id] = True
            sealed_now.add(nv.version_id)
        keep = set(ch.snapshot.version_ids)
        doomed = [vid for vid in states if vid not in keep]
        old_labels = await tx.labels(secret_id)
        new_labels = {
            label: vid for label, vid in ch.snapshot.labels.items() if vid in states and vid not in doomed
        }
        await tx.replace_labels(secret_id, old_labels, new_labels)
        await tx.delete_versions(secret_id, doomed)
        await tx.update_replica(
            secret_id, seq=ch.seq, snapshot=ch.snapshot, kms_key_id=key_id, kms_key_arn=key_arn
        )
        return sealed_now

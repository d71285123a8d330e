"""The store's use cases: every Secrets Manager operation the store serves, over Protocol-typed collaborators
(a repository of transactions, a KMS, a clock). All input validation happens here (the gateway forwards
requests unchanged). Protobuf never reaches this module; values travel as :class:`SecretValue`.

Every write is one transaction: lock the secret row, check the token, get a data key, encrypt, insert the
version, move labels, prune, write the outbox row, commit (the repository NOTIFYs). A failure anywhere rolls
all of it back.
"""

from __future__ import annotations

import asyncio
import secrets as random_source
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import structlog

from coffer.clock import Clock, SystemClock
from coffer.core import errors, listing, schedule
from coffer.core import versions as v
from coffer.core.arn import SecretRef, make_arn, new_suffix, partial_arn, resolve_secret_id
from coffer.core.authorize import authorize
from coffer.core.listing import Listable, ListFilter
from coffer.core.model import AWSCURRENT, AWSPENDING, AWSPREVIOUS, Secret, SecretValue, SecretVersion, Tag
from coffer.core.policy import ValidationResult, check_resource_policy_for_put, validate_resource_policy
from coffer.core.principal import Principal
from coffer.core.secret_keys import RequestParams, SecretFacts, global_keys, request_keys
from coffer.core.validation import (
    DEFAULT_RECOVERY_DAYS,
    MARKED_FOR_DELETION_MESSAGE,
    MAX_BATCH_IDS,
    MAX_BATCH_RESULTS,
    MAX_LIST_RESULTS,
    NEED_VALUE_MESSAGE,
    SORT_BY,
    SORT_ORDERS,
    Checker,
    check_one_value,
    check_recovery,
    check_token_present,
    require_filter_parts,
)
from coffer.rpc.context import current_caller, source_ip_var
from coffer.store.authz import KeyPolicyCheck, StoreAuthz
from coffer.store.kms_client import key_state_failure
from coffer.store.records import (
    KeyInfo,
    LockedSecret,
    NameTaken,
    RotationConfig,
    SealedValue,
    StoredValue,
    ValueRow,
)
from coffer.store.sealer import DataKeys, ValueSealer

log = structlog.get_logger("coffer.store")

REPLICA_MESSAGE = "Operation not permitted on a replica secret. Call must be made in primary secret's region."
MAX_TAGS = 50
DEFAULT_BATCH_RESULTS = 20
_REENCRYPTED_LABELS = (AWSCURRENT, AWSPENDING, AWSPREVIOUS)


# --- collaborators ------------------------------------------------------------------------------------------


class Kms(DataKeys, Protocol):
    async def describe_key(self, key_id: str) -> KeyInfo: ...


class Tx(Protocol):
    async def lock(self, ref: SecretRef) -> LockedSecret | None: ...

    async def lock_existing(self, ref: SecretRef) -> LockedSecret: ...

    async def lock_by_name(self, name: str, account: str) -> LockedSecret | None: ...

    async def insert_secret(
        self,
        *,
        arn: str,
        name: str,
        region: str,
        type: str | None,
        description: str | None,
        kms_key_id: str | None,
        kms_key_arn: str | None,
        tags: Sequence[Tag] | None,
        now: datetime,
    ) -> int: ...

    async def update_secret(self, secret_id: int, changes: dict[str, Any]) -> None: ...

    async def stored_values(self, secret_id: int, version_ids: Sequence[str]) -> list[StoredValue]: ...

    async def insert_version(
        self, secret_id: int, version_id: str, sealed: SealedValue, *, now: datetime
    ) -> None: ...

    async def store_value(self, secret_id: int, version_id: str, sealed: SealedValue) -> None: ...

    async def replace_labels(self, secret_id: int, old: dict[str, str], new: dict[str, str]) -> None: ...

    async def delete_versions(self, secret_id: int, version_ids: Sequence[str]) -> None: ...

    async def delete_secret(self, secret_id: int) -> None: ...

    async def record_change(
        self,
        secret_id: int,
        *,
        event: str,
        now: datetime,
        version_id: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None: ...

    async def put_replica_status(
        self,
        secret_id: int,
        *,
        region: str,
        kms_key_id: str | None,
        since_seq: int,
        force: bool,
        status: str,
        message: str | None,
        blocked: bool,
        now: datetime,
    ) -> None: ...

    async def rotation_config(self, secret_id: int) -> RotationConfig: ...

    async def update_rotation(self, secret_id: int, changes: dict[str, Any]) -> None: ...


class Repository(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    async def fetch_value(
        self, ref: SecretRef, *, version_id: str | None, stage: str | None, today: date, touch: bool = True
    ) -> ValueRow | None: ...

    async def touch_accessed(self, secret_id: int, version_id: str, today: date) -> None: ...

    async def describe(self, ref: SecretRef) -> Secret | None: ...

    async def secret_facts(self, ref: SecretRef) -> SecretFacts | None: ...

    async def secrets_by_ids(self, ids: Sequence[int]) -> dict[int, Secret]: ...

    async def list_page(
        self,
        filters: Sequence[ListFilter],
        cursor: listing.Cursor,
        *,
        include_deleted: bool,
        limit: int,
        account: str | None = None,
    ) -> list[Listable]: ...

    async def versions(self, ref: SecretRef) -> tuple[str, str, list[SecretVersion]] | None: ...

    async def purge_due(self, now: datetime) -> list[str]: ...


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreConfig:
    partition: str
    region: str
    account: str
    #: The regions this deployment replicates with (COFFER_PEERS).
    peer_regions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CreateResult:
    arn: str
    name: str
    version_id: str | None


@dataclass(frozen=True, slots=True)
class ValueResult:
    arn: str
    name: str
    version_id: str
    value: SecretValue
    stages: tuple[str, ...]
    created_date: datetime


@dataclass(frozen=True, slots=True)
class BatchError:
    secret_id: str
    error_code: str
    message: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    values: list[ValueResult]
    errors: list[BatchError]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class PutResult:
    arn: str
    name: str
    version_id: str
    stages: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpdateResult:
    arn: str
    name: str
    version_id: str | None


@dataclass(frozen=True, slots=True)
class NameArn:
    arn: str
    name: str


@dataclass(frozen=True, slots=True)
class DeleteResult:
    arn: str
    name: str
    deletion_date: datetime


@dataclass(frozen=True, slots=True)
class ListResult:
    secrets: list[Secret]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class VersionsResult:
    arn: str
    name: str
    versions: list[SecretVersion]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class _ResolvedKey:
    """The key a create/update asked for: ``key_id`` None means the default key."""

    key_id: str | None
    key_arn: str | None = None


def _value_of(secret_string: str | None, secret_binary: bytes | None) -> SecretValue | None:
    if secret_string is not None:
        return SecretValue.of_string(secret_string)
    if secret_binary is not None:
        return SecretValue.of_binary(secret_binary)
    return None


def check_writable(locked: LockedSecret) -> None:
    if locked.deleted:
        raise errors.InvalidRequest(MARKED_FOR_DELETION_MESSAGE)
    if locked.is_replica:
        raise errors.InvalidParameter(REPLICA_MESSAGE)


def _check_tags(tags: Sequence[Tag]) -> None:
    for tag in tags:
        if tag.key.lower().startswith("aws:"):
            raise errors.InvalidParameter(
                f"The tag key {tag.key} is not allowed: tag keys beginning with aws: are reserved for AWS "
                "use."
            )
    if len(tags) > MAX_TAGS:
        raise errors.InvalidParameter(
            f"A secret can have at most {MAX_TAGS} tags; this request would leave {len(tags)}."
        )


def _merge_tags(existing: Sequence[Tag] | None, incoming: Sequence[Tag]) -> tuple[Tag, ...]:
    merged: dict[str, str] = {t.key: t.value for t in existing or ()}
    for tag in incoming:
        merged[tag.key] = tag.value
    return tuple(Tag(key=k, value=val) for k, val in merged.items())


INVALID_REPLICA_REGION = "Invalid replica region."


def check_replica_regions(config: StoreConfig, regions: Sequence[str]) -> None:
    """AddReplicaRegions: never our own region, never twice."""
    if any(region == config.region for region in regions):
        raise errors.InvalidParameter(INVALID_REPLICA_REGION)
    if len(set(regions)) != len(regions):
        raise errors.InvalidParameter("Each replica region can be given only once.")


async def add_replica_regions(
    tx: Tx,
    config: StoreConfig,
    secret_id: int,
    regions: Sequence[tuple[str, str | None]],
    *,
    since_seq: int,
    force: bool,
    now: datetime,
) -> None:
    """(Re)start replication of ``secret_id`` to ``regions`` from change ``since_seq`` (the change being
    recorded in this transaction, which then carries every version). A region that is not a configured peer
    is recorded as Failed at once (AWS: the call succeeds and that region reports Failed)."""
    for region, kms_key_id in regions:
        known = region in config.peer_regions
        await tx.put_replica_status(
            secret_id,
            region=region,
            kms_key_id=kms_key_id,
            since_seq=since_seq,
            force=force,
            status="InProgress" if known else "Failed",
            message=None
            if known
            else f"Region {region} is not enabled for replication in this deployment (no such peer).",
            blocked=not known,
            now=now,
        )


#: The two spellings of a secret's tag as a condition key (on CreateSecret: the tags being created).
_RESOURCE_TAG = ("secretsmanager:ResourceTag/", "aws:ResourceTag/")
_SM = "secretsmanager:"


class StoreApp:
    def __init__(
        self,
        *,
        repo: Repository,
        kms: Kms,
        config: StoreConfig,
        clock: Clock | None = None,
        sealer: ValueSealer | None = None,
        randbelow: Callable[[int], int] = random_source.randbelow,
        key_policy: KeyPolicyCheck | None = None,
    ) -> None:
        self._repo = repo
        self._kms = kms
        self._sealer = sealer or ValueSealer(kms)
        self._config = config
        self._clock = clock or SystemClock()
        self._randbelow = randbelow
        #: Decides the public calls (see coffer.store.authz).
        self.authz = StoreAuthz(
            region=config.region, account=config.account, clock=self._clock, key_policy=key_policy
        )

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def config(self) -> StoreConfig:
        return self._config

    @property
    def sealer(self) -> ValueSealer:
        return self._sealer

    # --- helpers -------------------------------------------------------------------------------------------

    def ref_or_none(self, secret_id: str) -> SecretRef | None:
        """The lookup of a SecretId: names resolve in the caller's account (the deployment's for internal
        work), ARNs in the account they name; None when it can name nothing here."""
        cfg = self._config
        return resolve_secret_id(
            secret_id, partition=cfg.partition, region=cfg.region, account=self.authz.caller_account()
        )

    def ref(self, secret_id: str) -> SecretRef:
        ref = self.ref_or_none(secret_id)
        if ref is None:
            raise errors.NotFound()
        return ref

    async def authorize_secret(
        self, action: str, secret_id: str, params: RequestParams | None = None
    ) -> SecretFacts | None:
        """Decide a public call's ``action`` on one secret before anything else happens (a no-op for internal
        work): on the secret's ARN when it exists, else on the SecretId as supplied. Returns the secret's
        facts (None when not found or not decided)."""
        caller = self.authz.caller()
        if caller is None:
            return None
        # The SecretId's own constraints come first (AWS answers ValidationException before deciding), and
        # text PostgreSQL cannot hold (NUL) never reaches the lookup.
        check = Checker()
        if check.text("secretId", secret_id):
            check.secret_id(secret_id)
        check.done()
        ref = self.ref_or_none(secret_id)
        facts = await self._repo.secret_facts(ref) if ref is not None else None
        await self.authz.check(caller, action, secret_id, facts, params)
        return facts

    async def _resolve_key(self, kms_key_id: str) -> _ResolvedKey:
        """Resolve a caller's KmsKeyId with KMS DescribeKey; ``""`` means the default key."""
        if kms_key_id == "":
            return _ResolvedKey(key_id=None)
        info = await self._kms.describe_key(kms_key_id)
        failure = key_state_failure(info)
        if failure is not None:
            raise failure
        if info.aws_managed:
            return _ResolvedKey(key_id=None)
        return _ResolvedKey(key_id=kms_key_id, key_arn=info.arn)

    async def resolve_key(self, kms_key_id: str) -> tuple[str | None, str | None]:
        """(key id to store, key ARN) for a caller's KmsKeyId; (None, None) = the default key."""
        key = await self._resolve_key(kms_key_id)
        return key.key_id, key.key_arn

    async def _token_outcome(
        self, tx: Tx, locked: LockedSecret, token: str, value: SecretValue
    ) -> v.TokenOutcome:
        meta = locked.versions.get(token)
        if meta is None:
            return v.token_outcome(existing_has_value=None, same=None)
        if not meta.has_value:
            return v.token_outcome(existing_has_value=False, same=None)
        (stored,) = await tx.stored_values(locked.id, [token])
        existing = await self._sealer.open(arn=locked.arn, stored=stored)
        return v.token_outcome(existing_has_value=True, same=v.same_value(existing, value))

    async def _write_value(
        self,
        tx: Tx,
        locked: LockedSecret,
        *,
        token: str,
        value: SecretValue,
        stages: Sequence[str] | None,
        key_id: str | None,
        outcome: v.TokenOutcome,
        now: datetime,
    ) -> dict[str, str]:
        """Insert (or fill) version ``token``, move labels, prune; returns the new labels."""
        labels = dict(locked.labels)
        fill = outcome is v.TokenOutcome.FILL
        new_labels = v.labels_for_new_value(labels, token, stages, ensure_current=not fill)
        v.check_label_cap(new_labels)
        labelled = set(new_labels.values())
        facts = [
            v.VersionFacts(version_id=vid, created_date=meta.created_date, labelled=vid in labelled)
            for vid, meta in locked.versions.items()
        ]
        doomed = v.plan_prune(facts, now=now, incoming=0 if fill else 1)
        sealed = await self._sealer.seal(arn=locked.arn, version_id=token, key_id=key_id, value=value)
        if fill:
            await tx.store_value(locked.id, token, sealed)
        else:
            await tx.insert_version(locked.id, token, sealed, now=now)
        await tx.replace_labels(locked.id, labels, new_labels)
        await tx.delete_versions(locked.id, doomed)
        return new_labels

    async def _note_value_change(self, tx: Tx, secret_id: int, *, now: datetime) -> None:
        """A manual value that became AWSCURRENT counts as a rotation for AutomaticallyAfterDays scheduling:
        the next rotation is counted from now."""
        config = await tx.rotation_config(secret_id)
        rules = config.rules
        if not config.enabled or rules is None or rules.automatically_after_days is None:
            return
        sched = schedule.parse_rules(rules)
        if sched is not None:
            await tx.update_rotation(secret_id, {"next_rotation_at": sched.next_window_start(now)})

    # --- CreateSecret ---------------------------------------------------------------------------------------

    async def create_secret(
        self,
        *,
        name: str,
        token: str | None,
        description: str | None,
        kms_key_id: str | None,
        secret_string: str | None,
        secret_binary: bytes | None,
        tags: Sequence[Tag],
        replica_regions: Sequence[tuple[str, str | None]],
        type: str | None,
    ) -> CreateResult:
        c = Checker()
        c.name(name)
        c.token(token)
        c.description(description)
        c.kms_key_id(kms_key_id)
        c.secret_string(secret_string)
        c.secret_binary(secret_binary)
        c.tags([(t.key, t.value) for t in tags])
        for i, (region, replica_key) in enumerate(replica_regions, start=1):
            c.region(region, f"addReplicaRegions.{i}.member.region")
            c.kms_key_id(replica_key)
        c.type(type)
        c.done()
        check_one_value(secret_string, secret_binary)
        value = _value_of(secret_string, secret_binary)
        check_token_present(has_value=value is not None, token=token)
        merged_tags = _merge_tags(None, tags) if tags else None
        _check_tags(merged_tags or ())
        check_replica_regions(self._config, [region for region, _ in replica_regions])
        cfg = self._config
        account = self.authz.caller_account()
        arn = str(
            make_arn(
                partition=cfg.partition,
                region=cfg.region,
                account=account,
                name=name,
                suffix=new_suffix(self._randbelow),
            )
        )
        caller = self.authz.caller()
        if caller is not None:
            self._authorize_create(
                caller,
                arn,
                RequestParams(
                    name=name,
                    description=description,
                    kms_key_id=kms_key_id,
                    add_replica_regions=[region for region, _ in replica_regions],
                    request_tags=merged_tags,
                    extra={f"{p}{t.key}": (t.value,) for t in merged_tags or () for p in _RESOURCE_TAG},
                ),
                tagged=bool(tags),
                replicated=bool(replica_regions),
            )
        key = await self._resolve_key(kms_key_id) if kms_key_id is not None else _ResolvedKey(key_id=None)
        for attempt in (1, 2):
            try:
                return await self._create_once(
                    name=name,
                    token=token,
                    value=value,
                    arn=arn,
                    key=key,
                    description=description,
                    tags=merged_tags,
                    type=type,
                    replica_regions=replica_regions,
                )
            except NameTaken:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _create_once(
        self,
        *,
        name: str,
        token: str | None,
        value: SecretValue | None,
        arn: str,
        key: _ResolvedKey,
        description: str | None,
        tags: tuple[Tag, ...] | None,
        type: str | None,
        replica_regions: Sequence[tuple[str, str | None]] = (),
    ) -> CreateResult:
        """One attempt of CreateSecret's transaction. A concurrent insert of the same name makes it raise
        NameTaken; the retry then sees that secret (idempotent replay or ResourceExistsException)."""
        cfg = self._config
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            existing = await tx.lock_by_name(name, arn.split(":")[4])
            if existing is not None:
                if existing.deleted:
                    raise errors.InvalidRequest(
                        "You can't create this secret because a secret with this name is already scheduled "
                        "for deletion."
                    )
                if value is not None and token is not None and token in existing.versions:
                    outcome = await self._token_outcome(tx, existing, token, value)
                    if outcome is v.TokenOutcome.REPLAY:
                        return CreateResult(arn=existing.arn, name=existing.name, version_id=token)
                    raise errors.AlreadyExists(v.token_in_use_message(token, existing.arn))
                raise errors.AlreadyExists(v.already_exists_message(name))
            secret_id = await tx.insert_secret(
                arn=arn,
                name=name,
                region=cfg.region,
                type=type,
                description=description,
                kms_key_id=key.key_id,
                kms_key_arn=key.key_arn,
                tags=tags,
                now=now,
            )
            version_id: str | None = None
            if value is not None and token is not None:
                sealed = await self._sealer.seal(arn=arn, version_id=token, key_id=key.key_id, value=value)
                await tx.insert_version(secret_id, token, sealed, now=now)
                await tx.replace_labels(secret_id, {}, {AWSCURRENT: token})
                version_id = token
            if replica_regions:
                # The creating change is the replicas' seed (change sequence 1).
                await add_replica_regions(
                    tx, self._config, secret_id, replica_regions, since_seq=1, force=False, now=now
                )
            await tx.record_change(
                secret_id, event="CreateSecret", now=now, version_id=version_id, payload={"name": name}
            )
        log.info("secret.created", arn=arn, version_id=version_id)
        return CreateResult(arn=arn, name=name, version_id=version_id)

    def _authorize_create(
        self, caller: Principal, arn: str, params: RequestParams, *, tagged: bool, replicated: bool
    ) -> None:
        """CreateSecret is decided on the ARN the secret will get, for CreateSecret, plus TagResource when it
        carries Tags and ReplicateSecretToRegions when it adds replicas (no secretsmanager:SecretId)."""
        actions = ["secretsmanager:CreateSecret"]
        if tagged:
            actions.append("secretsmanager:TagResource")
        if replicated:
            actions.append("secretsmanager:ReplicateSecretToRegions")
        keys = global_keys(now=self._clock.now(), region=self._config.region, source_ip=source_ip_var.get())
        keys.update(request_keys(params))
        for action in actions:
            authorize(caller, action, arn, resource_account=arn.split(":")[4], keys=keys)

    # --- reads ----------------------------------------------------------------------------------------------

    async def describe_secret(self, *, secret_id: str) -> Secret:
        c = Checker()
        c.secret_id(secret_id)
        c.done()
        secret = await self._repo.describe(self.ref(secret_id))
        if secret is None:
            raise errors.NotFound()
        return secret

    async def get_secret_value(
        self, *, secret_id: str, version_id: str | None, version_stage: str | None
    ) -> ValueResult:
        c = Checker()
        c.secret_id(secret_id)
        c.version_id(version_id)
        c.version_stage(version_stage)
        c.done()
        return await self._get_value(
            self.ref_or_none(secret_id),
            version_id=version_id,
            version_stage=version_stage,
            caller=self.authz.caller(),
            secret_id=secret_id,
        )

    async def _get_value(
        self,
        ref: SecretRef | None,
        *,
        version_id: str | None,
        version_stage: str | None,
        caller: Principal | None = None,
        secret_id: str = "",
    ) -> ValueResult:
        """GetSecretValue: one query reads the value and the secret's tags, resource policy and account, then
        the caller (when a public call) is decided before any not-found or state answer."""
        stage = version_stage if version_stage is not None or version_id is not None else AWSCURRENT
        today = self._clock.now().astimezone(UTC).date()
        # a call still to be decided must not leave a trace (LastAccessedDate) when it is refused
        row = (
            await self._repo.fetch_value(
                ref, version_id=version_id, stage=stage, today=today, touch=caller is None
            )
            if ref is not None
            else None
        )
        if caller is not None:
            await self.authz.check(
                caller,
                _SM + "GetSecretValue",
                secret_id,
                row.facts if row is not None else None,
                RequestParams(version_id=version_id, version_stage=version_stage),
            )
        if row is None:
            raise errors.NotFound()
        if row.deleted:
            raise errors.InvalidRequest(MARKED_FOR_DELETION_MESSAGE)
        if row.version_id is None:
            what = f"VersionId: {version_id}" if version_id is not None else f"staging label: {stage}"
            raise errors.NotFound(f"Secrets Manager can't find the specified secret value for {what}")
        if version_id is not None and stage is not None and row.stage_holder != version_id:
            raise errors.InvalidRequest(
                "You provided a VersionStage that is not associated to the provided VersionId."
            )
        if (
            row.value_kind is None
            or row.ciphertext is None
            or row.wrapped_key is None
            or row.created_date is None
        ):
            label = stage or (row.stages[0] if row.stages else AWSPENDING)
            raise errors.NotFound(
                f"Secrets Manager can't find the specified secret value for staging label: {label}"
            )
        stored = StoredValue(
            version_id=row.version_id,
            kind=row.value_kind,
            ciphertext=row.ciphertext,
            wrapped_key=row.wrapped_key,
        )
        value = await self._sealer.open(arn=row.arn, stored=stored)
        if caller is not None and not row.accessed_today:
            await self._repo.touch_accessed(row.secret_id, row.version_id, today)
        return ValueResult(
            arn=row.arn,
            name=row.name,
            version_id=row.version_id,
            value=value,
            stages=row.stages,
            created_date=row.created_date,
        )

    async def batch_get_secret_value(
        self,
        *,
        secret_id_list: Sequence[str],
        filters: Sequence[ListFilter],
        max_results: int | None,
        next_token: str | None,
    ) -> BatchResult:
        c = Checker()
        c.length("secretIdList", secret_id_list, max_len=MAX_BATCH_IDS)
        for sid in secret_id_list:
            c.length("secretIdList", sid, min_len=1, max_len=2048)
        c.filters([(f.key, f.values) for f in filters])
        c.number("maxResults", max_results, min_value=1, max_value=MAX_BATCH_RESULTS)
        c.next_token(next_token)
        c.done()
        if bool(secret_id_list) == bool(filters):
            raise errors.InvalidParameter("Either SecretIdList or Filters must be specified, but not both.")
        if max_results is not None and not filters:
            raise errors.InvalidParameter("MaxResults is only valid together with Filters.")
        require_filter_parts([(f.key, f.values) for f in filters])

        caller = self.authz.caller()
        account = self.authz.caller_account()
        if caller is not None:
            # resource-less: BatchGetSecretValue, and ListSecrets when it lists by Filters (§3.1)
            self.authz.check_global(caller, _SM + "BatchGetSecretValue")
            if filters:
                self.authz.check_global(caller, _SM + "ListSecrets")

        async def one(
            label: str, ref: SecretRef | None, listed: bool = False
        ) -> ValueResult | BatchError | None:
            try:
                Checker().secret_id(label)
                return await self._get_value(
                    ref, version_id=None, version_stage=None, caller=caller, secret_id=label
                )
            except (errors.Unavailable, errors.Internal):
                raise
            except errors.AccessDenied as exc:
                # Filters: only the secrets the caller may read are returned; a listed id: an Errors entry.
                return (
                    None if listed else BatchError(secret_id=label, error_code=exc.code, message=exc.message)
                )
            except errors.CofferError as exc:
                return BatchError(secret_id=label, error_code=exc.code, message=exc.message)

        token: str | None = None
        if secret_id_list:
            jobs = [one(sid, self.ref_or_none(sid)) for sid in secret_id_list]
        else:
            pg = await self._list_page(
                filters,
                sort_by=None,
                sort_order=None,
                max_results=max_results or DEFAULT_BATCH_RESULTS,
                next_token=next_token,
                include_deleted=False,
                scope="batch",
                account=account,
            )
            token = pg.next_token
            jobs = [
                one(item.name, SecretRef(arn=None, name=item.name, account=account), listed=True)
                for item in pg.items
            ]
        outcomes = await asyncio.gather(*jobs)
        return BatchResult(
            values=[o for o in outcomes if isinstance(o, ValueResult)],
            errors=[o for o in outcomes if isinstance(o, BatchError)],
            next_token=token,
        )

    async def _list_page(
        self,
        filters: Sequence[ListFilter],
        *,
        sort_by: str | None,
        sort_order: str | None,
        max_results: int,
        next_token: str | None,
        include_deleted: bool,
        scope: str,
        account: str | None = None,
    ) -> listing.Page:
        """One page, filtered, sorted and cut by the database (keyset pagination: one more row than the page
        tells whether there is a next one)."""
        cur = listing.cursor(
            filters, sort_by=sort_by, sort_order=sort_order, next_token=next_token, scope=scope
        )
        rows = await self._repo.list_page(
            filters, cur, include_deleted=include_deleted, limit=max_results + 1, account=account
        )
        return listing.cut(cur, rows, max_results)

    async def list_secrets(
        self,
        *,
        include_planned_deletion: bool,
        max_results: int | None,
        next_token: str | None,
        filters: Sequence[ListFilter],
        sort_order: str | None,
        sort_by: str | None,
    ) -> ListResult:
        c = Checker()
        c.number("maxResults", max_results, min_value=1, max_value=MAX_LIST_RESULTS)
        c.next_token(next_token)
        c.filters([(f.key, f.values) for f in filters])
        c.enum("sortOrder", sort_order, SORT_ORDERS)
        c.enum("sortBy", sort_by, SORT_BY)
        c.done()
        require_filter_parts([(f.key, f.values) for f in filters])
        caller = self.authz.caller()
        if caller is not None:  # resource-less; the result is not filtered by per-secret policies (§3.1)
            self.authz.check_global(caller, _SM + "ListSecrets")
        pg = await self._list_page(
            filters,
            account=self.authz.caller_account(),
            sort_by=sort_by,
            sort_order=sort_order,
            max_results=max_results or MAX_LIST_RESULTS,
            next_token=next_token,
            include_deleted=include_planned_deletion,
            scope=f"list:{include_planned_deletion}",
        )
        found = await self._repo.secrets_by_ids([i.ident for i in pg.items])
        return ListResult(
            secrets=[found[i.ident] for i in pg.items if i.ident in found], next_token=pg.next_token
        )

    async def list_secret_version_ids(
        self, *, secret_id: str, max_results: int | None, next_token: str | None, include_deprecated: bool
    ) -> VersionsResult:
        c = Checker()
        c.secret_id(secret_id)
        c.number("maxResults", max_results, min_value=1, max_value=MAX_LIST_RESULTS)
        c.next_token(next_token)
        c.done()
        found = await self._repo.versions(self.ref(secret_id))
        if found is None:
            raise errors.NotFound()
        arn, name, all_versions = found
        shown = [ver for ver in all_versions if ver.stages or include_deprecated]
        fingerprint = listing.query_fingerprint("versions", arn, include_deprecated)

        def key(ver: SecretVersion) -> list[Any]:
            return [int(ver.created_date.timestamp() * 1_000_000), ver.ordinal]

        if next_token is not None:
            after = listing.decode_token(next_token, fingerprint=fingerprint)["k"]
            try:
                shown = [ver for ver in shown if key(ver) > after]
            except TypeError:
                raise errors.InvalidNextToken() from None
        limit = max_results or MAX_LIST_RESULTS
        page, token = shown[:limit], None
        if len(shown) > limit:
            token = listing.encode_token({"v": 1, "q": fingerprint, "k": key(page[-1])})
        return VersionsResult(arn=arn, name=name, versions=page, next_token=token)

    # --- value writes ---------------------------------------------------------------------------------------

    async def put_secret_value(
        self,
        *,
        secret_id: str,
        token: str | None,
        secret_string: str | None,
        secret_binary: bytes | None,
        version_stages: Sequence[str] | None,
        rotation_token: str | None,
    ) -> PutResult:
        c = Checker()
        c.secret_id(secret_id)
        c.token(token)
        c.secret_string(secret_string)
        c.secret_binary(secret_binary)
        c.version_stages(version_stages)
        c.rotation_token(rotation_token)
        c.done()
        check_one_value(secret_string, secret_binary)
        value = _value_of(secret_string, secret_binary)
        if value is None:
            raise errors.InvalidRequest(NEED_VALUE_MESSAGE)
        check_token_present(has_value=True, token=token)
        assert token is not None
        caller = self.authz.caller()
        ref = self.ref_or_none(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            # decided on the locked row (its tags, resource policy, account): no extra round trip
            found = await tx.lock(ref) if ref is not None else None
            if caller is not None:
                await self.authz.check(
                    caller, _SM + "PutSecretValue", secret_id, found.facts if found is not None else None
                )
            if found is None:
                raise errors.NotFound()
            locked = found
            check_writable(locked)
            outcome = await self._token_outcome(tx, locked, token, value)
            if outcome is v.TokenOutcome.REPLAY:
                return PutResult(
                    arn=locked.arn,
                    name=locked.name,
                    version_id=token,
                    stages=v.stages_of(locked.labels, token),
                )
            if outcome is v.TokenOutcome.CONFLICT:
                raise errors.AlreadyExists(v.token_in_use_message(token, locked.arn))
            new_labels = await self._write_value(
                tx,
                locked,
                token=token,
                value=value,
                stages=version_stages,
                key_id=locked.kms_key_id,
                outcome=outcome,
                now=now,
            )
            stages = v.stages_of(new_labels, token)
            if AWSCURRENT in stages:
                await self._note_value_change(tx, locked.id, now=now)
            await tx.record_change(
                locked.id, event="PutSecretValue", now=now, version_id=token, payload={"stages": list(stages)}
            )
        log.info("secret.value_put", arn=locked.arn, version_id=token)
        return PutResult(arn=locked.arn, name=locked.name, version_id=token, stages=stages)

    async def update_secret(
        self,
        *,
        secret_id: str,
        token: str | None,
        description: str | None,
        kms_key_id: str | None,
        secret_string: str | None,
        secret_binary: bytes | None,
        type: str | None,
    ) -> UpdateResult:
        c = Checker()
        c.secret_id(secret_id)
        c.token(token)
        c.description(description)
        c.kms_key_id(kms_key_id)
        c.secret_string(secret_string)
        c.secret_binary(secret_binary)
        c.type(type)
        c.done()
        check_one_value(secret_string, secret_binary)
        value = _value_of(secret_string, secret_binary)
        check_token_present(has_value=value is not None, token=token)
        ref = self.ref(secret_id)
        key = await self._resolve_key(kms_key_id) if kms_key_id is not None else None
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            check_writable(locked)
            changes: dict[str, Any] = {}
            if description is not None:
                changes["description"] = description
            if type is not None:
                changes["type"] = type
            key_id = locked.kms_key_id if key is None else key.key_id
            key_changed = key is not None and key.key_id != locked.kms_key_id
            if key is not None and key_changed:
                changes["kms_key_id"] = key.key_id
                changes["kms_key_arn"] = key.key_arn
            version_id: str | None = None
            new_version = False
            labels = dict(locked.labels)
            if value is not None and token is not None:
                outcome = await self._token_outcome(tx, locked, token, value)
                if outcome is v.TokenOutcome.CONFLICT:
                    raise errors.AlreadyExists(v.token_in_use_message(token, locked.arn))
                version_id = token
                if outcome is not v.TokenOutcome.REPLAY:
                    labels = await self._write_value(
                        tx,
                        locked,
                        token=token,
                        value=value,
                        stages=None,
                        key_id=key_id,
                        outcome=outcome,
                        now=now,
                    )
                    new_version = True
                    await self._note_value_change(tx, locked.id, now=now)
            if key_changed:
                await self._reencrypt(
                    tx, locked, labels, key_id=key_id, skip=version_id if new_version else None
                )
            await tx.update_secret(locked.id, changes)
            if changes or new_version:
                await tx.record_change(
                    locked.id,
                    event="UpdateSecret",
                    now=now,
                    version_id=version_id if new_version else None,
                    payload={"fields": sorted(changes), "new_version": new_version},
                )
        log.info("secret.updated", arn=locked.arn, version_id=version_id)
        return UpdateResult(arn=locked.arn, name=locked.name, version_id=version_id)

    async def _reencrypt(
        self, tx: Tx, locked: LockedSecret, labels: dict[str, str], *, key_id: str | None, skip: str | None
    ) -> None:
        """After a key change, re-encrypt the versions labelled AWSCURRENT/AWSPENDING/AWSPREVIOUS under the
        new key (older versions stay under the old one, as in AWS)."""
        targets = sorted({labels[label] for label in _REENCRYPTED_LABELS if label in labels} - {skip})
        for stored in await tx.stored_values(locked.id, targets):
            sealed = await self._sealer.reseal(arn=locked.arn, stored=stored, key_id=key_id)
            await tx.store_value(locked.id, stored.version_id, sealed)

    # --- labels ---------------------------------------------------------------------------------------------

    async def update_secret_version_stage(
        self,
        *,
        secret_id: str,
        version_stage: str,
        remove_from_version_id: str | None,
        move_to_version_id: str | None,
    ) -> NameArn:
        c = Checker()
        c.secret_id(secret_id)
        c.length("versionStage", version_stage, min_len=1, max_len=256)
        c.version_id(remove_from_version_id, "removeFromVersionId")
        c.version_id(move_to_version_id, "moveToVersionId")
        c.done()
        ref = self.ref(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            check_writable(locked)
            old = dict(locked.labels)
            new = v.update_version_stage(
                old,
                version_stage,
                move_to=move_to_version_id,
                remove_from=remove_from_version_id,
                known_versions=locked.versions.keys(),
            )
            v.check_label_cap(new)
            if new != old:
                labelled = set(new.values())
                facts = [
                    v.VersionFacts(version_id=vid, created_date=meta.created_date, labelled=vid in labelled)
                    for vid, meta in locked.versions.items()
                ]
                await tx.replace_labels(locked.id, old, new)
                await tx.delete_versions(locked.id, v.plan_prune(facts, now=now))
                await tx.record_change(
                    locked.id,
                    event="UpdateSecretVersionStage",
                    now=now,
                    version_id=move_to_version_id,
                    payload={
                        "stage": version_stage,
                        "from": remove_from_version_id,
                        "to": move_to_version_id,
                    },
                )
        return NameArn(arn=locked.arn, name=locked.name)

    # --- deletion -------------------------------------------------------------------------------------------

    async def delete_secret(
        self,
        *,
        secret_id: str,
        recovery_window_in_days: int | None,
        force_delete_without_recovery: bool | None,
    ) -> DeleteResult:
        c = Checker()
        c.secret_id(secret_id)
        c.done()
        check_recovery(recovery_window_in_days, force_delete_without_recovery)
        force = bool(force_delete_without_recovery)
        cfg = self._config
        ref = self.ref_or_none(secret_id)
        now = self._clock.now()

        def absent() -> DeleteResult:
            # AWS: force-deleting a secret that does not exist (any more) is not an error.
            name = ref.name if ref is not None else secret_id
            arn = (
                ref.arn
                if ref is not None and ref.arn is not None
                else partial_arn(
                    partition=cfg.partition,
                    region=cfg.region,
                    account=ref.account if ref is not None else self.authz.caller_account(),
                    name=name,
                )
            )
            return DeleteResult(arn=arn, name=name, deletion_date=now)

        if ref is None:
            if force:
                return absent()
            raise errors.NotFound()
        async with self._repo.transaction() as tx:
            locked = await tx.lock(ref)
            if locked is None:
                if force:
                    return absent()
                raise errors.NotFound()
            if locked.is_replica:
                raise errors.InvalidParameter(REPLICA_MESSAGE)
            if locked.replica_regions:
                raise errors.InvalidParameter(
                    f"You can't delete secret {locked.arn} that still has replica regions "
                    f"[{', '.join(locked.replica_regions)}]."
                )
            if force:
                await tx.record_change(locked.id, event="DeleteSecret", now=now, payload={"force": True})
                await tx.delete_secret(locked.id)
                log.info("secret.deleted", arn=locked.arn, force=True)
                return DeleteResult(arn=locked.arn, name=locked.name, deletion_date=now)
            if locked.deleted:
                raise errors.InvalidRequest(MARKED_FOR_DELETION_MESSAGE)
            days = recovery_window_in_days if recovery_window_in_days is not None else DEFAULT_RECOVERY_DAYS
            deletion_date = now + timedelta(days=days)
            await tx.update_secret(locked.id, {"deleted_at": now, "deletion_date": deletion_date})
            await tx.record_change(
                locked.id, event="DeleteSecret", now=now, payload={"recovery_window_days": days}
            )
        log.info("secret.scheduled_for_deletion", arn=locked.arn, deletion_date=deletion_date.isoformat())
        return DeleteResult(arn=locked.arn, name=locked.name, deletion_date=deletion_date)

    async def restore_secret(self, *, secret_id: str) -> NameArn:
        c = Checker()
        c.secret_id(secret_id)
        c.done()
        ref = self.ref(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            if locked.is_replica:
                raise errors.InvalidParameter(REPLICA_MESSAGE)
            if locked.deleted:
                await tx.update_secret(locked.id, {"deleted_at": None, "deletion_date": None})
                await tx.record_change(locked.id, event="RestoreSecret", now=now)
        return NameArn(arn=locked.arn, name=locked.name)

    async def purge_due(self, now: datetime | None = None) -> list[str]:
        """Permanently delete secrets whose recovery window has ended (the background loop calls this)."""
        purged = await self._repo.purge_due(now or self._clock.now())
        for arn in purged:
            log.info("secret.purged", arn=arn)
        return purged

    # --- tags -----------------------------------------------------------------------------------------------

    async def tag_resource(self, *, secret_id: str, tags: Sequence[Tag]) -> None:
        c = Checker()
        c.secret_id(secret_id)
        c.tags([(t.key, t.value) for t in tags])
        c.done()
        ref = self.ref(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            check_writable(locked)
            merged = _merge_tags(locked.tags, tags)
            _check_tags(merged)
            await self._keeps_access(secret_id, locked, "TagResource", merged)
            await tx.update_secret(locked.id, {"tags": merged})
            await tx.record_change(
                locked.id, event="TagResource", now=now, payload={"keys": [t.key for t in tags]}
            )

    async def untag_resource(self, *, secret_id: str, tag_keys: Sequence[str]) -> None:
        c = Checker()
        c.secret_id(secret_id)
        c.tag_keys(tag_keys)
        c.done()
        ref = self.ref(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            check_writable(locked)
            if locked.tags is None:
                return
            drop = set(tag_keys)
            kept = tuple(t for t in locked.tags if t.key not in drop)
            if kept != locked.tags:
                await self._keeps_access(secret_id, locked, "UntagResource", kept)
                await tx.update_secret(locked.id, {"tags": kept})
                await tx.record_change(
                    locked.id, event="UntagResource", now=now, payload={"keys": sorted(drop)}
                )

    async def _keeps_access(
        self, secret_id: str, locked: LockedSecret, action: str, tags: Sequence[Tag]
    ) -> None:
        """A TagResource/UntagResource that would take the caller's own access away (the same action, or
        DescribeSecret, on the secret with its new tags) fails with AccessDeniedException and changes nothing
        (iam-policies.md §5 b)."""
        caller = self.authz.caller()
        if caller is None or locked.facts is None:
            return
        for act in (action, "DescribeSecret"):
            await self.authz.check(caller, _SM + act, secret_id, locked.facts, tags=tuple(tags))

    # --- resource policies ----------------------------------------------------------------------------------

    async def put_resource_policy(
        self, *, secret_id: str, resource_policy: str, block_public_policy: bool
    ) -> NameArn:
        """Attach (replace) the secret's resource policy: length, grammar, principals, and broad access when
        ``block_public_policy`` (iam-policies.md §4), then store it; it replicates with the secret."""
        c = Checker()
        c.secret_id(secret_id)
        c.done()
        check_resource_policy_for_put(resource_policy, block_public_policy=block_public_policy)
        return await self._store_resource_policy(secret_id, resource_policy, event="PutResourcePolicy")

    async def get_resource_policy(self, *, secret_id: str) -> tuple[str, str, str | None]:
        """(ARN, name, the policy or None)."""
        c = Checker()
        c.secret_id(secret_id)
        c.done()
        facts = await self._repo.secret_facts(self.ref(secret_id))
        if facts is None:
            raise errors.NotFound()
        return facts.arn, facts.name, facts.resource_policy

    async def delete_resource_policy(self, *, secret_id: str) -> NameArn:
        """Remove the secret's resource policy (succeeds when there is none)."""
        c = Checker()
        c.secret_id(secret_id)
        c.done()
        return await self._store_resource_policy(secret_id, None, event="DeleteResourcePolicy")

    async def _store_resource_policy(self, secret_id: str, policy: str | None, *, event: str) -> NameArn:
        """Set (or, with None, clear) a writable secret's resource policy and record ``event``."""
        ref = self.ref(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            check_writable(locked)
            await tx.update_secret(locked.id, {"resource_policy": policy})
            await tx.record_change(locked.id, event=event, now=now)
        return NameArn(arn=locked.arn, name=locked.name)

    async def validate_resource_policy(
        self, *, secret_id: str | None, resource_policy: str
    ) -> ValidationResult:
        """Check a policy without storing it: syntax, broad access, and whether it locks the caller out."""
        c = Checker()
        if secret_id is not None:
            c.secret_id(secret_id)
        c.done()
        if not 1 <= len(resource_policy) <= 20480:
            check_resource_policy_for_put(resource_policy)  # raises the length ValidationException
        secret_arn: str | None = None
        if secret_id is not None:
            facts = await self._repo.secret_facts(self.ref(secret_id))
            if facts is None:
                raise errors.NotFound()
            secret_arn = facts.arn
        caller = current_caller(self._config.account)
        return validate_resource_policy(
            resource_policy,
            caller_arn=caller.arn if caller is not None and secret_arn is not None else None,
            caller_account=caller.account if caller is not None else None,
            secret_arn=secret_arn,
        )

"""Plain records passed between the store's use cases (``app.py``) and its adapters (the SQL in ``sql/``,
``kms_client.py``). Pure: no I/O imports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coffer.core import errors
from coffer.core.model import RotationRules, Tag, ValueKind
from coffer.core.rotation import OPEN_STATUSES, Attempt, AttemptStatus
from coffer.core.secret_keys import SecretFacts

# --- JSON forms of tags and rotation rules (as the secrets table and the outbox snapshots keep them) -----


def tags_of(raw: Any) -> tuple[Tag, ...] | None:
    if raw is None:
        return None
    return tuple(Tag(key=t["Key"], value=t["Value"]) for t in raw)


def tags_json(tags: Sequence[Tag] | None) -> list[dict[str, str]] | None:
    if tags is None:
        return None
    return [{"Key": t.key, "Value": t.value} for t in tags]


def rules_of(raw: Any) -> RotationRules | None:
    if raw is None:
        return None
    return RotationRules(
        automatically_after_days=raw.get("AutomaticallyAfterDays"),
        duration=raw.get("Duration"),
        schedule_expression=raw.get("ScheduleExpression"),
    )


def rules_json(rules: RotationRules | None) -> dict[str, Any] | None:
    if rules is None:
        return None
    out: dict[str, Any] = {}
    if rules.automatically_after_days is not None:
        out["AutomaticallyAfterDays"] = rules.automatically_after_days
    if rules.duration is not None:
        out["Duration"] = rules.duration
    if rules.schedule_expression is not None:
        out["ScheduleExpression"] = rules.schedule_expression
    return out


class NameTaken(errors.AlreadyExists):
    """A concurrent CreateSecret inserted the same name first (the loser re-runs its checks once)."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    arn: str
    state: str
    aws_managed: bool


@dataclass(frozen=True, slots=True)
class DataKey:
    plaintext: bytes = field(repr=False)
    wrapped: bytes = field(repr=False)
    key_arn: str


@dataclass(frozen=True, slots=True)
class ValueRow:
    """What GetSecretValue needs, fetched in one round trip."""

    secret_id: int
    arn: str
    name: str
    deleted: bool
    #: Holder of the requested stage (None if no stage was asked for or nobody holds it).
    stage_holder: str | None
    version_id: str | None
    created_date: datetime | None
    value_kind: ValueKind | None
    ciphertext: bytes | None
    wrapped_key: bytes | None
    stages: tuple[str, ...]
    #: The secret as authorization sees it (tags, resource policy, account ...), from the same query.
    facts: SecretFacts | None = None
    #: LastAccessedDate of secret and version already say today (no touch needed).
    accessed_today: bool = True


@dataclass(frozen=True, slots=True)
class VersionMeta:
    created_date: datetime
    has_value: bool


@dataclass(frozen=True, slots=True)
class StoredValue:
    version_id: str
    kind: ValueKind
    ciphertext: bytes
    wrapped_key: bytes


@dataclass(frozen=True, slots=True)
class LockedSecret:
    """A secret row locked FOR UPDATE in the current transaction, with its versions and labels."""

    id: int
    arn: str
    name: str
    deleted: bool
    is_replica: bool
    kms_key_id: str | None
    tags: tuple[Tag, ...] | None
    replica_regions: tuple[str, ...]
    versions: Mapping[str, VersionMeta]
    labels: Mapping[str, str]
    #: The secret as authorization sees it (read by the same locking query).
    facts: SecretFacts | None = None


@dataclass(frozen=True, slots=True)
class SealedValue:
    kind: ValueKind
    ciphertext: bytes
    wrapped_key: bytes
    kms_key_arn: str
    default_key: bool


# --- rotation ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotationConfig:
    """A locked secret's rotation columns (``enabled`` None = never configured)."""

    enabled: bool | None
    lambda_arn: str | None
    rotator: str | None
    rules: RotationRules | None
    last_rotated: datetime | None
    next_rotation: datetime | None


@dataclass(frozen=True, slots=True)
class StepRow:
    step: str
    status: str
    try_number: int
    started: datetime
    finished: datetime | None
    error: str | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: int
    secret_id: int
    secret_arn: str
    token: str
    rotator: str
    rotate_immediately: bool
    trigger: str
    status: str
    tries: int
    requested: datetime
    started: datetime | None
    finished: datetime | None
    next_try: datetime | None
    lease_owner: str | None
    lease_expires: datetime | None
    lease_seconds: int | None
    error: str | None
    steps: tuple[StepRow, ...] = ()

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def state(self) -> Attempt:
        """The attempt as the rotation state machine sees it."""
        return Attempt(
            status=AttemptStatus(self.status),
            tries=self.tries,
            started=self.started,
            finished=self.finished,
            next_try=self.next_try,
            lease_owner=self.lease_owner,
            lease_expires=self.lease_expires,
            lease_seconds=self.lease_seconds,
            error=self.error,
        )


@dataclass(frozen=True, slots=True)
class FunctionRow:
    name: str
    arn: str
    endpoint: str
    ca_pem: str
    server_name: str | None
    created: datetime


@dataclass(frozen=True, slots=True)
class DueSecret:
    """A secret whose NextRotationDate has come (candidates for a scheduled rotation)."""

    id: int
    arn: str
    rules: RotationRules | None
    next_rotation: datetime
    last_rotated: datetime | None

"""The secrets domain as frozen dataclasses. Pure: no I/O; protobuf messages never reach this module.

Timestamps are timezone-aware UTC ``datetime``s; "last accessed" values are UTC calendar ``date``s (AWS
reports them truncated to midnight UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

AWSCURRENT = "AWSCURRENT"
AWSPREVIOUS = "AWSPREVIOUS"
AWSPENDING = "AWSPENDING"

#: ``label -> version id``: a label is attached to at most one version at a time.
StagingLabels = Mapping[str, str]

ValueKind = Literal["string", "binary"]


@dataclass(frozen=True, slots=True)
class Arn:
    """``arn:<partition>:secretsmanager:<region>:<account>:secret:<name>-<suffix>``."""

    partition: str
    region: str
    account: str
    name: str
    suffix: str

    def __str__(self) -> str:
        where = f"{self.partition}:secretsmanager:{self.region}:{self.account}"
        return f"arn:{where}:secret:{self.name}-{self.suffix}"


@dataclass(frozen=True, slots=True)
class SecretValue:
    """A plaintext secret value. ``repr`` never shows the bytes, so it cannot leak through a log line."""

    kind: ValueKind
    data: bytes = field(repr=False)

    @classmethod
    def of_string(cls, text: str) -> SecretValue:
        return cls("string", text.encode("utf-8"))

    @classmethod
    def of_binary(cls, data: bytes) -> SecretValue:
        return cls("binary", bytes(data))

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass(frozen=True, slots=True)
class Tag:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class RotationRules:
    automatically_after_days: int | None = None
    duration: str | None = None
    schedule_expression: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicationStatus:
    region: str
    status: str
    kms_key_id: str | None = None
    status_message: str | None = None
    last_accessed_date: date | None = None


@dataclass(frozen=True, slots=True)
class SecretVersion:
    version_id: str
    created_date: datetime
    stages: tuple[str, ...]
    #: False for the placeholder a rotation starts with: AWSPENDING, no value until createSecret puts one.
    has_value: bool
    #: ARN of the KMS key that wrapped the data key (None for a placeholder).
    kms_key_arn: str | None = None
    #: True when the version was encrypted under the default ``aws/secretsmanager`` key.
    default_key: bool = True
    last_accessed_date: date | None = None
    #: Creation order among the secret's versions (breaks ties of equal creation times).
    ordinal: int = 0


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret's metadata as DescribeSecret/ListSecrets show it (values live in versions, encrypted)."""

    arn: str
    name: str
    created_date: datetime
    last_changed_date: datetime
    type: str | None = None
    description: str | None = None
    #: The key as the caller named it (id, ARN, alias); None means the default ``aws/secretsmanager`` key.
    kms_key_id: str | None = None
    last_accessed_date: date | None = None
    #: When DeleteSecret was called (present only while the secret is scheduled for deletion).
    deleted_date: datetime | None = None
    #: When the secret will be purged (deleted_date + recovery window).
    deletion_date: datetime | None = None
    #: None until rotation was ever configured.
    rotation_enabled: bool | None = None
    rotation_lambda_arn: str | None = None
    rotation_rules: RotationRules | None = None
    last_rotated_date: datetime | None = None
    next_rotation_date: datetime | None = None
    #: None when never tagged; ``()`` after every tag was removed.
    tags: tuple[Tag, ...] | None = None
    owning_service: str | None = None
    primary_region: str | None = None
    replication_status: tuple[ReplicationStatus, ...] = ()
    #: Labelled versions only: ``version id -> labels`` (includes a valueless rotation placeholder).
    version_ids_to_stages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def scheduled_for_deletion(self) -> bool:
        return self.deleted_date is not None

"""Domain records of the kms service (frozen dataclasses; no protobuf, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyState(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    PENDING_IMPORT = "PendingImport"
    PENDING_REPLICA_DELETION = "PendingReplicaDeletion"
    UNAVAILABLE = "Unavailable"
    CREATING = "Creating"
    UPDATING = "Updating"


class KeyManager(StrEnum):
    CUSTOMER = "CUSTOMER"
    AWS = "AWS"


class MaterialState(StrEnum):
    CURRENT = "CURRENT"
    NON_CURRENT = "NON_CURRENT"


class RotationType(StrEnum):
    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


KEY_USAGE = "ENCRYPT_DECRYPT"
KEY_SPEC = "SYMMETRIC_DEFAULT"
ORIGIN = "AWS_KMS"
ENCRYPTION_ALGORITHM = "SYMMETRIC_DEFAULT"

DEFAULT_ALIAS = "alias/aws/secretsmanager"
DEFAULT_KEY_SERVICE = "secretsmanager"
DEFAULT_KEY_DESCRIPTION = "Default key that protects my Secrets Manager data when no other key is defined"
#: Predefined AWS aliases this service creates lazily, with the service each one belongs to.
PREDEFINED_ALIASES: dict[str, str] = {DEFAULT_ALIAS: DEFAULT_KEY_SERVICE}
AWS_MANAGED_ROTATION_DAYS = 365


@dataclass(frozen=True, slots=True)
class Scope:
    """The partition, region and account this kms instance serves; builds ARNs."""

    partition: str
    region: str
    account_id: str

    def key_arn(self, key_id: str) -> str:
        return f"arn:{self.partition}:kms:{self.region}:{self.account_id}:key/{key_id}"

    def alias_arn(self, alias_name: str) -> str:
        return f"arn:{self.partition}:kms:{self.region}:{self.account_id}:{alias_name}"


@dataclass(frozen=True, slots=True)
class Tag:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Key:
    key_id: str
    arn: str
    account_id: str
    region: str
    description: str
    key_manager: KeyManager
    key_state: KeyState
    created_at: datetime
    current_material_id: str
    multi_region: bool = False
    deletion_date: datetime | None = None
    rotation_enabled: bool = False
    rotation_period_days: int | None = None
    next_rotation_at: datetime | None = None
    on_demand_rotations: int = 0
    tags: tuple[Tag, ...] = ()
    managed_service: str | None = None
    #: the key policy document (``None`` for AWS-managed keys: their service's fixed policy)
    policy: str | None = None

    @property
    def enabled(self) -> bool:
        return self.key_state is KeyState.ENABLED


@dataclass(frozen=True, slots=True)
class Material:
    """One key-material version. ``wrapped`` is the root-key wrap; the plaintext never leaves a request."""

    key_id: str
    material_id: str
    wrapped: bytes
    root_key_id: str
    state: MaterialState
    created_at: datetime
    rotation_type: RotationType | None = None
    rotated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Alias:
    alias_name: str
    alias_arn: str
    target_key_id: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_marker: str | None

    @property
    def truncated(self) -> bool:
        return self.next_marker is not None


@dataclass(frozen=True, slots=True)
class ScheduledDeletion:
    key: Key
    pending_window_in_days: int


@dataclass(frozen=True, slots=True)
class RotationStatus:
    key_arn: str
    enabled: bool
    period_days: int | None = None
    next_rotation_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DataKey:
    key_arn: str
    ciphertext_blob: bytes
    plaintext: bytes
    key_material_id: str


@dataclass(frozen=True, slots=True)
class Encrypted:
    key_arn: str
    ciphertext_blob: bytes


@dataclass(frozen=True, slots=True)
class Decrypted:
    key_arn: str
    plaintext: bytes
    key_material_id: str


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    purged: tuple[str, ...] = ()
    rotated: tuple[str, ...] = ()

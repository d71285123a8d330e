"""The one shape of a replicated change, and its one codec.

A replicated secret's change travels as a :class:`SecretChange`: which change (outbox id, change sequence,
upsert or remove), the secret's metadata after it (:class:`SecretSnapshot`, never a value; the outbox row
keeps it as JSON) and the versions the change created, with their plaintext values (these cross the mTLS
link between regions only; the receiver re-encrypts them at once). The sending side builds it from an
outbox row and encodes it with :func:`to_proto`; the receiving side decodes it with :func:`from_proto` and
applies it. Adding a replicated field means adding it here (dataclass, JSON, proto) and where it is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from coffer.api.replication.v1 import replication_pb2 as rpb
from coffer.core.model import RotationRules, SecretValue, Tag
from coffer.store.records import rules_of, tags_of

UPSERT = "upsert"
REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class SecretSnapshot:
    """A secret's replicated metadata after one change."""

    name: str
    description: str | None = None
    tags: tuple[Tag, ...] | None = None
    rotation_enabled: bool | None = None
    rotation_lambda_arn: str | None = None
    rotation_rules: RotationRules | None = None
    last_rotated: datetime | None = None
    next_rotation: datetime | None = None
    created: datetime | None = None
    last_changed: datetime | None = None
    #: Set while the primary is scheduled for deletion.
    deleted: datetime | None = None
    deletion_date: datetime | None = None
    #: label -> version id (labelled versions only).
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Every version id after the change, oldest first (the receiver drops any other version).
    version_ids: tuple[str, ...] = ()

    @classmethod
    def from_outbox(cls, raw: Mapping[str, Any]) -> SecretSnapshot:
        """The JSON snapshot a replicated change's outbox row carries (written by the change's SQL)."""

        def ts(key: str) -> datetime | None:
            value = raw.get(key)
            return datetime.fromisoformat(value).astimezone(UTC) if value else None

        return cls(
            name=raw["name"],
            description=raw.get("description"),
            tags=tags_of(raw.get("tags")),
            rotation_enabled=raw.get("rotation_enabled"),
            rotation_lambda_arn=raw.get("rotation_lambda_arn"),
            rotation_rules=rules_of(raw.get("rotation_rules")),
            last_rotated=ts("last_rotated_at"),
            next_rotation=ts("next_rotation_at"),
            created=ts("created_at"),
            last_changed=ts("last_changed_at"),
            deleted=ts("deleted_at"),
            deletion_date=ts("deletion_date"),
            labels=dict(raw.get("labels") or {}),
            version_ids=tuple(raw.get("versions") or ()),
        )


@dataclass(frozen=True, slots=True)
class ReplicatedVersion:
    version_id: str
    created_date: datetime | None
    #: None: a valueless placeholder (a rotation's AWSPENDING before its value is set).
    value: SecretValue | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SecretChange:
    """One change of one secret, as the primary region ships it."""

    outbox_id: int
    seq: int
    #: upsert: the secret's state after the change; remove: the primary removed this region from replication.
    kind: str
    primary_arn: str
    primary_region: str
    snapshot: SecretSnapshot
    #: The key to use in the receiving region (None: that region's default key).
    replica_kms_key_id: str | None = None
    force_overwrite: bool = False
    new_versions: tuple[ReplicatedVersion, ...] = ()

    @property
    def name(self) -> str:
        return self.snapshot.name

    def with_versions(self, versions: tuple[ReplicatedVersion, ...]) -> SecretChange:
        return dataclasses.replace(self, new_versions=versions)


# --- codec ---------------------------------------------------------------------------------------------


def _set_ts(out: timestamp_pb2.Timestamp, value: datetime | None) -> None:
    if value is not None:
        out.FromDatetime(value.astimezone(UTC))


def _ts(msg: Any, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    value: datetime = getattr(msg, name).ToDatetime(tzinfo=UTC)
    return value


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def to_proto(change: SecretChange) -> rpb.SecretChange:
    snap = change.snapshot
    out = rpb.SecretChange(
        outbox_id=change.outbox_id,
        seq=change.seq,
        kind=change.kind,
        primary_arn=change.primary_arn,
        name=snap.name,
        primary_region=change.primary_region,
    )
    if change.kind == REMOVE:
        return out
    out.replica_kms_key_id = change.replica_kms_key_id or ""
    out.force_overwrite_replica_secret = change.force_overwrite
    if snap.description is not None:
        out.description = snap.description
    if snap.tags is not None:
        out.tags.SetInParent()
        for tag in snap.tags:
            out.tags.tags.add(key=tag.key, value=tag.value)
    if snap.rotation_enabled is not None:
        out.rotation_enabled = snap.rotation_enabled
    if snap.rotation_lambda_arn is not None:
        out.rotation_lambda_arn = snap.rotation_lambda_arn
    rules = snap.rotation_rules
    if rules is not None:
        out.rotation_rules.SetInParent()
        if rules.automatically_after_days is not None:
            out.rotation_rules.automatically_after_days = rules.automatically_after_days
        if rules.duration is not None:
            out.rotation_rules.duration = rules.duration
        if rules.schedule_expression is not None:
            out.rotation_rules.schedule_expression = rules.schedule_expression
    _set_ts(out.last_rotated_date, snap.last_rotated)
    _set_ts(out.next_rotation_date, snap.next_rotation)
    _set_ts(out.created_date, snap.created)
    _set_ts(out.last_changed_date, snap.last_changed)
    _set_ts(out.deleted_date, snap.deleted)
    _set_ts(out.deletion_date, snap.deletion_date)
    for label, vid in sorted(snap.labels.items()):
        out.version_ids_to_stages[vid].stages.append(label)
    out.version_ids.extend(snap.version_ids)
    for nv in change.new_versions:
        version = out.new_versions.add(version_id=nv.version_id)
        _set_ts(version.created_date, nv.created_date)
        if nv.value is None:
            continue
        if nv.value.kind == "string":
            version.secret_string = nv.value.text
        else:
            version.secret_binary = nv.value.data
    return out


def from_proto(msg: rpb.SecretChange) -> SecretChange:
    rules = None
    if msg.HasField("rotation_rules"):
        r = msg.rotation_rules
        rules = RotationRules(
            automatically_after_days=_opt(r, "automatically_after_days"),
            duration=_opt(r, "duration"),
            schedule_expression=_opt(r, "schedule_expression"),
        )
    versions = []
    for nv in msg.new_versions:
        value: SecretValue | None = None
        if nv.HasField("secret_string"):
            value = SecretValue.of_string(nv.secret_string)
        elif nv.HasField("secret_binary"):
            value = SecretValue.of_binary(nv.secret_binary)
        versions.append(
            ReplicatedVersion(version_id=nv.version_id, created_date=_ts(nv, "created_date"), value=value)
        )
    snapshot = SecretSnapshot(
        name=msg.name,
        description=_opt(msg, "description"),
        tags=tuple(Tag(key=t.key, value=t.value) for t in msg.tags.tags) if msg.HasField("tags") else None,
        rotation_enabled=_opt(msg, "rotation_enabled"),
        rotation_lambda_arn=_opt(msg, "rotation_lambda_arn"),
        rotation_rules=rules,
        last_rotated=_ts(msg, "last_rotated_date"),
        next_rotation=_ts(msg, "next_rotation_date"),
        created=_ts(msg, "created_date"),
        last_changed=_ts(msg, "last_changed_date"),
        deleted=_ts(msg, "deleted_date"),
        deletion_date=_ts(msg, "deletion_date"),
        labels={label: vid for vid, st in msg.version_ids_to_stages.items() for label in st.stages},
        version_ids=tuple(msg.version_ids),
    )
    return SecretChange(
        outbox_id=msg.outbox_id,
        seq=msg.seq,
        kind=msg.kind,
        primary_arn=msg.primary_arn,
        primary_region=msg.primary_region,
        snapshot=snapshot,
        replica_kms_key_id=msg.replica_kms_key_id or None,
        force_overwrite=msg.force_overwrite_replica_secret,
        new_versions=tuple(versions),
    )

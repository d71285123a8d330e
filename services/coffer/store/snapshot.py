"""The one shape of a replicated change, and its one codec.

A replicated secret's change travels as a :class:`SecretChange`: which change (outbox id, change sequence,
upsert or remove), the secret's metadata after it (:class:`SecretSnapshot`, never a value; the outbox row
keeps it as JSON) and the versions the change created, with their plaintext values (these cross the mTLS
link between regions only; the receiver re-encrypts them at once). The sending side builds it from an
outbox row and encodes it with :func:`to_proto`; the receiving side decodes it with :func:`from_proto` and
applies it. A new replicated column of store.secrets is one field of SecretSnapshot (the outbox JSON and
the replica update follow from it) plus its proto field and two lines of the codec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from coffer.api.replication.v1 import replication_pb2 as rpb
from coffer.core.model import RotationRules, SecretValue, Tag
from coffer.store.records import rules_json, rules_of, tags_json, tags_of

UPSERT = "upsert"
REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class SecretSnapshot:
    """A secret's replicated metadata after one change. Every field between ``name`` and ``labels`` is a
    column of ``store.secrets`` of the same name, copied as it is: the outbox snapshot (JSON, keyed by
    column) and the replica's update are both built from :data:`COLUMNS`."""

    name: str
    description: str | None = None
    tags: tuple[Tag, ...] | None = None
    resource_policy: str | None = None
    rotation_enabled: bool | None = None
    rotation_lambda_arn: str | None = None
    rotation_rules: RotationRules | None = None
    last_rotated_at: datetime | None = None
    next_rotation_at: datetime | None = None
    #: Kept at the replica when absent (COALESCE), as are last_changed_at.
    created_at: datetime | None = None
    last_changed_at: datetime | None = None
    #: Set while the primary is scheduled for deletion.
    deleted_at: datetime | None = None
    deletion_date: datetime | None = None
    #: label -> version id (labelled versions only).
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Every version id after the change, oldest first (the receiver drops any other version).
    version_ids: tuple[str, ...] = ()

    @classmethod
    def from_outbox(cls, raw: Mapping[str, Any]) -> SecretSnapshot:
        """The JSON snapshot a replicated change's outbox row carries (built by the change's SQL)."""
        values: dict[str, Any] = {}
        for column in COLUMNS:
            value = raw.get(column)
            if column in JSON_COLUMNS:
                value = JSON_COLUMNS[column][0](value)
            elif column in TIMESTAMP_COLUMNS and value:
                value = datetime.fromisoformat(value).astimezone(UTC)
            values[column] = value
        return cls(
            name=raw["name"],
            labels=dict(raw.get("labels") or {}),
            version_ids=tuple(raw.get("versions") or ()),
            **values,
        )

    def column_values(self) -> list[Any]:
        """The values of :data:`COLUMNS`, in that order, as the secrets table stores them."""
        out: list[Any] = []
        for column in COLUMNS:
            value = getattr(self, column)
            out.append(JSON_COLUMNS[column][1](value) if column in JSON_COLUMNS else value)
        return out


#: The store.secrets columns a snapshot copies (the snapshot's fields between name and labels).
COLUMNS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(SecretSnapshot) if f.name not in ("name", "labels", "version_ids")
)
#: Columns kept as JSON: (from JSON, to JSON).
JSON_COLUMNS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "tags": (tags_of, tags_json),
    "rotation_rules": (rules_of, rules_json),
}
TIMESTAMP_COLUMNS = frozenset(
    {"last_rotated_at", "next_rotation_at", "created_at", "last_changed_at", "deleted_at", "deletion_date"}
)
#: Columns a replica keeps when the snapshot has none.
KEPT_WHEN_ABSENT = frozenset({"created_at", "last_changed_at"})


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


def fill_rotation_rules(out: Any, rules: RotationRules | None) -> None:
    """Set ``out.rotation_rules`` from the domain rules; absent fields stay unset."""
    if rules is None:
        return
    out.rotation_rules.SetInParent()
    if rules.automatically_after_days is not None:
        out.rotation_rules.automatically_after_days = rules.automatically_after_days
    if rules.duration is not None:
        out.rotation_rules.duration = rules.duration
    if rules.schedule_expression is not None:
        out.rotation_rules.schedule_expression = rules.schedule_expression


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
    if snap.resource_policy is not None:
        out.resource_policy = snap.resource_policy
    if snap.tags is not None:
        out.tags.SetInParent()
        for tag in snap.tags:
            out.tags.tags.add(key=tag.key, value=tag.value)
    if snap.rotation_enabled is not None:
        out.rotation_enabled = snap.rotation_enabled
    if snap.rotation_lambda_arn is not None:
        out.rotation_lambda_arn = snap.rotation_lambda_arn
    fill_rotation_rules(out, snap.rotation_rules)
    _set_ts(out.last_rotated_date, snap.last_rotated_at)
    _set_ts(out.next_rotation_date, snap.next_rotation_at)
    _set_ts(out.created_date, snap.created_at)
    _set_ts(out.last_changed_date, snap.last_changed_at)
    _set_ts(out.deleted_date, snap.deleted_at)
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
        resource_policy=_opt(msg, "resource_policy"),
        tags=tuple(Tag(key=t.key, value=t.value) for t in msg.tags.tags) if msg.HasField("tags") else None,
        rotation_enabled=_opt(msg, "rotation_enabled"),
        rotation_lambda_arn=_opt(msg, "rotation_lambda_arn"),
        rotation_rules=rules,
        last_rotated_at=_ts(msg, "last_rotated_date"),
        next_rotation_at=_ts(msg, "next_rotation_date"),
        created_at=_ts(msg, "created_date"),
        last_changed_at=_ts(msg, "last_changed_date"),
        deleted_at=_ts(msg, "deleted_date"),
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

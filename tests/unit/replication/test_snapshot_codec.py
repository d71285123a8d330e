"""store/snapshot.py: the one replicated-change shape and its codec. What the sending side encodes, the
receiving side decodes to the same change; the outbox JSON snapshot reads into the same shape."""

from __future__ import annotations

from datetime import UTC, datetime

from coffer.core.model import RotationRules, SecretValue, Tag
from coffer.store import snapshot
from coffer.store.snapshot import REMOVE, UPSERT, ReplicatedVersion, SecretChange, SecretSnapshot

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:app/db-AbC123"
T = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def full_change() -> SecretChange:
    return SecretChange(
        outbox_id=7,
        seq=3,
        kind=UPSERT,
        primary_arn=ARN,
        primary_region="local-1",
        snapshot=SecretSnapshot(
            name="app/db",
            description="d",
            tags=(Tag(key="team", value="pay"),),
            resource_policy='{"Version":"2012-10-17","Statement":[]}',
            rotation_enabled=True,
            rotation_lambda_arn="random-value",
            rotation_rules=RotationRules(automatically_after_days=7, duration="2h", schedule_expression=None),
            last_rotated_at=T,
            next_rotation_at=T,
            created_at=T,
            last_changed_at=T,
            deleted_at=T,
            deletion_date=T,
            labels={"AWSCURRENT": "v2", "AWSPREVIOUS": "v1", "stable": "v1"},
            version_ids=("v1", "v2", "v3"),
        ),
        replica_kms_key_id="alias/r2",
        force_overwrite=True,
        new_versions=(
            ReplicatedVersion("v2", T, SecretValue.of_string("s3cr3t")),
            ReplicatedVersion("v3", T, SecretValue.of_binary(b"\x00\xff")),
            ReplicatedVersion("v4", T, None),
        ),
    )


def test_round_trip_of_every_field() -> None:
    change = full_change()
    assert snapshot.from_proto(snapshot.to_proto(change)) == change


def test_round_trip_of_an_empty_snapshot_keeps_absent_fields_absent() -> None:
    change = SecretChange(
        outbox_id=1,
        seq=1,
        kind=UPSERT,
        primary_arn=ARN,
        primary_region="local-1",
        snapshot=SecretSnapshot("x"),
    )
    msg = snapshot.to_proto(change)
    assert not msg.HasField("tags") and not msg.HasField("description") and not msg.HasField("created_date")
    assert not msg.HasField("resource_policy")
    assert snapshot.from_proto(msg) == change


def test_remove_carries_only_the_name() -> None:
    change = full_change()
    removed = SecretChange(
        outbox_id=8, seq=4, kind=REMOVE, primary_arn=ARN, primary_region="local-1", snapshot=change.snapshot
    )
    msg = snapshot.to_proto(removed)
    assert (msg.kind, msg.name, msg.replica_kms_key_id) == ("remove", "app/db", "")
    assert not msg.HasField("tags") and list(msg.version_ids) == [] and len(msg.new_versions) == 0
    back = snapshot.from_proto(msg)
    assert back.kind == REMOVE and back.name == "app/db" and back.snapshot == SecretSnapshot("app/db")


def test_outbox_json_reads_into_the_snapshot() -> None:
    raw = {
        "name": "app/db",
        "description": None,
        "tags": [{"Key": "team", "Value": "pay"}],
        "rotation_enabled": None,
        "rotation_lambda_arn": None,
        "rotation_rules": {"ScheduleExpression": "rate(4 hours)"},
        "last_rotated_at": None,
        "next_rotation_at": "2026-01-03T00:00:00+01:00",
        "created_at": "2026-01-02T03:04:05.123456+00:00",
        "last_changed_at": None,
        "deleted_at": None,
        "deletion_date": None,
        "labels": {"AWSCURRENT": "v1"},
        "versions": ["v1"],
    }
    snap = SecretSnapshot.from_outbox(raw)
    assert snap == SecretSnapshot(
        name="app/db",
        tags=(Tag(key="team", value="pay"),),
        rotation_rules=RotationRules(
            automatically_after_days=None, duration=None, schedule_expression="rate(4 hours)"
        ),
        next_rotation_at=datetime(2026, 1, 2, 23, 0, tzinfo=UTC),
        created_at=T,
        labels={"AWSCURRENT": "v1"},
        version_ids=("v1",),
    )

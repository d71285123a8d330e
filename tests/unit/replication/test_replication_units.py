"""Pure pieces of replication: COFFER_PEERS parsing, replica ARNs, the lag metric, and the SecretChange built
from an outbox row's metadata snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from coffer.settings import Peer, Settings, parse_peers
from coffer.store.replication import replica_arn_of
from coffer.store.replicator import LagStats, build_change
from coffer.store.sql.replication import OutboxRow

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:app/db-AbC123"


def test_peers_from_env() -> None:
    s = Settings.from_env(
        {
            "COFFER_PEERS": '[{"region": "local-2", "endpoint": "127.0.0.1:7454", "ca_file": "/x/ca.crt"}]',
            "COFFER_REPLICATION_INTERVAL_SECONDS": "0.5",
        }
    )
    assert s.peers == (Peer(region="local-2", endpoint="127.0.0.1:7454", ca_file=Path("/x/ca.crt")),)
    assert s.replication_interval_seconds == 0.5
    assert Settings.from_env({}).peers == ()
    assert Settings.from_env({}).replication_interval_seconds == 1.0


@pytest.mark.parametrize("raw", ['{"region": "x"}', '[{"region": "x"}]', "[1]"])
def test_bad_peers_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_peers(raw)


def test_replica_arn_swaps_only_the_region() -> None:
    assert replica_arn_of(ARN, "local-2") == ARN.replace(":local-1:", ":local-2:")
    assert replica_arn_of("arn:aws:secretsmanager:r:1:secret:a:b:c-XyZ123", "s").split(":")[3] == "s"


def test_lag_percentiles() -> None:
    lag = LagStats(size=1000)
    assert lag.percentile(50) is None
    for ms in range(1, 101):
        lag.add(ms / 1000)
    assert lag.percentile(50) == pytest.approx(0.050)
    assert lag.percentile(99) == pytest.approx(0.099)
    assert lag.summary()["count"] == 100
    lag.add(-1.0)  # clock skew never yields a negative lag
    assert min(lag._samples) == 0.0
    lag.reset()
    assert len(lag) == 0


def _row(**kw: object) -> OutboxRow:
    base: dict[str, object] = {
        "id": 7,
        "secret_id": 1,
        "secret_arn": ARN,
        "change_seq": 3,
        "event": "PutSecretValue",
        "version_id": "v2",
        "payload": {
            "snapshot": {
                "name": "app/db",
                "description": "d",
                "tags": [{"Key": "team", "Value": "pay"}],
                "rotation_enabled": True,
                "rotation_lambda_arn": None,
                "rotation_rules": {"AutomaticallyAfterDays": 7},
                "created_at": "2026-01-02T03:04:05.123456+00:00",
                "last_changed_at": "2026-01-03T00:00:00+00:00",
                "deleted_at": None,
                "deletion_date": None,
                "labels": {"AWSCURRENT": "v2", "AWSPREVIOUS": "v1", "stable": "v1"},
                "versions": ["v1", "v2"],
            }
        },
        "committed_at": datetime.now(UTC),
        "since_seq": 1,
        "kms_key_id": "alias/r2",
        "force_overwrite": False,
    }
    base.update(kw)
    return OutboxRow(**base)  # type: ignore[arg-type]


def test_build_change_from_snapshot() -> None:
    row = _row()
    assert not row.seed and not row.removed
    ch = build_change(row, region="local-1")
    assert (ch.kind, ch.seq, ch.outbox_id, ch.primary_arn, ch.primary_region) == (
        "upsert",
        3,
        7,
        ARN,
        "local-1",
    )
    assert (ch.name, ch.description, ch.replica_kms_key_id) == ("app/db", "d", "alias/r2")
    assert [(t.key, t.value) for t in ch.tags.tags] == [("team", "pay")]
    assert ch.rotation_enabled and ch.rotation_rules.automatically_after_days == 7
    assert not ch.HasField("rotation_lambda_arn") and not ch.HasField("deleted_date")
    assert ch.created_date.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert {v: sorted(s.stages) for v, s in ch.version_ids_to_stages.items()} == {
        "v2": ["AWSCURRENT"],
        "v1": ["AWSPREVIOUS", "stable"],
    }
    assert list(ch.version_ids) == ["v1", "v2"]
    assert len(ch.new_versions) == 0  # values are added by the replicator, never from the outbox


def test_seed_and_remove_rows() -> None:
    assert _row(since_seq=3).seed
    removed = _row(since_seq=None, kms_key_id=None)
    assert removed.removed
    ch = build_change(removed, region="local-1")
    assert ch.kind == "remove" and not ch.HasField("tags") and list(ch.version_ids) == []

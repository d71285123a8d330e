"""Which local secret a peer region's ForceOverwriteReplicaSecret may replace."""

from __future__ import annotations

from coffer.store.replication import may_overwrite
from coffer.store.sql.replication import ReplicaHead

REPLICA_ARN = "arn:aws:secretsmanager:local-2:000000000000:secret:shared-AbCdEf"


def head(
    arn: str, *, is_replica: bool, primary_region: str | None, overwritable: bool = False
) -> ReplicaHead:
    return ReplicaHead(
        id=1,
        arn=arn,
        name="shared",
        is_replica=is_replica,
        primary_region=primary_region,
        change_seq=3,
        kms_key_id=None,
        overwritable=overwritable,
    )


def test_local_primary_is_never_overwritten_unless_marked() -> None:
    own = "arn:aws:secretsmanager:local-2:000000000000:secret:shared-XyZ123"
    assert not may_overwrite(
        head(own, is_replica=False, primary_region=None), replica_arn=REPLICA_ARN, primary_region="local-1"
    )
    assert may_overwrite(
        head(own, is_replica=False, primary_region=None, overwritable=True),
        replica_arn=REPLICA_ARN,
        primary_region="local-1",
    )


def test_only_a_replica_of_the_same_lineage_is_replaced() -> None:
    older = "arn:aws:secretsmanager:local-2:000000000000:secret:shared-OldOne"
    assert may_overwrite(
        head(older, is_replica=True, primary_region="local-1"),
        replica_arn=REPLICA_ARN,
        primary_region="local-1",
    )
    # a replica of another region's secret
    assert not may_overwrite(
        head(older, is_replica=True, primary_region="local-3"),
        replica_arn=REPLICA_ARN,
        primary_region="local-1",
    )
    # another account's lineage
    other = "arn:aws:secretsmanager:local-2:111111111111:secret:shared-OldOne"
    assert not may_overwrite(
        head(other, is_replica=True, primary_region="local-1"),
        replica_arn=REPLICA_ARN,
        primary_region="local-1",
    )

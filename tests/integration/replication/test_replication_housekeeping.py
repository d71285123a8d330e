"""The outbox does not grow without bound: rows every peer acknowledged are trimmed, and beyond the cap even
rows a peer that is down never acknowledged are dropped; that peer's replicas are re-seeded and converge."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.store.housekeeping import Housekeeper
from coffer.store.repository import StoreRepository

from .test_replication_two_regions import in_sync, token, value, version_ids

if TYPE_CHECKING:
    from .conftest import Region, TwoRegions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def keeper(region: Region, *, max_rows: int) -> Housekeeper:
    """The store's housekeeper with no grace period (the store's loop keeps acknowledged rows 10 minutes)."""
    return Housekeeper(
        StoreRepository(region.runtime.pool),
        region.runtime.app.clock,
        peers=[p.region for p in region.settings.peers],
        outbox_max_rows=max_rows,
        outbox_keep_seconds=0,
        attempts_kept=100,
    )


async def outbox_rows(region: Region) -> int:
    return int(await region.db.fetchval("SELECT count(*) FROM store.outbox"))


async def test_acknowledged_rows_are_trimmed(regions: TwoRegions) -> None:
    r1 = regions.r1
    await r1.store.CreateSecret(
        pb.CreateSecretRequest(
            name="acked",
            client_request_token=token(),
            secret_string="v1",
            add_replica_regions=[pb.ReplicaRegion(region="local-2")],
        )
    )
    await r1.store.CreateSecret(pb.CreateSecretRequest(name="local-only", client_request_token=token()))
    for i in range(5):
        await r1.store.PutSecretValue(
            pb.PutSecretValueRequest(
                secret_id="acked", client_request_token=token(), secret_string=f"v{i + 2}"
            )
        )
    await in_sync(r1, "acked")
    assert await outbox_rows(r1) >= 7
    # the peer's cursor passes every row (the local-only ones too) once it is idle
    cursor = await r1.db.fetchval("SELECT last_outbox FROM store.replication_peers WHERE region = 'local-2'")
    assert cursor == await r1.db.fetchval("SELECT max(id) FROM store.outbox")

    result = await keeper(r1, max_rows=1000).run_once()
    assert result.outbox.acknowledged >= 7 and result.outbox.capped == 0
    assert await outbox_rows(r1) == 0
    # the store's own loop keeps acknowledged rows for its grace period: nothing young is trimmed
    await r1.store.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="acked", client_request_token=token(), secret_string="v7")
    )
    await in_sync(r1, "acked")
    assert (await r1.runtime.housekeeper.run_once()).outbox.acknowledged == 0
    assert await value(regions.r2, "acked") == "v7"


async def test_cap_drops_unacknowledged_rows_and_the_replica_still_converges(regions: TwoRegions) -> None:
    """The attack: a peer down for long while writes go on. The outbox stays under the cap; the rows the peer
    missed are gone, and once it is back its replica is re-seeded and ends equal to the primary."""
    r1, r2 = regions.r1, regions.r2
    await r1.store.CreateSecret(
        pb.CreateSecretRequest(
            name="lagging",
            client_request_token=token(),
            secret_string="v0",
            add_replica_regions=[pb.ReplicaRegion(region="local-2")],
        )
    )
    await in_sync(r1, "lagging")
    await r2.stop_store()
    for i in range(30):
        await r1.store.PutSecretValue(
            pb.PutSecretValueRequest(
                secret_id="lagging", client_request_token=token(), secret_string=f"v{i + 1}"
            )
        )
    await r1.store.UpdateSecret(pb.UpdateSecretRequest(secret_id="lagging", description="after the gap"))

    result = await keeper(r1, max_rows=5).run_once()
    assert result.outbox.capped > 0
    assert result.outbox.lagging == ("local-2",)
    assert result.reseeded == 1
    assert await outbox_rows(r1) <= 5 + 1  # the cap, plus the seed change written after it
    seed = await r1.db.fetchrow("SELECT event, change_seq FROM store.outbox ORDER BY id DESC LIMIT 1")
    assert seed["event"] == "ResyncReplica"
    assert (
        await r1.db.fetchval("SELECT since_seq FROM store.replication_status WHERE region = 'local-2'")
        == seed["change_seq"]
    )

    await r2.start_store()
    await in_sync(r1, "lagging", within=60)
    assert await value(r2, "lagging") == "v30"
    assert await version_ids(r2, "lagging") == await version_ids(r1, "lagging")
    d2 = await r2.store.DescribeSecret(pb.DescribeSecretRequest(secret_id="lagging"))
    assert d2.description == "after the gap"

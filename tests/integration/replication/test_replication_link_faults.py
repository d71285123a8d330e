"""The link to a peer region cut, then slow (issue 13), through a fault-injecting TCP proxy between local-1's
store and local-2's: writes go on in the primary while the link is cut — under ``make chaos`` a black hole
(connections open, nothing answers: every call needs its own deadline), in ``make test`` a partition
(connections refused) — and then while each chunk is delayed 500 ms. The replication
status says Failed with a reason during the cut; afterwards replication catches up in order, each change
once, and the status is InSync. ``COFFER_CHAOS=long`` (``make chaos``) cuts for a minute; ``make test`` for
a few seconds."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.testing.wait import eventually

from .test_replication_two_regions import describe, in_sync, status_of, value, version_ids

if TYPE_CHECKING:
    from tests.integration.replication.conftest import TwoRegions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LONG = os.environ.get("COFFER_CHAOS", "") == "long"
CUT_SECONDS = 60.0 if LONG else 4.0
SLOW_SECONDS = 0.5


@pytest.mark.parametrize("peer_link", [True])
async def test_a_cut_then_slow_link_catches_up_in_order(regions: TwoRegions) -> None:
    r1, r2, link = regions.r1, regions.r2, regions.link
    assert link is not None
    created = await r1.store.CreateSecret(
        pb.CreateSecretRequest(name="linked", add_replica_regions=[pb.ReplicaRegion(region="local-2")])
    )
    await in_sync(r1, "linked")
    assert link.accepted > 0  # replication really goes through the proxy

    written: list[str] = []

    async def write(n: int) -> None:
        for _ in range(n):
            t = str(uuid.uuid4())
            await r1.store.PutSecretValue(
                pb.PutSecretValueRequest(
                    secret_id="linked", client_request_token=t, secret_string=f"v{len(written) + 1}"
                )
            )
            written.append(t)

    if LONG:
        link.drop()  # the cut: a black hole (open connections, nothing answers: deadlines must end calls)
        link.reset()  # connections made before the cut are gone too; new ones hang
    else:
        link.partition()  # the short run: refused at once (a black hole costs a whole deadline per try)
    cut_at = time.monotonic()
    await write(10)

    async def status() -> dict[str, tuple[str, str]]:
        return status_of(await describe(r1, "linked"))

    failed = await eventually(status, until=lambda st: st["local-2"][0] == "Failed", timeout=CUT_SECONDS + 60)
    reason = failed["local-2"][1]
    assert reason.startswith("Region local-2 is unreachable or failed: its store "), reason
    assert "127.0.0.1" not in reason and "ipv4" not in reason  # no address inside the deployment
    while time.monotonic() - cut_at < CUT_SECONDS:  # one write a second: under the 100 versions a secret has
        await write(1)
        assert (await status())["local-2"][0] == "Failed"
        await asyncio.sleep(1.0)

    link.delay(SLOW_SECONDS)  # back, but slow
    await write(5)
    await in_sync(r1, "linked", within=120)
    link.passthrough()

    assert await value(r2, "linked") == f"v{len(written)}"
    primary = await version_ids(r1, "linked")
    replica = await version_ids(r2, "linked")
    assert replica == primary
    assert [vid for vid, _ in replica][-len(written) :] == written  # every write, in order
    counts = await r2.db.fetch("SELECT version_id, count(*) AS n FROM store.versions GROUP BY version_id")
    assert all(r["n"] == 1 for r in counts)  # none twice
    seqs = await r1.db.fetchval("SELECT change_seq FROM store.secrets WHERE arn = $1", created.arn)
    assert await r2.db.fetchval("SELECT change_seq FROM store.secrets WHERE name = 'linked'") == seqs
    assert status_of(await describe(r1, "linked")) == {"local-2": ("InSync", "")}
    print(
        f"\nchaos/peer link: {len(written)} writes over a {CUT_SECONDS:.0f} s cut and a {SLOW_SECONDS} s"
        " delay;"
        f" status during the cut: {failed['local-2'][0]} ({failed['local-2'][1]!r}); InSync after"
    )

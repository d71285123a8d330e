"""Cross-region replication between two in-process regions (issue 4): each has its own database, CA, KMS (own
root key) and store; the stores are each other's peers and replicate over mTLS."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.api.replication.v1 import replication_pb2 as rpb
from coffer.api.replication.v1 import replication_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.api.store.v1 import store_pb2_grpc
from coffer.core import errors
from coffer.store.replication import OVERWRITE_REFUSED_MESSAGE
from coffer.testing.wait import eventually

if TYPE_CHECKING:
    from tests.integration.replication.conftest import Region, TwoRegions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: How long replication may take to reach a state.
WAIT = 30.0
REPLICA_ERROR = "Operation not permitted on a replica secret. Call must be made in primary secret's region."


def token() -> str:
    return str(uuid.uuid4())


def stages(resp: Any) -> dict[str, list[str]]:
    return {vid: sorted(s.stages) for vid, s in resp.version_ids_to_stages.items()}


def status_of(resp: pb.DescribeSecretResponse) -> dict[str, tuple[str, str]]:
    return {s.region: (s.status, s.status_message) for s in resp.replication_status}


async def describe(region: Region, secret_id: str) -> pb.DescribeSecretResponse:
    resp: pb.DescribeSecretResponse = await region.store.DescribeSecret(
        pb.DescribeSecretRequest(secret_id=secret_id)
    )
    return resp


async def in_sync(r1: Region, secret_id: str, region: str = "local-2", within: float = WAIT) -> None:
    async def probe() -> dict[str, tuple[str, str]]:
        return status_of(await describe(r1, secret_id))

    await eventually(probe, until=lambda st: st.get(region, ("",))[0] == "InSync", timeout=within)


async def version_ids(region: Region, secret_id: str) -> list[tuple[str, list[str]]]:
    resp = await region.store.ListSecretVersionIds(
        pb.ListSecretVersionIdsRequest(secret_id=secret_id, include_deprecated=True, max_results=100)
    )
    out = [(v.version_id, sorted(v.version_stages)) for v in resp.versions]
    while resp.HasField("next_token"):
        resp = await region.store.ListSecretVersionIds(
            pb.ListSecretVersionIdsRequest(
                secret_id=secret_id, include_deprecated=True, max_results=100, next_token=resp.next_token
            )
        )
        out += [(v.version_id, sorted(v.version_stages)) for v in resp.versions]
    return out


async def value(region: Region, secret_id: str, **kw: str) -> str:
    resp = await region.store.GetSecretValue(pb.GetSecretValueRequest(secret_id=secret_id, **kw))
    text: str = resp.secret_string
    return text


async def test_replica_has_same_values_versions_labels_under_its_own_key(regions: TwoRegions) -> None:
    r1, r2 = regions.r1, regions.r2
    t1 = token()
    created = await r1.store.CreateSecret(
        pb.CreateSecretRequest(
            name="app/db",
            client_request_token=t1,
            secret_string="first",
            description="the db",
            tags=[pb.Tag(key="team", value="payments")],
            add_replica_regions=[pb.ReplicaRegion(region="local-2")],
        )
    )
    assert created.arn.startswith("arn:aws:secretsmanager:local-1:")
    assert [(s.region, s.status) for s in created.replication_status] in (
        [("local-2", "InProgress")],
        [("local-2", "InSync")],
    )
    replica_arn = created.arn.replace(":local-1:", ":local-2:")
    await in_sync(r1, created.arn)

    # Readable in region 2: same value, versions, labels, metadata; PrimaryRegion shown.
    assert await value(r2, "app/db") == "first"
    d1, d2 = await describe(r1, "app/db"), await describe(r2, "app/db")
    assert d2.arn == replica_arn
    assert (d1.primary_region, d2.primary_region) == ("local-1", "local-1")
    assert stages(d2) == stages(d1) == {t1: ["AWSCURRENT"]}
    assert (d2.description, [(t.key, t.value) for t in d2.tags.tags]) == ("the db", [("team", "payments")])
    assert status_of(d1) == {"local-2": ("InSync", "")}
    # The change streams of both regions (WatchSecrets): the primary's replica status went InSync; the
    # replica region saw the replicated version arrive.
    primary_events = await r1.db.fetch(
        "SELECT kind, detail FROM store.secret_events WHERE arn = $1 ORDER BY position", created.arn
    )
    assert ("ReplicationStatusChanged", "local-2: InSync") in [tuple(r) for r in primary_events]
    replica_events = await r2.db.fetch(
        "SELECT kind, version_id, detail FROM store.secret_events WHERE arn = $1 ORDER BY position",
        replica_arn,
    )
    assert tuple(replica_events[0]) == ("VersionCreated", t1, "replicated from local-1")
    listed = await r2.store.ListSecrets(pb.ListSecretsRequest())
    assert [(s.name, s.primary_region) for s in listed.secret_list] == [("app/db", "local-1")]

    # Encrypted under region 2's key: region 2's KMS unwraps the data key, region 1's refuses it.
    row = await r2.db.fetchrow(
        "SELECT v.wrapped_key, v.kms_key_arn FROM store.versions v JOIN store.secrets s ON s.id = v.secret_id"
        " WHERE s.arn = $1 AND v.version_id = $2",
        replica_arn,
        t1,
    )
    assert row["kms_key_arn"].startswith("arn:aws:kms:local-2:")
    context = {"SecretARN": replica_arn, "SecretVersionId": t1}
    ok = await r2.kms.Decrypt(
        kms_pb2.DecryptRequest(ciphertext_blob=row["wrapped_key"], encryption_context=context)
    )
    assert ok.key_id.startswith("arn:aws:kms:local-2:") and len(ok.plaintext) == 32
    with pytest.raises(errors.CofferError):
        await r1.kms.Decrypt(
            kms_pb2.DecryptRequest(ciphertext_blob=row["wrapped_key"], encryption_context=context)
        )
    primary_row = await r1.db.fetchrow(
        "SELECT v.ciphertext, v.kms_key_arn FROM store.versions v WHERE v.version_id = $1", t1
    )
    assert primary_row["kms_key_arn"].startswith("arn:aws:kms:local-1:")
    replica_ct = await r2.db.fetchval("SELECT ciphertext FROM store.versions WHERE version_id = $1", t1)
    assert replica_ct != primary_row["ciphertext"] and b"first" not in replica_ct

    # A put, then a rotation-like sequence (AWSPENDING, then AWSCURRENT moved to it), and metadata changes.
    t2, t3 = token(), token()
    await r1.store.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="app/db", client_request_token=t2, secret_string="second")
    )
    await r1.store.PutSecretValue(
        pb.PutSecretValueRequest(
            secret_id="app/db",
            client_request_token=t3,
            secret_string="rotated",
            version_stages=["AWSPENDING"],
        )
    )
    await r1.store.UpdateSecretVersionStage(
        pb.UpdateSecretVersionStageRequest(
            secret_id="app/db", version_stage="AWSCURRENT", move_to_version_id=t3, remove_from_version_id=t2
        )
    )
    await r1.store.UpdateSecretVersionStage(
        pb.UpdateSecretVersionStageRequest(
            secret_id="app/db", version_stage="AWSPENDING", remove_from_version_id=t3
        )
    )
    await r1.store.UpdateSecretVersionStage(
        pb.UpdateSecretVersionStageRequest(secret_id="app/db", version_stage="stable", move_to_version_id=t1)
    )
    await r1.store.UpdateSecret(pb.UpdateSecretRequest(secret_id="app/db", description="still the db"))
    await r1.store.TagResource(
        pb.TagResourceRequest(secret_id="app/db", tags=[pb.Tag(key="env", value="prod")])
    )
    policy = (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*",'
        '"Action":"secretsmanager:DeleteSecret","Resource":"*"}]}'
    )
    await r1.store.PutResourcePolicy(pb.PutResourcePolicyRequest(secret_id="app/db", resource_policy=policy))
    await in_sync(r1, created.arn)
    assert await value(r2, "app/db") == "rotated"
    assert await value(r2, "app/db", version_stage="AWSPREVIOUS") == "second"
    assert await value(r2, "app/db", version_stage="stable") == "first"
    d1, d2 = await describe(r1, "app/db"), await describe(r2, "app/db")
    assert stages(d2) == stages(d1)
    assert stages(d1) == {t1: ["stable"], t2: ["AWSPREVIOUS"], t3: ["AWSCURRENT"]}
    assert d2.description == "still the db"
    assert sorted((t.key, t.value) for t in d2.tags.tags) == [("env", "prod"), ("team", "payments")]
    assert await version_ids(r2, "app/db") == await version_ids(r1, "app/db")
    # the resource policy replicates with the secret
    assert (
        await r2.store.GetResourcePolicy(pb.GetResourcePolicyRequest(secret_id="app/db"))
    ).resource_policy == policy

    # Writes on the replica fail with AWS's error and change nothing.
    before = await r2.db.fetch("SELECT * FROM store.secrets ORDER BY id")
    before_versions = await r2.db.fetchval("SELECT count(*) FROM store.versions")
    attempts = [
        r2.store.PutSecretValue(
            pb.PutSecretValueRequest(secret_id="app/db", client_request_token=token(), secret_string="x")
        ),
        r2.store.UpdateSecret(pb.UpdateSecretRequest(secret_id="app/db", description="x")),
        r2.store.TagResource(pb.TagResourceRequest(secret_id="app/db", tags=[pb.Tag(key="a", value="b")])),
        r2.store.UntagResource(pb.UntagResourceRequest(secret_id="app/db", tag_keys=["team"])),
        r2.store.PutResourcePolicy(pb.PutResourcePolicyRequest(secret_id="app/db", resource_policy=policy)),
        r2.store.DeleteResourcePolicy(pb.DeleteResourcePolicyRequest(secret_id="app/db")),
        r2.store.UpdateSecretVersionStage(
            pb.UpdateSecretVersionStageRequest(secret_id="app/db", version_stage="x", move_to_version_id=t1)
        ),
        r2.store.DeleteSecret(pb.DeleteSecretRequest(secret_id="app/db")),
        r2.store.RestoreSecret(pb.RestoreSecretRequest(secret_id="app/db")),
        r2.store.RotateSecret(
            pb.RotateSecretRequest(secret_id="app/db", client_request_token=token(), rotate_immediately=True)
        ),
        r2.store.ReplicateSecretToRegions(
            pb.ReplicateSecretToRegionsRequest(
                secret_id="app/db", add_replica_regions=[pb.ReplicaRegion(region="local-3")]
            )
        ),
        r2.store.RemoveRegionsFromReplication(
            pb.RemoveRegionsFromReplicationRequest(secret_id="app/db", remove_replica_regions=["local-1"])
        ),
    ]
    for call in attempts:
        with pytest.raises(errors.InvalidParameter) as exc:
            await call
        assert exc.value.code == "InvalidParameterException"
        assert exc.value.message == REPLICA_ERROR
    assert await r2.db.fetch("SELECT * FROM store.secrets ORDER BY id") == before
    assert await r2.db.fetchval("SELECT count(*) FROM store.versions") == before_versions

    # The primary cannot be deleted while it has replicas.
    with pytest.raises(errors.InvalidParameter) as exc:
        await r1.store.DeleteSecret(
            pb.DeleteSecretRequest(secret_id="app/db", force_delete_without_recovery=True)
        )
    assert (
        exc.value.message
        == f"You can't delete secret {created.arn} that still has replica regions [local-2]."
    )

    # Replicating into our own region is refused.
    with pytest.raises(errors.InvalidParameter) as exc:
        await r1.store.ReplicateSecretToRegions(
            pb.ReplicateSecretToRegionsRequest(
                secret_id="app/db", add_replica_regions=[pb.ReplicaRegion(region="local-1")]
            )
        )
    assert exc.value.message == "Invalid replica region."


async def test_peer_down_backlog_drains_in_order_none_twice(regions: TwoRegions) -> None:
    r1, r2 = regions.r1, regions.r2
    created = await r1.store.CreateSecret(
        # No value yet: the 100 writes below are its 100 versions (the most a secret may have).
        pb.CreateSecretRequest(name="busy", add_replica_regions=[pb.ReplicaRegion(region="local-2")])
    )
    await in_sync(r1, "busy")
    await r2.stop_store()

    written = []
    for i in range(100):
        t = token()
        written.append(t)
        await r1.store.PutSecretValue(
            pb.PutSecretValueRequest(secret_id="busy", client_request_token=t, secret_string=f"v{i + 1}")
        )

    async def probe() -> dict[str, tuple[str, str]]:
        return status_of(await describe(r1, "busy"))

    failed = await eventually(probe, until=lambda st: st["local-2"][0] == "Failed", timeout=30)
    assert "local-2" in failed["local-2"][1] and "unreachable" in failed["local-2"][1]

    await r2.start_store()
    await in_sync(r1, "busy", within=60)
    assert await value(r2, "busy") == "v100"
    primary = await version_ids(r1, "busy")
    replica = await version_ids(r2, "busy")
    assert replica == primary
    assert [vid for vid, _ in replica] == written  # all 100, in order
    # None twice: every version once, and the replica applied each change sequence exactly once.
    counts = await r2.db.fetch("SELECT version_id, count(*) AS n FROM store.versions GROUP BY version_id")
    assert all(r["n"] == 1 for r in counts)
    seqs = await r1.db.fetchval("SELECT change_seq FROM store.secrets WHERE arn = $1", created.arn)
    assert await r2.db.fetchval("SELECT change_seq FROM store.secrets WHERE name = 'busy'") == seqs
    assert status_of(await describe(r1, "busy")) == {"local-2": ("InSync", "")}


async def test_name_clash_without_and_with_force(regions: TwoRegions) -> None:
    r1, r2 = regions.r1, regions.r2
    await r2.store.CreateSecret(
        pb.CreateSecretRequest(name="shared", client_request_token=token(), secret_string="region-2 own")
    )
    created = await r1.store.CreateSecret(
        pb.CreateSecretRequest(
            name="shared",
            client_request_token=token(),
            secret_string="from region 1",
            add_replica_regions=[pb.ReplicaRegion(region="local-2")],
        )
    )

    async def probe() -> dict[str, tuple[str, str]]:
        return status_of(await describe(r1, "shared"))

    st = await eventually(probe, until=lambda s: s["local-2"][0] == "Failed", timeout=WAIT)
    assert st["local-2"] == ("Failed", "Secret with this name already exists in this region")
    assert await value(r2, "shared") == "region-2 own"
    own = await describe(r2, "shared")
    assert not own.HasField("primary_region")
    # It stays Failed (no retries against a refusal) after more writes.
    await r1.store.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="shared", client_request_token=token(), secret_string="again")
    )
    await r1.store.TagResource(pb.TagResourceRequest(secret_id="shared", tags=[pb.Tag(key="k", value="v")]))
    assert status_of(await describe(r1, "shared"))["local-2"][0] == "Failed"

    # The attack: force-overwrite from the peer region would replace region 2's own primary secret. Refused,
    # with the reason in the replication status, and the local secret is untouched.
    forced = pb.ReplicateSecretToRegionsRequest(
        secret_id=created.arn,
        add_replica_regions=[pb.ReplicaRegion(region="local-2")],
        force_overwrite_replica_secret=True,
    )
    await r1.store.ReplicateSecretToRegions(forced)
    st = await eventually(probe, until=lambda s: s["local-2"][0] == "Failed", timeout=WAIT)
    assert st["local-2"] == ("Failed", OVERWRITE_REFUSED_MESSAGE)
    assert await value(r2, "shared") == "region-2 own"
    assert not (await describe(r2, "shared")).HasField("primary_region")

    # Once region 2's operator marks its secret overwritable, the same force-overwrite replaces it.
    await r2.db.execute("UPDATE store.secrets SET replication_overwritable = true WHERE name = 'shared'")
    resp = await r1.store.ReplicateSecretToRegions(forced)
    assert resp.arn == created.arn
    assert {s.region for s in resp.replication_status} == {"local-2"}
    await in_sync(r1, "shared")
    assert await value(r2, "shared") == "again"
    d2 = await describe(r2, "shared")
    assert d2.arn == created.arn.replace(":local-1:", ":local-2:") and d2.primary_region == "local-1"
    assert await version_ids(r2, "shared") == await version_ids(r1, "shared")

    # An unknown region: the call succeeds, that region reports Failed.
    resp = await r1.store.ReplicateSecretToRegions(
        pb.ReplicateSecretToRegionsRequest(
            secret_id="shared", add_replica_regions=[pb.ReplicaRegion(region="local-9")]
        )
    )
    assert status_of(resp)["local-9"][0] == "Failed"


async def test_remove_regions_and_stop_replication(regions: TwoRegions) -> None:
    r1, r2 = regions.r1, regions.r2
    for name in ("gone", "promoted"):
        await r1.store.CreateSecret(
            pb.CreateSecretRequest(
                name=name,
                client_request_token=token(),
                secret_string=f"{name} value",
                add_replica_regions=[pb.ReplicaRegion(region="local-2")],
            )
        )
        await in_sync(r1, name)

    # RemoveRegionsFromReplication deletes the replica (no recovery window).
    resp = await r1.store.RemoveRegionsFromReplication(
        pb.RemoveRegionsFromReplicationRequest(secret_id="gone", remove_replica_regions=["local-2"])
    )
    assert list(resp.replication_status) == []

    async def exists_in_r2() -> bool:
        try:
            await describe(r2, "gone")
        except errors.NotFound:
            return False
        return True

    await eventually(exists_in_r2, until=lambda present: not present, timeout=WAIT)
    # Now the primary can be deleted.
    await r1.store.DeleteSecret(pb.DeleteSecretRequest(secret_id="gone", force_delete_without_recovery=True))

    # StopReplicationToReplica (in the replica's region): standalone, writable, same ARN; primary detached.
    with pytest.raises(errors.InvalidRequest):
        await r1.store.StopReplicationToReplica(pb.StopReplicationToReplicaRequest(secret_id="promoted"))
    before = await describe(r2, "promoted")
    stopped = await r2.store.StopReplicationToReplica(
        pb.StopReplicationToReplicaRequest(secret_id="promoted")
    )
    assert stopped.arn == before.arn
    after = await describe(r2, "promoted")
    assert not after.HasField("primary_region")
    await r2.store.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="promoted", client_request_token=token(), secret_string="mine now")
    )
    assert await value(r2, "promoted") == "mine now"
    assert status_of(await describe(r1, "promoted")) == {}
    # Further primary changes no longer flow there.
    await r1.store.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="promoted", client_request_token=token(), secret_string="primary")
    )
    await asyncio.sleep(0.5)
    assert await value(r2, "promoted") == "mine now"


async def test_peer_ca_cannot_pose_as_our_services(regions: TwoRegions) -> None:
    r1, r2 = regions.r1, regions.r2
    await r1.store.CreateSecret(
        pb.CreateSecretRequest(name="s", client_request_token=token(), secret_string="v")
    )
    # Region 2's CA signed a "gateway" certificate; region 1's store trusts that CA, but only for
    # replicator.local-2.
    fake_gateway = store_pb2_grpc.SecretStoreServiceStub(r1.channel("gateway", pki=r2.pki))
    with pytest.raises(errors.AccessDenied):
        await fake_gateway.GetSecretValue(pb.GetSecretValueRequest(secret_id="s"))
    fake_rotation = store_pb2_grpc.SecretStoreServiceStub(r1.channel("rotation", pki=r2.pki))
    with pytest.raises(errors.AccessDenied):
        await fake_rotation.DescribeSecret(pb.DescribeSecretRequest(secret_id="s"))
    # The peer's replicator may call only the ReplicationService, and only for its own region.
    replicator = r1.channel("replicator.local-2", pki=r2.pki)
    with pytest.raises(errors.AccessDenied):
        await store_pb2_grpc.SecretStoreServiceStub(replicator).GetSecretValue(
            pb.GetSecretValueRequest(secret_id="s")
        )
    stub = replication_pb2_grpc.ReplicationServiceStub(replicator)
    with pytest.raises(errors.AccessDenied):
        await stub.ApplyChanges(rpb.ApplyChangesRequest(source_region="local-3"))
    assert list((await stub.ApplyChanges(rpb.ApplyChangesRequest(source_region="local-2"))).results) == []
    # Our own replicator identity is not a peer of ourselves.
    own = replication_pb2_grpc.ReplicationServiceStub(r1.channel("replicator.local-1"))
    with pytest.raises(errors.AccessDenied):
        await own.ApplyChanges(rpb.ApplyChangesRequest(source_region="local-1"))
    # Our own gateway still works.
    assert (await r1.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="s"))).secret_string == "v"


def _ms(seconds: object) -> str:
    assert isinstance(seconds, float)
    return f"{seconds * 1000:.1f} ms"


async def test_replication_lag_for_a_burst(regions: TwoRegions) -> None:
    r1, r2 = regions.r1, regions.r2
    names = [f"burst/{i}" for i in range(4)]
    for name in names:
        await r1.store.CreateSecret(
            pb.CreateSecretRequest(name=name, add_replica_regions=[pb.ReplicaRegion(region="local-2")])
        )
        await in_sync(r1, name)
    # One write at a time (each waits until the replica has it): the lag of an otherwise idle link.
    lag = r1.runtime.replicator.lag
    lag.reset()
    for i in range(20):
        await r1.store.PutSecretValue(
            pb.PutSecretValueRequest(secret_id=names[0], client_request_token=token(), secret_string=f"s{i}")
        )
        await in_sync(r1, names[0])
    single = lag.summary()
    assert single["count"] == 20
    print(f"\nreplication lag, one write at a time: p50 {_ms(single['p50_s'])}, p99 {_ms(single['p99_s'])}")

    lag.reset()
    per_secret = 40
    n = per_secret * len(names)

    async def writer(name: str) -> None:
        for i in range(per_secret):
            await r1.store.PutSecretValue(
                pb.PutSecretValueRequest(
                    secret_id=name, client_request_token=token(), secret_string=str(i + 1)
                )
            )

    started = time.perf_counter()
    await asyncio.gather(*(writer(name) for name in names))
    write_s = time.perf_counter() - started
    for name in names:
        await in_sync(r1, name, within=60)
        assert await value(r2, name) == str(per_secret)
    summary = r1.runtime.replicator.lag.summary()
    assert summary["count"] == n
    p50, p99 = summary["p50_s"], summary["p99_s"]
    assert isinstance(p50, float) and isinstance(p99, float) and 0 <= p50 <= p99
    print(
        f"replication lag over a burst of {n} PutSecretValue on {len(names)} secrets"
        f" ({n / write_s:.0f} writes/s): p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )


async def test_replica_kms_key_per_region(regions: TwoRegions) -> None:
    r1, r2 = regions.r1, regions.r2
    key = (await r2.kms.CreateKey(kms_pb2.CreateKeyRequest(description="region 2 key"))).key_metadata
    await r2.kms.CreateAlias(kms_pb2.CreateAliasRequest(alias_name="alias/r2", target_key_id=key.key_id))
    created = await r1.store.CreateSecret(
        pb.CreateSecretRequest(
            name="keyed",
            client_request_token=token(),
            secret_string="k",
            add_replica_regions=[pb.ReplicaRegion(region="local-2", kms_key_id="alias/r2")],
        )
    )
    await in_sync(r1, "keyed")
    d1, d2 = await describe(r1, "keyed"), await describe(r2, "keyed")
    assert [(s.region, s.kms_key_id) for s in d1.replication_status] == [("local-2", "alias/r2")]
    assert d2.kms_key_id == "alias/r2" and not d1.HasField("kms_key_id")
    arns = await r2.db.fetch("SELECT kms_key_arn, default_key FROM store.versions")
    assert [(r["kms_key_arn"], r["default_key"]) for r in arns] == [(key.arn, False)]
    assert await value(r2, "keyed") == "k"

    # Added again with the default key: the replica's current version is re-encrypted under it.
    await r1.store.ReplicateSecretToRegions(
        pb.ReplicateSecretToRegionsRequest(
            secret_id="keyed", add_replica_regions=[pb.ReplicaRegion(region="local-2")]
        )
    )
    await in_sync(r1, "keyed")
    assert not (await describe(r2, "keyed")).HasField("kms_key_id")
    row = await r2.db.fetchrow("SELECT kms_key_arn, default_key FROM store.versions")
    assert row["default_key"] and row["kms_key_arn"] != key.arn
    assert row["kms_key_arn"].startswith("arn:aws:kms:local-2:")
    assert await value(r2, "keyed") == "k"

    # A key that does not exist in region 2: that region reports Failed, with the reason.
    await r1.store.CreateSecret(
        pb.CreateSecretRequest(
            name="badkey",
            client_request_token=token(),
            secret_string="b",
            add_replica_regions=[pb.ReplicaRegion(region="local-2", kms_key_id="alias/nope")],
        )
    )

    async def probe() -> dict[str, tuple[str, str]]:
        return status_of(await describe(r1, "badkey"))

    st = await eventually(probe, until=lambda s: s["local-2"][0] == "Failed", timeout=WAIT)
    assert "alias/nope" in st["local-2"][1] or "not found" in st["local-2"][1].lower()
    assert created.arn != ""


async def test_unreadable_secret_fails_alone(regions: TwoRegions) -> None:
    """A secret whose value the primary can't decrypt any more (its key was disabled) turns Failed with the
    reason; it does not hold back the other secrets replicated to the same region."""
    r1, r2 = regions.r1, regions.r2
    key = (await r1.kms.CreateKey(kms_pb2.CreateKeyRequest(description="soon disabled"))).key_metadata
    for name, kms_key in (("locked", key.key_id), ("free", None)):
        request = pb.CreateSecretRequest(
            name=name,
            client_request_token=token(),
            secret_string=f"{name} 1",
            add_replica_regions=[pb.ReplicaRegion(region="local-2")],
        )
        if kms_key is not None:
            request.kms_key_id = kms_key
        await r1.store.CreateSecret(request)
        await in_sync(r1, name)
    await r2.stop_store()
    await r1.store.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="locked", client_request_token=token(), secret_string="locked 2")
    )
    await r1.kms.DisableKey(kms_pb2.DisableKeyRequest(key_id=key.key_id))
    await r1.store.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="free", client_request_token=token(), secret_string="free 2")
    )
    await r2.start_store()
    await in_sync(r1, "free", within=60)
    assert await value(r2, "free") == "free 2"

    async def probe() -> dict[str, tuple[str, str]]:
        return status_of(await describe(r1, "locked"))

    st = await eventually(
        probe, until=lambda s: s["local-2"][0] == "Failed" and "can't read" in s["local-2"][1], timeout=WAIT
    )
    assert "disabled" in st["local-2"][1]
    assert await value(r2, "locked") == "locked 1"

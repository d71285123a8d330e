"""Secrets under customer-managed keys: resolution of every KmsKeyId form at create/update, what Describe and
ListSecretVersionIds show, re-encryption on a key change, and the data-key cache following key state."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.core import errors
from coffer.testing.wait import eventually

if TYPE_CHECKING:
    from tests.integration.store.conftest import StoreStack


def token() -> str:
    return str(uuid.uuid4())


async def new_key(stack: StoreStack, alias: str | None = None) -> tuple[str, str]:
    md = (await stack.kms.CreateKey(kms_pb2.CreateKeyRequest(description="cmk"))).key_metadata
    if alias:
        await stack.kms.CreateAlias(kms_pb2.CreateAliasRequest(alias_name=alias, target_key_id=md.key_id))
    return md.key_id, md.arn


async def test_every_key_id_form_is_used_and_shown(stack: StoreStack) -> None:
    key_id, key_arn = await new_key(stack, "alias/app")
    alias_arn = "arn:aws:kms:local-1:000000000000:alias/app"
    s = stack.store
    for i, given in enumerate([key_id, key_arn, "alias/app", alias_arn]):
        name = f"cmk-{i}"
        await s.CreateSecret(
            pb.CreateSecretRequest(
                name=name, client_request_token=token(), secret_string=name, kms_key_id=given
            )
        )
        described = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id=name))
        assert described.kms_key_id == given
        versions = await s.ListSecretVersionIds(pb.ListSecretVersionIdsRequest(secret_id=name))
        assert [list(v.kms_key_ids) for v in versions.versions] == [[key_arn]]
        assert (await s.GetSecretValue(pb.GetSecretValueRequest(secret_id=name))).secret_string == name
        listed = await s.ListSecrets(pb.ListSecretsRequest(filters=[pb.Filter(key="name", values=[name])]))
        assert listed.secret_list[0].kms_key_id == given
    # naming the default key explicitly is the same as naming none
    await s.CreateSecret(
        pb.CreateSecretRequest(
            name="dflt",
            client_request_token=token(),
            secret_string="x",
            kms_key_id="alias/aws/secretsmanager",
        )
    )
    assert not (await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="dflt"))).HasField("kms_key_id")
    versions = await s.ListSecretVersionIds(pb.ListSecretVersionIdsRequest(secret_id="dflt"))
    assert list(versions.versions[0].kms_key_ids) == ["DefaultEncryptionKey"]


async def test_changing_the_key_reencrypts_labelled_versions_only(stack: StoreStack) -> None:
    _, key_a = await new_key(stack)
    _, key_b = await new_key(stack)
    s = stack.store
    t1, t2, t3 = token(), token(), token()
    await s.CreateSecret(
        pb.CreateSecretRequest(name="moving", client_request_token=t1, secret_string="one", kms_key_id=key_a)
    )
    await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="moving", client_request_token=t2, secret_string="two")
    )
    await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="moving", client_request_token=t3, secret_string="three")
    )
    resp = await s.UpdateSecret(pb.UpdateSecretRequest(secret_id="moving", kms_key_id=key_b))
    assert not resp.HasField("version_id")
    assert (await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="moving"))).kms_key_id == key_b
    everything = await s.ListSecretVersionIds(
        pb.ListSecretVersionIdsRequest(secret_id="moving", include_deprecated=True)
    )
    # t1 is deprecated (no label): it stays under the old key; AWSPREVIOUS and AWSCURRENT move to the new one
    assert {v.version_id: list(v.kms_key_ids) for v in everything.versions} == {
        t1: [key_a],
        t2: [key_b],
        t3: [key_b],
    }
    # the old key can go away: labelled versions still read; the deprecated one no longer does
    await stack.kms.DisableKey(kms_pb2.DisableKeyRequest(key_id=key_a))
    stack.store_runtime.kms.cache.clear()
    assert (await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="moving"))).secret_string == "three"
    assert (
        await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="moving", version_stage="AWSPREVIOUS"))
    ).secret_string == "two"
    with pytest.raises(errors.DecryptionFailure, match="is disabled"):
        await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="moving", version_id=t1))
    # KmsKeyId "" reverts to the default key
    await s.UpdateSecret(pb.UpdateSecretRequest(secret_id="moving", kms_key_id=""))
    assert not (await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="moving"))).HasField("kms_key_id")
    current = await s.ListSecretVersionIds(pb.ListSecretVersionIdsRequest(secret_id="moving"))
    assert {tuple(v.kms_key_ids) for v in current.versions} == {("DefaultEncryptionKey",)}


async def test_disabling_a_key_evicts_its_cached_data_keys_at_once(stack: StoreStack) -> None:
    _, key_arn = await new_key(stack)
    _, other_arn = await new_key(stack)
    s = stack.store
    await s.CreateSecret(
        pb.CreateSecretRequest(
            name="hot", client_request_token=token(), secret_string="v", kms_key_id=key_arn
        )
    )
    await s.CreateSecret(
        pb.CreateSecretRequest(
            name="other", client_request_token=token(), secret_string="o", kms_key_id=other_arn
        )
    )
    cache = stack.store_runtime.kms.cache
    await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="hot"))
    await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="other"))
    assert cache.holds(key_arn) and cache.holds(other_arn)
    await stack.kms.DisableKey(kms_pb2.DisableKeyRequest(key_id=key_arn))
    # the NOTIFY arrives asynchronously, within milliseconds
    await eventually(lambda: not cache.holds(key_arn), timeout=2, interval=0.01, message="eviction")
    assert not cache.holds(key_arn) and cache.holds(other_arn)
    with pytest.raises(errors.DecryptionFailure, match=f"{key_arn} is disabled"):
        await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="hot"))
    assert (await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="other"))).secret_string == "o"


async def test_reads_are_served_from_the_cache_without_kms(stack: StoreStack) -> None:
    s = stack.store
    await s.CreateSecret(
        pb.CreateSecretRequest(name="cached", client_request_token=token(), secret_string="v")
    )
    await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="cached"))
    # with the kms service stopped, a cached data key still opens the value; an uncached one cannot
    await stack.kms_runtime.aclose()
    assert (await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="cached"))).secret_string == "v"
    stack.store_runtime.kms.cache.clear()
    with pytest.raises(errors.Unavailable):
        await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="cached"))


LISTENERS = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE datname = current_database() AND query LIKE 'LISTEN %coffer_kms_key_changed%'"
)


async def test_losing_the_listen_connection_drops_the_cache_and_reconnects(stack: StoreStack) -> None:
    _, key_arn = await new_key(stack)
    s = stack.store
    await s.CreateSecret(
        pb.CreateSecretRequest(name="l", client_request_token=token(), secret_string="v", kms_key_id=key_arn)
    )
    cache = stack.store_runtime.kms.cache
    assert cache.holds(key_arn)
    (old_pid,) = [r["pid"] for r in await stack.db.fetch(LISTENERS)]
    await stack.db.execute("SELECT pg_terminate_backend($1)", old_pid)
    # notifications may have been missed while deaf: everything cached is dropped
    await eventually(lambda: not cache.holds(key_arn), timeout=2, interval=0.01, message="eviction")
    assert not cache.holds(key_arn)
    # ... and the listener comes back on a new connection

    async def listener_pids() -> list[int]:
        return [r["pid"] for r in await stack.db.fetch(LISTENERS)]

    new_pids = await eventually(
        listener_pids,
        until=lambda pids: bool(pids) and pids != [old_pid],
        timeout=5,
        interval=0.05,
        message="a new listener connection",
    )
    assert new_pids and old_pid not in new_pids
    await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="l"))
    assert cache.holds(key_arn)
    await stack.kms.DisableKey(kms_pb2.DisableKeyRequest(key_id=key_arn))
    await eventually(lambda: not cache.holds(key_arn), timeout=2, interval=0.01, message="eviction")
    assert not cache.holds(key_arn)

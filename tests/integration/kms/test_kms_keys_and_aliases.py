"""Key management and aliases through the real kms service (PostgreSQL, gRPC over mTLS as "store")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.core import errors

if TYPE_CHECKING:
    from tests.integration.kms.conftest import KmsHarness

pytestmark = pytest.mark.integration

MISSING = "11111111-2222-4333-8444-555555555555"


async def _create(kms: KmsHarness, **kwargs: Any) -> kms_pb2.KeyMetadata:
    response: kms_pb2.CreateKeyResponse = await kms.store.CreateKey(kms_pb2.CreateKeyRequest(**kwargs))
    return response.key_metadata


async def _alias(kms: KmsHarness, name: str, target: str) -> None:
    await kms.store.CreateAlias(kms_pb2.CreateAliasRequest(alias_name=name, target_key_id=target))


async def _describe(kms: KmsHarness, key_id: str) -> kms_pb2.KeyMetadata:
    response: kms_pb2.DescribeKeyResponse = await kms.store.DescribeKey(
        kms_pb2.DescribeKeyRequest(key_id=key_id)
    )
    return response.key_metadata


async def test_create_and_describe_key(kms: KmsHarness) -> None:
    meta = await _create(kms, description="orders db", tags=[kms_pb2.Tag(tag_key="team", tag_value="core")])
    assert meta.key_id == meta.key_id.lower() and len(meta.key_id) == 36 and meta.key_id[14] == "4"  # UUIDv4
    assert meta.arn == kms.arn(meta.key_id)
    assert meta.aws_account_id == "000000000000"
    assert meta.enabled and meta.key_state == "Enabled"
    assert (meta.key_usage, meta.key_spec, meta.customer_master_key_spec) == (
        "ENCRYPT_DECRYPT",
        "SYMMETRIC_DEFAULT",
        "SYMMETRIC_DEFAULT",
    )
    assert (meta.origin, meta.key_manager, list(meta.encryption_algorithms)) == (
        "AWS_KMS",
        "CUSTOMER",
        ["SYMMETRIC_DEFAULT"],
    )
    assert len(meta.current_key_material_id) == 64 and int(meta.current_key_material_id, 16) >= 0
    assert not meta.HasField("deletion_date") and not meta.multi_region
    assert not meta.HasField("multi_region_configuration")
    assert meta.description == "orders db"

    for form in (meta.key_id, meta.arn, meta.key_id.upper()):
        assert await _describe(kms, form) == meta

    assert (await _create(kms)).description == ""

    mrk = await _create(kms, multi_region=True)
    assert mrk.key_id.startswith("mrk-") and len(mrk.key_id) == 36 and mrk.multi_region
    assert mrk.multi_region_configuration.multi_region_key_type == "PRIMARY"
    assert mrk.multi_region_configuration.primary_key.arn == mrk.arn
    assert (await _describe(kms, mrk.arn)).key_id == mrk.key_id


async def test_create_key_rejects_out_of_subset_and_bad_input(kms: KmsHarness) -> None:
    await kms.fails(_create(kms, key_spec="RSA_2048"), errors.UnsupportedOperation)
    await kms.fails(_create(kms, key_usage="SIGN_VERIFY"), errors.UnsupportedOperation)
    await kms.fails(_create(kms, origin="EXTERNAL"), errors.UnsupportedOperation)
    err = await kms.fails(_create(kms, key_spec="AES_999"), errors.Validation)
    assert "Member must satisfy enum value set: [RSA_2048" in err.message
    err = await kms.fails(_create(kms, description="x" * 8193), errors.Validation)
    assert "'description'" in err.message and "less than or equal to 8192" in err.message
    err = await kms.fails(
        _create(kms, tags=[kms_pb2.Tag(tag_key="aws:x", tag_value="1")]),
        errors.TagError,
        "Tags beginning with aws: are reserved",
    )
    assert err.code == "TagException"
    dup = [kms_pb2.Tag(tag_key="a", tag_value="1"), kms_pb2.Tag(tag_key="a", tag_value="2")]
    await kms.fails(_create(kms, tags=dup), errors.TagError, "Duplicate tag keys")
    listed = await kms.store.ListKeys(kms_pb2.ListKeysRequest())
    assert [k.key_id for k in listed.keys] == [kms.aws_managed_key_id]  # nothing half-created


async def test_describe_not_found_messages(kms: KmsHarness) -> None:
    cases = {
        MISSING: f"Key '{kms.arn(MISSING)}' does not exist",
        kms.arn(MISSING): f"Key '{kms.arn(MISSING)}' does not exist",
        "fake-key-id": "Invalid keyId 'fake-key-id'",
        f"arn:aws:kms:us-west-2:000000000000:key/{MISSING}": "Invalid arn us-west-2",
        "alias/nope": f"Alias {kms.alias_arn('alias/nope')} is not found.",
        kms.alias_arn("alias/nope"): f"Alias {kms.alias_arn('alias/nope')} is not found.",
    }
    for key_id, message in cases.items():
        err = await kms.fails(_describe(kms, key_id), errors.KmsNotFound, message)
        assert err.code == "NotFoundException"
    err = await kms.fails(_describe(kms, ""), errors.Validation)
    assert err.message.endswith("Member must not be null")


async def test_list_keys_paginates_with_opaque_markers(kms: KmsHarness) -> None:
    # five of ours and the AWS managed key the store made for the bootstrap key's secret
    created = {(await _create(kms)).key_id for _ in range(5)} | {kms.aws_managed_key_id}
    seen: list[str] = []
    request = kms_pb2.ListKeysRequest(limit=2)
    pages = 0
    while True:
        page = await kms.store.ListKeys(request)
        pages += 1
        seen += [k.key_id for k in page.keys]
        assert all(k.key_arn == kms.arn(k.key_id) for k in page.keys)
        if not page.truncated:
            assert not page.HasField("next_marker")
            break
        assert page.HasField("next_marker") and len(page.keys) == 2
        assert not any(k in page.next_marker for k in created)  # opaque
        request = kms_pb2.ListKeysRequest(limit=2, marker=page.next_marker)
    assert pages == 3 and len(seen) == 6 and set(seen) == created
    everything = await kms.store.ListKeys(kms_pb2.ListKeysRequest())
    assert len(everything.keys) == 6 and not everything.truncated
    err = await kms.fails(
        kms.store.ListKeys(kms_pb2.ListKeysRequest(marker="not-a-marker")), errors.InvalidMarker
    )
    assert err.code == "InvalidMarkerException"
    for bad in (0, 1001):
        await kms.fails(kms.store.ListKeys(kms_pb2.ListKeysRequest(limit=bad)), errors.Validation)


async def test_enable_disable_are_idempotent_and_block_crypto(kms: KmsHarness) -> None:
    meta = await _create(kms)
    for _ in range(2):
        await kms.store.DisableKey(kms_pb2.DisableKeyRequest(key_id=meta.key_id))
    described = await _describe(kms, meta.arn)
    assert described.key_state == "Disabled" and not described.enabled
    err = await kms.fails(
        kms.store.GenerateDataKey(kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, key_spec="AES_256")),
        errors.KmsDisabled,
        f"{meta.arn} is disabled.",
    )
    assert err.code == "DisabledException"
    for _ in range(2):
        await kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=meta.arn))
    described = await _describe(kms, meta.key_id)
    assert described.key_state == "Enabled" and described.enabled
    await kms.store.GenerateDataKey(kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, key_spec="AES_256"))
    # key-ID-only operations treat alias forms as malformed
    await _alias(kms, "alias/k", meta.key_id)
    for form in ("alias/k", kms.alias_arn("alias/k")):
        await kms.fails(
            kms.store.DisableKey(kms_pb2.DisableKeyRequest(key_id=form)),
            errors.KmsNotFound,
            f"Invalid keyId '{form}'",
        )
    await kms.fails(
        kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=MISSING)),
        errors.KmsNotFound,
        f"Key '{kms.arn(MISSING)}' does not exist",
    )


@pytest.mark.parametrize("admin_secret_sealed", [False])  # no key made yet
async def test_aliases(kms: KmsHarness) -> None:
    # Before anything exists, the predefined AWS alias is listed without a target.
    initial = await kms.store.ListAliases(kms_pb2.ListAliasesRequest())
    assert [(a.alias_name, a.HasField("target_key_id")) for a in initial.aliases] == [
        ("alias/aws/secretsmanager", False)
    ]
    assert initial.aliases[0].alias_arn == kms.alias_arn("alias/aws/secretsmanager")

    one, two = await _create(kms), await _create(kms)
    await _alias(kms, "alias/orders", one.key_id)
    await _alias(kms, "alias/Orders", two.arn)
    await _alias(kms, "alias/app/one", one.arn)

    for form in ("alias/orders", kms.alias_arn("alias/orders")):
        assert (await _describe(kms, form)).key_id == one.key_id
    assert (await _describe(kms, "alias/Orders")).key_id == two.key_id  # names are case-sensitive

    listed = await kms.store.ListAliases(kms_pb2.ListAliasesRequest())
    by_name = {a.alias_name: a for a in listed.aliases}
    assert set(by_name) == {"alias/Orders", "alias/app/one", "alias/aws/secretsmanager", "alias/orders"}
    assert by_name["alias/orders"].target_key_id == one.key_id
    assert by_name["alias/orders"].alias_arn == kms.alias_arn("alias/orders")
    assert by_name["alias/orders"].HasField("creation_date")
    assert [a.alias_name for a in listed.aliases] == sorted(by_name)
    assert not listed.truncated
    filtered = await kms.store.ListAliases(kms_pb2.ListAliasesRequest(key_id=one.arn))
    assert [a.alias_name for a in filtered.aliases] == ["alias/app/one", "alias/orders"]

    # pagination, including the virtual predefined alias
    names: list[str] = []
    request = kms_pb2.ListAliasesRequest(limit=1)
    while True:
        page = await kms.store.ListAliases(request)
        names += [a.alias_name for a in page.aliases]
        if not page.truncated:
            break
        request = kms_pb2.ListAliasesRequest(limit=1, marker=page.next_marker)
    assert names == sorted(by_name)

    err = await kms.fails(
        _alias(kms, "alias/orders", two.key_id),
        errors.KmsAlreadyExists,
        f"An alias with the name {kms.alias_arn('alias/orders')} already exists",
    )
    assert err.code == "AlreadyExistsException"
    err = await kms.fails(_alias(kms, "alias/aws/mine", one.key_id), errors.InvalidAliasName)
    assert err.code == "InvalidAliasNameException"
    await kms.fails(  # not created yet
        kms.store.DeleteAlias(kms_pb2.DeleteAliasRequest(alias_name="alias/aws/secretsmanager")),
        errors.KmsNotFound,
        f"Alias {kms.alias_arn('alias/aws/secretsmanager')} is not found.",
    )
    err = await kms.fails(_alias(kms, "orders", one.key_id), errors.Validation)
    assert err.message.startswith('Alias must start with the prefix "alias/".')
    err = await kms.fails(_alias(kms, "alias/a b", one.key_id), errors.Validation)
    assert "regular expression pattern" in err.message
    await kms.fails(
        _alias(kms, "alias/x", "alias/orders"), errors.Validation, "Aliases must refer to keys. Not aliases"
    )
    await kms.fails(
        _alias(kms, "alias/x", MISSING), errors.KmsNotFound, f"Key '{kms.arn(MISSING)}' does not exist"
    )
    await kms.fails(kms.store.ListAliases(kms_pb2.ListAliasesRequest(key_id=MISSING)), errors.KmsNotFound)

    await kms.store.DeleteAlias(kms_pb2.DeleteAliasRequest(alias_name="alias/orders"))
    await kms.fails(
        kms.store.DeleteAlias(kms_pb2.DeleteAliasRequest(alias_name="alias/orders")),
        errors.KmsNotFound,
        f"Alias {kms.alias_arn('alias/orders')} is not found.",
    )
    await kms.fails(_describe(kms, "alias/orders"), errors.KmsNotFound)
    await _alias(kms, "alias/orders", two.key_id)  # the name is free again
    assert (await _describe(kms, "alias/orders")).key_id == two.key_id

    # an alias may point at a disabled key, not at one pending deletion; names stay taken meanwhile
    await kms.store.DisableKey(kms_pb2.DisableKeyRequest(key_id=two.key_id))
    await _alias(kms, "alias/disabled", two.key_id)
    await kms.store.ScheduleKeyDeletion(kms_pb2.ScheduleKeyDeletionRequest(key_id=two.key_id))
    await kms.fails(
        _alias(kms, "alias/late", two.key_id), errors.KmsInvalidState, f"{two.arn} is pending deletion."
    )
    await kms.fails(_alias(kms, "alias/disabled", one.key_id), errors.KmsAlreadyExists)
    # ListAliases and DeleteAlias work in every state
    pending = await kms.store.ListAliases(kms_pb2.ListAliasesRequest(key_id=two.key_id))
    assert [a.alias_name for a in pending.aliases] == ["alias/Orders", "alias/disabled", "alias/orders"]
    await kms.store.DeleteAlias(kms_pb2.DeleteAliasRequest(alias_name="alias/Orders"))


async def test_alias_limit_per_key(kms: KmsHarness, database_url: str) -> None:
    meta = await _create(kms)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO kms.aliases (account_id, region, alias_name, key_id, created_at, updated_at)"
            " SELECT '000000000000', 'local-1', 'alias/bulk-' || n, $1, now(), now()"
            " FROM generate_series(1, 50) n",
            meta.key_id,
        )
    finally:
        await conn.close()
    await kms.fails(_alias(kms, "alias/one-too-many", meta.key_id), errors.LimitExceeded)

"""Key lifecycle through the real kms service: deletion window, cancel, purge (by moving the clock), rotation
(on demand and automatic), the lazily created AWS-managed default key, the gateway's limits, and the
key-changed notifications the store relies on."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.core import errors
from coffer.testing.wait import eventually

if TYPE_CHECKING:
    from tests.integration.kms.conftest import KmsHarness

pytestmark = pytest.mark.integration

DEFAULT_ALIAS = "alias/aws/secretsmanager"
CTX = {"SecretARN": "arn:aws:secretsmanager:local-1:000000000000:secret:s-AbCdEf", "SecretVersionId": "v1"}


async def _key(kms: KmsHarness) -> kms_pb2.KeyMetadata:
    response: kms_pb2.CreateKeyResponse = await kms.store.CreateKey(kms_pb2.CreateKeyRequest())
    return response.key_metadata


async def _describe(kms: KmsHarness, key_id: str) -> kms_pb2.KeyMetadata:
    response: kms_pb2.DescribeKeyResponse = await kms.store.DescribeKey(
        kms_pb2.DescribeKeyRequest(key_id=key_id)
    )
    return response.key_metadata


async def _data_key(kms: KmsHarness, key_id: str) -> kms_pb2.GenerateDataKeyResponse:
    response: kms_pb2.GenerateDataKeyResponse = await kms.store.GenerateDataKey(
        kms_pb2.GenerateDataKeyRequest(key_id=key_id, key_spec="AES_256", encryption_context=CTX)
    )
    return response


async def _decrypt(kms: KmsHarness, blob: bytes) -> kms_pb2.DecryptResponse:
    response: kms_pb2.DecryptResponse = await kms.store.Decrypt(
        kms_pb2.DecryptRequest(ciphertext_blob=blob, encryption_context=CTX)
    )
    return response


async def test_schedule_and_cancel_deletion(kms: KmsHarness) -> None:
    meta = await _key(kms)
    dk = await _data_key(kms, meta.key_id)
    for days in (0, 6, 31, 365):
        await kms.fails(
            kms.store.ScheduleKeyDeletion(
                kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id, pending_window_in_days=days)
            ),
            errors.Validation,
            "PendingWindowInDays must be between 7 and 30",
        )
    before = kms.clock.now()
    scheduled = await kms.store.ScheduleKeyDeletion(
        kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.arn, pending_window_in_days=7)
    )
    assert scheduled.key_id == meta.arn
    assert scheduled.key_state == "PendingDeletion" and scheduled.pending_window_in_days == 7
    assert scheduled.deletion_date.ToDatetime().timestamp() == pytest.approx(
        (before + timedelta(days=7)).timestamp(), abs=1
    )
    described = await _describe(kms, meta.key_id)
    assert described.key_state == "PendingDeletion" and not described.enabled
    assert described.deletion_date == scheduled.deletion_date

    pending = f"{meta.arn} is pending deletion."
    await kms.fails(_data_key(kms, meta.key_id), errors.KmsInvalidState, pending)
    err = await kms.fails(_decrypt(kms, dk.ciphertext_blob), errors.KmsInvalidState, pending)
    assert err.code == "KMSInvalidStateException"
    await kms.fails(
        kms.store.Encrypt(kms_pb2.EncryptRequest(key_id=meta.key_id, plaintext=b"x")),
        errors.KmsInvalidState,
        pending,
    )
    await kms.fails(
        kms.store.ScheduleKeyDeletion(kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id)),
        errors.KmsInvalidState,
        pending,
    )
    await kms.fails(
        kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=meta.key_id)), errors.KmsInvalidState, pending
    )

    cancelled = await kms.store.CancelKeyDeletion(kms_pb2.CancelKeyDeletionRequest(key_id=meta.key_id))
    assert cancelled.key_id == meta.arn
    described = await _describe(kms, meta.key_id)
    assert described.key_state == "Disabled" and not described.HasField("deletion_date")
    await kms.fails(
        kms.store.CancelKeyDeletion(kms_pb2.CancelKeyDeletionRequest(key_id=meta.key_id)),
        errors.KmsInvalidState,
        f"{meta.arn} is not pending deletion.",
    )
    await kms.fails(_decrypt(kms, dk.ciphertext_blob), errors.KmsDisabled, f"{meta.arn} is disabled.")
    await kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=meta.key_id))
    assert (await _decrypt(kms, dk.ciphertext_blob)).plaintext == dk.plaintext  # nothing was re-encrypted

    # the default window is 30 days
    again = await kms.store.ScheduleKeyDeletion(kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id))
    assert again.pending_window_in_days == 30


async def test_purge_after_window_crypto_shreds(kms: KmsHarness, database_url: str) -> None:
    meta = await _key(kms)
    keep = await _key(kms)
    await kms.store.CreateAlias(
        kms_pb2.CreateAliasRequest(alias_name="alias/doomed", target_key_id=meta.key_id)
    )
    await kms.store.RotateKeyOnDemand(kms_pb2.RotateKeyOnDemandRequest(key_id=meta.key_id))
    dk = await _data_key(kms, meta.key_id)
    kept = await _data_key(kms, keep.key_id)
    await kms.store.ScheduleKeyDeletion(
        kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id, pending_window_in_days=7)
    )

    kms.clock.advance(timedelta(days=7) - timedelta(seconds=1))
    report = await kms.runtime.run_maintenance()
    assert report.purged == ()
    assert (
        await _describe(kms, "alias/doomed")
    ).key_state == "PendingDeletion"  # aliases stay until the purge

    kms.clock.advance(timedelta(seconds=2))
    report = await kms.runtime.run_maintenance()
    assert report.purged == (meta.key_id,)
    assert (await kms.runtime.run_maintenance()).purged == ()  # idempotent

    await kms.fails(_describe(kms, meta.key_id), errors.KmsNotFound, f"Key '{meta.arn}' does not exist")
    await kms.fails(_describe(kms, "alias/doomed"), errors.KmsNotFound)
    await kms.fails(
        _decrypt(kms, dk.ciphertext_blob),
        errors.AccessDenied,
        "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
        "or you are not allowed to access.",
    )
    listed = await kms.store.ListKeys(kms_pb2.ListKeysRequest())
    assert sorted(k.key_id for k in listed.keys) == sorted([keep.key_id, kms.aws_managed_key_id])
    conn = await asyncpg.connect(database_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM kms.key_materials WHERE key_id = $1", meta.key_id) == 0
        )
        assert await conn.fetchval("SELECT count(*) FROM kms.aliases WHERE key_id = $1", meta.key_id) == 0
    finally:
        await conn.close()
    assert (await _decrypt(kms, kept.ciphertext_blob)).plaintext == kept.plaintext  # other keys untouched


@pytest.mark.parametrize("purge_interval", [0.05])
async def test_background_loop_purges_without_being_asked(kms: KmsHarness) -> None:
    meta = await _key(kms)
    await kms.store.ScheduleKeyDeletion(
        kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id, pending_window_in_days=7)
    )
    await asyncio.sleep(0.2)
    assert (await _describe(kms, meta.key_id)).key_state == "PendingDeletion"
    kms.clock.advance(timedelta(days=7, seconds=1))

    async def purged() -> bool:
        try:
            await _describe(kms, meta.key_id)
        except errors.KmsNotFound:
            return True
        return False

    await eventually(purged, timeout=5, interval=0.05, message="the background loop to purge the key")


async def test_rotate_on_demand_keeps_old_material_for_decrypt(kms: KmsHarness) -> None:
    meta = await _key(kms)
    old = await _data_key(kms, meta.key_id)
    rotated = await kms.store.RotateKeyOnDemand(kms_pb2.RotateKeyOnDemandRequest(key_id=meta.arn))
    assert rotated.key_id == meta.arn
    after = await _describe(kms, meta.key_id)
    assert (
        after.current_key_material_id != meta.current_key_material_id
        and len(after.current_key_material_id) == 64
    )
    assert (after.key_id, after.arn, after.key_state, after.creation_date) == (
        meta.key_id,
        meta.arn,
        meta.key_state,
        meta.creation_date,
    )
    new = await _data_key(kms, meta.key_id)
    assert new.key_material_id == after.current_key_material_id
    out_old = await _decrypt(kms, old.ciphertext_blob)
    assert out_old.plaintext == old.plaintext and out_old.key_material_id == meta.current_key_material_id
    out_new = await _decrypt(kms, new.ciphertext_blob)
    assert out_new.plaintext == new.plaintext and out_new.key_material_id == after.current_key_material_id

    # on-demand rotation does not switch automatic rotation on
    status = await kms.store.GetKeyRotationStatus(kms_pb2.GetKeyRotationStatusRequest(key_id=meta.key_id))
    assert not status.key_rotation_enabled and not status.HasField("rotation_period_in_days")

    await kms.store.DisableKey(kms_pb2.DisableKeyRequest(key_id=meta.key_id))
    await kms.fails(
        kms.store.RotateKeyOnDemand(kms_pb2.RotateKeyOnDemandRequest(key_id=meta.key_id)),
        errors.KmsDisabled,
        f"{meta.arn} is disabled.",
    )
    await kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=meta.key_id))
    for _ in range(24):  # 25 in all
        await kms.store.RotateKeyOnDemand(kms_pb2.RotateKeyOnDemandRequest(key_id=meta.key_id))
    err = await kms.fails(
        kms.store.RotateKeyOnDemand(kms_pb2.RotateKeyOnDemandRequest(key_id=meta.key_id)),
        errors.LimitExceeded,
        "The on-demand rotations limit has been reached for the given keyId. "
        f"No more on-demand rotations can be performed for this key: {meta.arn}",
    )
    assert err.code == "LimitExceededException"
    assert (await _decrypt(kms, old.ciphertext_blob)).plaintext == old.plaintext


@pytest.mark.parametrize("admin_secret_sealed", [False])  # customer keys only (AWS managed: yearly)
async def test_automatic_rotation(kms: KmsHarness) -> None:
    meta = await _key(kms)
    old = await _data_key(kms, meta.key_id)
    for days, bound in ((89, "greater than or equal to 90"), (2561, "less than or equal to 2560")):
        err = await kms.fails(
            kms.store.EnableKeyRotation(
                kms_pb2.EnableKeyRotationRequest(key_id=meta.key_id, rotation_period_in_days=days)
            ),
            errors.Validation,
        )
        assert "'rotationPeriodInDays'" in err.message and bound in err.message
    await kms.store.EnableKeyRotation(
        kms_pb2.EnableKeyRotationRequest(key_id=meta.key_id, rotation_period_in_days=90)
    )
    status = await kms.store.GetKeyRotationStatus(kms_pb2.GetKeyRotationStatusRequest(key_id=meta.arn))
    assert status.key_id == meta.arn and status.key_rotation_enabled and status.rotation_period_in_days == 90
    assert status.next_rotation_date.ToDatetime().timestamp() == pytest.approx(
        (kms.clock.now() + timedelta(days=90)).timestamp(), abs=1
    )

    kms.clock.advance(timedelta(days=89))
    assert (await kms.runtime.run_maintenance()).rotated == ()
    kms.clock.advance(timedelta(days=2))
    assert (await kms.runtime.run_maintenance()).rotated == (meta.key_id,)
    first = (await _describe(kms, meta.key_id)).current_key_material_id
    assert first != meta.current_key_material_id
    assert (await _decrypt(kms, old.ciphertext_blob)).plaintext == old.plaintext

    # disabled keys do not rotate; re-enabling an overdue key rotates it at once
    await kms.store.DisableKey(kms_pb2.DisableKeyRequest(key_id=meta.key_id))
    await kms.fails(
        kms.store.EnableKeyRotation(kms_pb2.EnableKeyRotationRequest(key_id=meta.key_id)),
        errors.KmsDisabled,
        f"{meta.arn} is disabled.",
    )
    kms.clock.advance(timedelta(days=91))
    assert (await kms.runtime.run_maintenance()).rotated == ()
    assert (await _describe(kms, meta.key_id)).current_key_material_id == first
    await kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=meta.key_id))
    second = (await _describe(kms, meta.key_id)).current_key_material_id
    assert second not in {first, meta.current_key_material_id}

    # pending deletion reports false; cancelling brings the earlier status back
    await kms.store.ScheduleKeyDeletion(kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id))
    status = await kms.store.GetKeyRotationStatus(kms_pb2.GetKeyRotationStatusRequest(key_id=meta.key_id))
    assert not status.key_rotation_enabled and not status.HasField("next_rotation_date")
    await kms.store.CancelKeyDeletion(kms_pb2.CancelKeyDeletionRequest(key_id=meta.key_id))
    status = await kms.store.GetKeyRotationStatus(kms_pb2.GetKeyRotationStatusRequest(key_id=meta.key_id))
    assert status.key_rotation_enabled and status.rotation_period_in_days == 90

    await kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=meta.key_id))
    await kms.store.DisableKeyRotation(kms_pb2.DisableKeyRotationRequest(key_id=meta.key_id))
    status = await kms.store.GetKeyRotationStatus(kms_pb2.GetKeyRotationStatusRequest(key_id=meta.key_id))
    assert not status.key_rotation_enabled and not status.HasField("rotation_period_in_days")
    kms.clock.advance(timedelta(days=400))
    assert (await kms.runtime.run_maintenance()).rotated == ()


@pytest.mark.parametrize("admin_secret_sealed", [False])  # no default key made yet
async def test_default_key_is_created_lazily_once_under_concurrency(
    kms: KmsHarness, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM kms.keys") == 0
        results = await asyncio.gather(*(_data_key(kms, DEFAULT_ALIAS) for _ in range(12)))
        arns = {r.key_id for r in results}
        assert len(arns) == 1
        assert await conn.fetchval("SELECT count(*) FROM kms.keys WHERE key_manager = 'AWS'") == 1
        assert (
            await conn.fetchval("SELECT count(*) FROM kms.aliases WHERE alias_name = $1", DEFAULT_ALIAS) == 1
        )
    finally:
        await conn.close()
    meta = await _describe(kms, DEFAULT_ALIAS)
    assert meta.arn in arns
    assert meta.key_manager == "AWS" and meta.key_state == "Enabled"
    assert (
        meta.description == "Default key that protects my Secrets Manager data when no other key is defined"
    )
    assert (await _describe(kms, kms.alias_arn(DEFAULT_ALIAS))).key_id == meta.key_id
    for r in results:
        assert (await _decrypt(kms, r.ciphertext_blob)).plaintext == r.plaintext
    listed = await kms.store.ListAliases(kms_pb2.ListAliasesRequest())
    assert [(a.alias_name, a.target_key_id) for a in listed.aliases] == [(DEFAULT_ALIAS, meta.key_id)]
    status = await kms.store.GetKeyRotationStatus(kms_pb2.GetKeyRotationStatusRequest(key_id=meta.key_id))
    assert status.key_rotation_enabled and status.rotation_period_in_days == 365

    # AWS-managed keys are not configurable, by anyone
    for call in (
        kms.store.DisableKey(kms_pb2.DisableKeyRequest(key_id=meta.key_id)),
        kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=meta.key_id)),
        kms.store.ScheduleKeyDeletion(kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id)),
        kms.store.RotateKeyOnDemand(kms_pb2.RotateKeyOnDemandRequest(key_id=meta.key_id)),
        kms.store.DisableKeyRotation(kms_pb2.DisableKeyRotationRequest(key_id=meta.key_id)),
        kms.store.CreateAlias(kms_pb2.CreateAliasRequest(alias_name="alias/mine", target_key_id=meta.key_id)),
        kms.store.DeleteAlias(kms_pb2.DeleteAliasRequest(alias_name=DEFAULT_ALIAS)),
        kms.gateway.DeleteAlias(kms_pb2.DeleteAliasRequest(alias_name=DEFAULT_ALIAS)),
        kms.gateway.EnableKeyRotation(kms_pb2.EnableKeyRotationRequest(key_id=meta.key_id)),
    ):
        err = await kms.fails(call, errors.AccessDenied)
        assert err.code == "AccessDeniedException" and meta.arn in err.message
    assert (await _describe(kms, meta.key_id)).key_state == "Enabled"


async def test_gateway_is_refused_crypto_on_the_default_key(kms: KmsHarness) -> None:
    # first reference through the gateway still creates the key (DescribeKey works for it)
    described: kms_pb2.DescribeKeyResponse = await kms.gateway.DescribeKey(
        kms_pb2.DescribeKeyRequest(key_id=DEFAULT_ALIAS)
    )
    default = described.key_metadata
    assert default.key_manager == "AWS"
    blob = (await _data_key(kms, DEFAULT_ALIAS)).ciphertext_blob  # the store may use it
    for call in (
        kms.gateway.GenerateDataKey(kms_pb2.GenerateDataKeyRequest(key_id=DEFAULT_ALIAS, key_spec="AES_256")),
        kms.gateway.GenerateDataKey(kms_pb2.GenerateDataKeyRequest(key_id=default.arn, number_of_bytes=16)),
        kms.gateway.Encrypt(kms_pb2.EncryptRequest(key_id=default.key_id, plaintext=b"x")),
        kms.gateway.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=blob, encryption_context=CTX)),
        kms.gateway.DisableKey(kms_pb2.DisableKeyRequest(key_id=default.key_id)),
    ):
        err = await kms.fails(call, errors.AccessDenied)
        assert err.code == "AccessDeniedException"
    # customer-managed keys work for the gateway (the CLI's kms commands)
    created: kms_pb2.CreateKeyResponse = await kms.gateway.CreateKey(kms_pb2.CreateKeyRequest())
    mine = created.key_metadata
    enc = await kms.gateway.Encrypt(kms_pb2.EncryptRequest(key_id=mine.key_id, plaintext=b"cli"))
    out = await kms.gateway.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=enc.ciphertext_blob))
    assert out.plaintext == b"cli" and out.key_id == mine.arn
    await kms.gateway.DisableKey(kms_pb2.DisableKeyRequest(key_id=mine.key_id))


async def test_other_identities_are_refused(kms: KmsHarness) -> None:
    for identity in ("rotation", "operator"):
        stub = kms.stub_for(identity)
        err = await kms.fails(stub.ListKeys(kms_pb2.ListKeysRequest()), errors.AccessDenied)
        assert identity in err.message


async def test_state_changes_notify_the_store(kms: KmsHarness, database_url: str) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(database_url)

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        received.put_nowait(payload)

    await conn.add_listener("coffer_kms_key_changed", on_notify)
    try:
        meta = await _key(kms)
        await kms.store.DisableKey(kms_pb2.DisableKeyRequest(key_id=meta.key_id))
        await kms.store.EnableKey(kms_pb2.EnableKeyRequest(key_id=meta.key_id))
        await kms.store.ScheduleKeyDeletion(kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id))
        await kms.store.CancelKeyDeletion(kms_pb2.CancelKeyDeletionRequest(key_id=meta.key_id))
        await kms.store.ScheduleKeyDeletion(kms_pb2.ScheduleKeyDeletionRequest(key_id=meta.key_id))
        kms.clock.advance(timedelta(days=31))
        await kms.runtime.run_maintenance()
        got = [await asyncio.wait_for(received.get(), timeout=5) for _ in range(6)]
        assert got == [meta.arn] * 6
        # a failed change notifies nothing (the transaction rolled back)
        other = await _key(kms)
        await kms.fails(
            kms.store.CancelKeyDeletion(kms_pb2.CancelKeyDeletionRequest(key_id=other.key_id)),
            errors.KmsInvalidState,
        )
        await kms.store.DisableKey(kms_pb2.DisableKeyRequest(key_id=other.key_id))
        assert await asyncio.wait_for(received.get(), timeout=5) == other.arn
        assert received.empty()
    finally:
        await conn.close()


async def test_missing_root_key_fails_clearly(database_url: str, pki_dir: Path, tmp_path: Path) -> None:
    from coffer.kms.__main__ import serve
    from coffer.rootkey_file import RootKeyFileError
    from coffer.settings import Settings

    settings = Settings.from_env(
        {
            "COFFER_DATABASE_URL": database_url,
            "COFFER_PKI_DIR": str(pki_dir),
            "COFFER_ROOT_KEY_FILE": str(tmp_path / "absent" / "root.key"),
            "COFFER_KMS_ADDR": "127.0.0.1:0",
        }
    )
    with pytest.raises(RootKeyFileError, match=r"root key file .*root\.key does not exist"):
        await serve(settings)

"""Key material rests in PostgreSQL only as root-key wraps: never the raw 32 bytes, bound to its key and
material id, and useless without the root key (a different root key cannot unwrap it or start the service)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.core import errors
from coffer.crypto import blob as blobs
from coffer.crypto.rootkey import MaterialBinding, RootKey, UnwrapError
from coffer.kms.__main__ import serve
from coffer.rootkey_file import RootKeyFileError, ensure_root_key

if TYPE_CHECKING:
    from tests.integration.kms.conftest import KmsHarness

pytestmark = pytest.mark.integration


async def test_material_is_wrapped_under_the_root_key(
    kms: KmsHarness, database_url: str, tmp_path: Path
) -> None:
    created: kms_pb2.CreateKeyResponse = await kms.store.CreateKey(kms_pb2.CreateKeyRequest())
    meta = created.key_metadata
    await kms.store.RotateKeyOnDemand(kms_pb2.RotateKeyOnDemandRequest(key_id=meta.key_id))
    context = {"SecretARN": "arn:x", "SecretVersionId": "v"}
    dk: kms_pb2.GenerateDataKeyResponse = await kms.store.GenerateDataKey(
        kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, key_spec="AES_256", encryption_context=context)
    )

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT material_id, wrapped, root_key_id, state FROM kms.key_materials WHERE key_id = $1"
            " ORDER BY created_at",
            meta.key_id,
        )
        dump = "|".join(
            [
                await conn.fetchval(f"SELECT coalesce(string_agg(t::text, '|'), '') FROM kms.{table} t")
                for table in ("keys", "key_materials", "aliases")
            ]
        )
    finally:
        await conn.close()
    assert len(rows) == 2 and [r["state"] for r in rows] == ["NON_CURRENT", "CURRENT"]
    current = next(r for r in rows if r["state"] == "CURRENT")
    assert current["material_id"] == dk.key_material_id
    assert dk.plaintext.hex() not in dump

    for row in rows:
        wrapped = bytes(row["wrapped"])
        assert len(wrapped) != 32  # not the raw material
        assert dk.plaintext not in wrapped and dk.ciphertext_blob not in wrapped
        assert row["root_key_id"] == kms.root_key.key_id

    # The stored wrap really is the material: unwrapped with the service's root key, it opens the blob...
    binding = MaterialBinding(
        account_id="000000000000", region="local-1", key_id=meta.key_id, material_id=current["material_id"]
    )
    material = kms.root_key.unwrap(bytes(current["wrapped"]), binding)
    assert len(material) == 32 and material not in bytes(current["wrapped"])
    assert material.hex() not in dump  # the raw material is nowhere in the kms tables
    assert blobs.decrypt_blob(dk.ciphertext_blob, material=material, context=context) == dk.plaintext

    # ... and nothing else can unwrap it: another root key, or the same wrap claimed by another key/material.
    with pytest.raises(UnwrapError):
        RootKey.generate().unwrap(bytes(current["wrapped"]), binding)
    with pytest.raises(UnwrapError):
        kms.root_key.unwrap(
            bytes(current["wrapped"]), dataclasses.replace(binding, key_id=str(meta.key_id)[::-1])
        )
    other = next(r for r in rows if r["state"] == "NON_CURRENT")
    with pytest.raises(UnwrapError):
        kms.root_key.unwrap(bytes(other["wrapped"]), binding)

    # A service started on this database with a different root key refuses to start, with a clear message.
    wrong = kms.settings.__class__.from_env(
        {
            "COFFER_DATABASE_URL": database_url,
            "COFFER_PKI_DIR": str(kms.settings.pki_dir),
            "COFFER_ROOT_KEY_FILE": str(tmp_path / "other" / "root.key"),
            "COFFER_KMS_ADDR": "127.0.0.1:0",
        }
    )
    ensure_root_key(wrong.root_key_file)
    with pytest.raises(RootKeyFileError, match="needs its original root key file"):
        await serve(wrong)


async def test_swapped_material_rows_do_not_decrypt(kms: KmsHarness, database_url: str) -> None:
    """Moving one key's wrapped material onto another key's row fails closed (wrap AAD binds the key id)."""
    a: kms_pb2.CreateKeyResponse = await kms.store.CreateKey(kms_pb2.CreateKeyRequest())
    b: kms_pb2.CreateKeyResponse = await kms.store.CreateKey(kms_pb2.CreateKeyRequest())
    dk: kms_pb2.GenerateDataKeyResponse = await kms.store.GenerateDataKey(
        kms_pb2.GenerateDataKeyRequest(key_id=b.key_metadata.key_id, key_spec="AES_256")
    )
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE kms.key_materials SET wrapped = (SELECT wrapped FROM kms.key_materials WHERE key_id = $1)"
            " WHERE key_id = $2",
            a.key_metadata.key_id,
            b.key_metadata.key_id,
        )
    finally:
        await conn.close()
    err = await kms.fails(
        kms.store.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=dk.ciphertext_blob)), errors.Internal
    )
    assert "cannot be unwrapped" in err.message

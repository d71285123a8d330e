"""GenerateDataKey / Encrypt / Decrypt through the real kms service: round trips, context binding, opaque
failures, key-id checks and server-side bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.core import errors

if TYPE_CHECKING:
    from tests.integration.kms.conftest import KmsHarness

pytestmark = pytest.mark.integration

CONTEXT = {
    "SecretARN": "arn:aws:secretsmanager:local-1:000000000000:secret:db/prod-AbCdEf",
    "SecretVersionId": "6f1c0a43-3f6e-4c0e-9d49-0d3b8e6a1f00",
}


async def _key(kms: KmsHarness) -> kms_pb2.KeyMetadata:
    response: kms_pb2.CreateKeyResponse = await kms.store.CreateKey(kms_pb2.CreateKeyRequest())
    return response.key_metadata


async def _decrypt(
    kms: KmsHarness, blob: bytes, context: dict[str, str], **kw: str
) -> kms_pb2.DecryptResponse:
    response: kms_pb2.DecryptResponse = await kms.store.Decrypt(
        kms_pb2.DecryptRequest(ciphertext_blob=blob, encryption_context=context, **kw)
    )
    return response


async def test_generate_data_key_and_decrypt_round_trip(kms: KmsHarness) -> None:
    meta = await _key(kms)
    await kms.store.CreateAlias(kms_pb2.CreateAliasRequest(alias_name="alias/app", target_key_id=meta.key_id))
    for form in (meta.key_id, meta.arn, "alias/app", kms.alias_arn("alias/app")):
        dk = await kms.store.GenerateDataKey(
            kms_pb2.GenerateDataKeyRequest(key_id=form, key_spec="AES_256", encryption_context=CONTEXT)
        )
        assert dk.key_id == meta.arn  # always the key ARN, never the alias
        assert len(dk.plaintext) == 32 and dk.plaintext not in dk.ciphertext_blob
        assert dk.key_material_id == meta.current_key_material_id
        out = await _decrypt(kms, dk.ciphertext_blob, dict(reversed(CONTEXT.items())))  # order is irrelevant
        assert out.plaintext == dk.plaintext
        assert out.key_id == meta.arn
        assert out.key_material_id == meta.current_key_material_id
        assert out.encryption_algorithm == "SYMMETRIC_DEFAULT"

    short = await kms.store.GenerateDataKey(
        kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, key_spec="AES_128")
    )
    assert len(short.plaintext) == 16
    odd = await kms.store.GenerateDataKey(
        kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, number_of_bytes=7)
    )
    assert len(odd.plaintext) == 7
    assert (await _decrypt(kms, odd.ciphertext_blob, {})).plaintext == odd.plaintext

    # the KeyId on Decrypt must identify the blob's key (an alias matches when it points there now)
    dk = await kms.store.GenerateDataKey(
        kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, key_spec="AES_256")
    )
    for form in (meta.key_id, meta.arn, "alias/app", kms.alias_arn("alias/app")):
        assert (await _decrypt(kms, dk.ciphertext_blob, {}, key_id=form)).plaintext == dk.plaintext
    other = await _key(kms)
    err = await kms.fails(
        _decrypt(kms, dk.ciphertext_blob, {}, key_id=other.key_id),
        errors.IncorrectKey,
        "The key ID in the request does not identify a CMK that can perform this operation.",
    )
    assert err.code == "IncorrectKeyException"


async def test_encrypt_decrypt_and_context_binding(kms: KmsHarness) -> None:
    meta = await _key(kms)
    enc = await kms.store.Encrypt(
        kms_pb2.EncryptRequest(key_id=meta.key_id, plaintext=b"hello world", encryption_context={"ab": "c"})
    )
    assert enc.key_id == meta.arn and enc.encryption_algorithm == "SYMMETRIC_DEFAULT"
    assert b"hello world" not in enc.ciphertext_blob
    assert (await _decrypt(kms, enc.ciphertext_blob, {"ab": "c"})).plaintext == b"hello world"

    bad_contexts: list[dict[str, str]] = [{}, {"a": "bc"}, {"ab": "c", "x": "y"}, {"ab": "C"}, {"AB": "c"}]
    for context in bad_contexts:
        err = await kms.fails(_decrypt(kms, enc.ciphertext_blob, context), errors.InvalidCiphertext, "")
        assert err.code == "InvalidCiphertextException"

    blob = enc.ciphertext_blob
    for i in (0, 1, 5, 40, 80, len(blob) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises((errors.InvalidCiphertext, errors.AccessDenied)) as info:
            await _decrypt(kms, bytes(tampered), {"ab": "c"})
        # a flipped bit inside the key id may name another (missing) key: AWS answers AccessDenied then
        assert info.value.code in {"InvalidCiphertextException", "AccessDeniedException"}
    for garbage in (b"x", blob[:60], blob[:-1], b"\x01" * 300):
        await kms.fails(_decrypt(kms, garbage, {"ab": "c"}), errors.InvalidCiphertext, "")

    # an empty context and an absent one are the same thing
    plain = await kms.store.Encrypt(kms_pb2.EncryptRequest(key_id=meta.arn, plaintext=b"p"))
    assert (await _decrypt(kms, plain.ciphertext_blob, {})).plaintext == b"p"


async def test_blob_of_unknown_key_is_access_denied(kms: KmsHarness) -> None:
    meta = await _key(kms)
    enc = await kms.store.Encrypt(kms_pb2.EncryptRequest(key_id=meta.key_id, plaintext=b"p"))
    forged = enc.ciphertext_blob.replace(meta.key_id.encode(), b"11111111-2222-4333-8444-555555555555")
    await kms.fails(
        _decrypt(kms, forged, {}),
        errors.AccessDenied,
        "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
        "or you are not allowed to access.",
    )


async def test_crypto_bounds_are_enforced_server_side(kms: KmsHarness) -> None:
    meta = await _key(kms)
    err = await kms.fails(
        kms.store.Encrypt(kms_pb2.EncryptRequest(key_id=meta.key_id, plaintext=b"x" * 4097)),
        errors.Validation,
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096",
    )
    assert err.code == "ValidationException"
    await kms.fails(
        kms.store.Encrypt(kms_pb2.EncryptRequest(key_id=meta.key_id, plaintext=b"")),
        errors.Validation,
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
    )
    await kms.store.Encrypt(kms_pb2.EncryptRequest(key_id=meta.key_id, plaintext=b"x" * 4096))
    for n, bound in ((0, "greater than or equal to 1"), (1025, "less than or equal to 1024")):
        err = await kms.fails(
            kms.store.GenerateDataKey(kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, number_of_bytes=n)),
            errors.Validation,
        )
        assert err.message == (
            f"1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: "
            f"Member must have value {bound}"
        )
    for request in (
        kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id),
        kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, key_spec="AES_256", number_of_bytes=32),
    ):
        await kms.fails(
            kms.store.GenerateDataKey(request),
            errors.Validation,
            "Please specify either number of bytes or key spec.",
        )
    err = await kms.fails(
        kms.store.GenerateDataKey(kms_pb2.GenerateDataKeyRequest(key_id=meta.key_id, key_spec="AES_512")),
        errors.Validation,
    )
    assert err.message.endswith("Member must satisfy enum value set: [AES_256, AES_128]")
    big_context = {f"k{i}": "v" * 1000 for i in range(9)}
    await kms.fails(
        kms.store.GenerateDataKey(
            kms_pb2.GenerateDataKeyRequest(
                key_id=meta.key_id, key_spec="AES_256", encryption_context=big_context
            )
        ),
        errors.Validation,
    )
    err = await kms.fails(
        kms.store.Encrypt(
            kms_pb2.EncryptRequest(
                key_id=meta.key_id, plaintext=b"x", encryption_algorithm="RSAES_OAEP_SHA_256"
            )
        ),
        errors.InvalidParameter,
        "Algorithm RSAES_OAEP_SHA_256 is incompatible with key spec SYMMETRIC_DEFAULT.",
    )
    assert err.code == "InvalidKeyUsageException"
    await kms.fails(_decrypt(kms, b"", {}), errors.Validation)
    await kms.fails(_decrypt(kms, b"x" * 6145, {}), errors.Validation)

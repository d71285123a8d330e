"""The KMS ciphertext blob: round trip, tamper detection, context binding, canonical context encoding."""

from __future__ import annotations

import secrets

import pytest

from coffer.core.errors import InvalidCiphertext
from coffer.crypto import blob as blobs
from coffer.crypto.encoding import encode_context

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
CONTEXT = {
    "SecretARN": "arn:aws:secretsmanager:local-1:000000000000:secret:db-AbCdEf",
    "SecretVersionId": "v1",
}


@pytest.fixture
def material() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def material_id() -> bytes:
    return secrets.token_bytes(32)


def _seal(material: bytes, material_id: bytes, plaintext: bytes = b"data key bytes", **ctx: str) -> bytes:
    return blobs.seal_blob(
        key_id=KEY_ID, material_id=material_id, material=material, plaintext=plaintext, context=ctx or CONTEXT
    )


def test_round_trip_and_header_names_key_and_material(material: bytes, material_id: bytes) -> None:
    plaintext = secrets.token_bytes(32)
    blob = _seal(material, material_id, plaintext)
    parsed = blobs.parse_blob(blob)
    assert parsed.key_id == KEY_ID
    assert parsed.material_id_hex == material_id.hex()
    assert blobs.open_blob(parsed, material=material, context=dict(reversed(CONTEXT.items()))) == plaintext
    # plaintext is not visible in the blob, and two seals of the same input differ (random nonce and IV)
    assert plaintext not in blob
    assert _seal(material, material_id, plaintext) != blob
    # overhead stays far below the 6144-byte CiphertextType bound
    assert len(blob) - len(plaintext) < 150


def test_every_flipped_bit_anywhere_fails_opaquely(material: bytes, material_id: bytes) -> None:
    blob = _seal(material, material_id)
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[i] ^= bit
            with pytest.raises(InvalidCiphertext) as info:
                blobs.decrypt_blob(bytes(tampered), material=material, context=CONTEXT)
            assert info.value.message == ""
            assert info.value.code == "InvalidCiphertextException"


def test_truncated_extended_and_garbage_blobs_fail(material: bytes, material_id: bytes) -> None:
    blob = _seal(material, material_id)
    for n in range(len(blob)):
        with pytest.raises(InvalidCiphertext):
            blobs.decrypt_blob(blob[:n], material=material, context=CONTEXT)
    with pytest.raises(InvalidCiphertext):
        blobs.decrypt_blob(blob + b"\x00", material=material, context=CONTEXT)
    with pytest.raises(InvalidCiphertext):
        blobs.parse_blob(b"\x01" * 7000)
    with pytest.raises(InvalidCiphertext):
        blobs.parse_blob(b"\x02" + blob[1:])


def test_wrong_material_fails(material: bytes, material_id: bytes) -> None:
    blob = _seal(material, material_id)
    with pytest.raises(InvalidCiphertext):
        blobs.decrypt_blob(blob, material=secrets.token_bytes(32), context=CONTEXT)


@pytest.mark.parametrize(
    "other",
    [
        {},  # missing entirely
        {"SecretARN": CONTEXT["SecretARN"]},  # one pair missing
        {**CONTEXT, "Extra": "x"},  # extra pair
        {**CONTEXT, "SecretVersionId": "v2"},  # changed value
        {"secretarn": CONTEXT["SecretARN"], "SecretVersionId": "v1"},  # key case differs
        {**CONTEXT, "SecretVersionId": "V1"},  # value case differs
    ],
)
def test_context_must_match_exactly(material: bytes, material_id: bytes, other: dict[str, str]) -> None:
    blob = _seal(material, material_id)
    with pytest.raises(InvalidCiphertext):
        blobs.decrypt_blob(blob, material=material, context=other)


def test_empty_context_round_trips(material: bytes, material_id: bytes) -> None:
    blob = blobs.seal_blob(
        key_id=KEY_ID, material_id=material_id, material=material, plaintext=b"x", context={}
    )
    assert blobs.decrypt_blob(blob, material=material, context={}) == b"x"
    with pytest.raises(InvalidCiphertext):
        blobs.decrypt_blob(blob, material=material, context={"a": ""})


def test_context_encoding_is_unambiguous_and_order_free(material: bytes, material_id: bytes) -> None:
    assert encode_context({"ab": "c"}) != encode_context({"a": "bc"})
    assert encode_context({"a": "b", "c": "d"}) == encode_context({"c": "d", "a": "b"})
    assert encode_context({}) == b""
    # sorted by UTF-8 bytes of the key: "Z" (0x5a) < "a" (0x61) < "é" (0xc3 0xa9)
    assert encode_context({"é": "1", "a": "2", "Z": "3"}) == (
        b"\x00\x00\x00\x01Z\x00\x00\x00\x013"
        b"\x00\x00\x00\x01a\x00\x00\x00\x012"
        b"\x00\x00\x00\x02\xc3\xa9\x00\x00\x00\x011"
    )
    blob = blobs.seal_blob(
        key_id=KEY_ID, material_id=material_id, material=material, plaintext=b"x", context={"ab": "c"}
    )
    with pytest.raises(InvalidCiphertext):
        blobs.decrypt_blob(blob, material=material, context={"a": "bc"})


def test_fixed_nonce_and_iv_are_deterministic(material: bytes, material_id: bytes) -> None:
    kwargs = dict(nonce=b"\x01" * 32, iv=b"\x02" * 12)
    one = blobs.seal_blob(
        key_id=KEY_ID, material_id=material_id, material=material, plaintext=b"p", context={}, **kwargs
    )
    two = blobs.seal_blob(
        key_id=KEY_ID, material_id=material_id, material=material, plaintext=b"p", context={}, **kwargs
    )
    assert one == two
    header = blobs.BlobHeader(key_id=KEY_ID, material_id=material_id, nonce=b"\x01" * 32).encode()
    assert one.startswith(header + b"\x02" * 12)
    assert header[0] == blobs.FORMAT_VERSION and header[1] == len(KEY_ID)

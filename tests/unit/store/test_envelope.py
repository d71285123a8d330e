"""crypto/envelope.py: AES-256-GCM sealing bound to (ARN, version id, kind); every failure is one opaque
DecryptionFailure."""

from __future__ import annotations

import secrets

import pytest

from coffer.core.errors import DecryptionFailure
from coffer.crypto import envelope

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:db/prod-a1B2c3"
VID = "0b8a8e5c-7d3b-4f3a-9a7c-3c2b1a0f9e8d"
KEY = bytes(range(32))


def seal(data: bytes = b"hunter2", **kw: str) -> bytes:
    args = {"secret_arn": ARN, "version_id": VID, "kind": "string", **kw}
    return envelope.seal(KEY, data, nonce=secrets.token_bytes(12), **args)


def test_round_trip_and_format() -> None:
    sealed = seal(b"hunter2")
    assert sealed[0] == envelope.FORMAT_V1
    assert len(sealed) == 1 + 12 + len(b"hunter2") + 16
    assert b"hunter2" not in sealed
    assert envelope.open_sealed(KEY, sealed, secret_arn=ARN, version_id=VID, kind="string") == b"hunter2"


def test_fresh_nonces_give_different_ciphertexts() -> None:
    assert seal() != seal()


def test_every_flipped_byte_fails() -> None:
    sealed = seal(b"a value")
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(DecryptionFailure) as info:
            envelope.open_sealed(KEY, bytes(tampered), secret_arn=ARN, version_id=VID, kind="string")
        assert info.value.code == "DecryptionFailure"


@pytest.mark.parametrize(
    "context",
    [
        {"secret_arn": ARN.replace("a1B2c3", "zzzzzz")},
        {"version_id": VID.replace("0b8a", "0b8b")},
        {"kind": "binary"},
    ],
)
def test_bound_to_arn_version_and_kind(context: dict[str, str]) -> None:
    sealed = seal()
    args = {"secret_arn": ARN, "version_id": VID, "kind": "string", **context}
    with pytest.raises(DecryptionFailure):
        envelope.open_sealed(KEY, sealed, **args)


def test_wrong_key_truncation_and_unknown_format_fail() -> None:
    sealed = seal()
    with pytest.raises(DecryptionFailure):
        envelope.open_sealed(bytes(32), sealed, secret_arn=ARN, version_id=VID, kind="string")
    for bad in (sealed[:20], b"", b"\x02" + sealed[1:]):
        with pytest.raises(DecryptionFailure):
            envelope.open_sealed(KEY, bad, secret_arn=ARN, version_id=VID, kind="string")


def test_associated_data_is_length_prefixed() -> None:
    a = envelope.associated_data(secret_arn="ab", version_id="c", kind="string")
    b = envelope.associated_data(secret_arn="a", version_id="bc", kind="string")
    assert a != b
    assert a.startswith(len(b"coffer-secret-v1").to_bytes(4, "big") + b"coffer-secret-v1")


def test_bad_arguments_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        envelope.seal(KEY, b"x", secret_arn=ARN, version_id=VID, kind="text", nonce=bytes(12))
    with pytest.raises(ValueError):
        envelope.seal(KEY[:16], b"x", secret_arn=ARN, version_id=VID, kind="string", nonce=bytes(12))
    with pytest.raises(ValueError):
        envelope.seal(KEY, b"x", secret_arn=ARN, version_id=VID, kind="string", nonce=bytes(8))

"""Sealing one secret version's value under its data key. Pure: the nonce comes in as an argument.

Format (version 1)::

    0x01 || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)

with associated data = the canonical length-prefixed encoding (each part's UTF-8 bytes preceded by a 4-byte
big-endian length) of ``("coffer-secret-v1", secret ARN, version id, value kind)`` where the kind is
``"string"`` or ``"binary"``. A ciphertext moved to another secret or version, or relabelled from string to
binary, fails to open. Every failure - wrong key, tampered byte, truncated blob, unknown format - is the one
opaque ``DecryptionFailure``.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffer.core.errors import DecryptionFailure

FORMAT_V1 = 0x01
LABEL_V1 = "coffer-secret-v1"
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
KINDS = ("string", "binary")

_U32 = struct.Struct(">I")


def associated_data(*, secret_arn: str, version_id: str, kind: str) -> bytes:
    out = bytearray()
    for part in (LABEL_V1, secret_arn, version_id, kind):
        raw = part.encode("utf-8")
        out += _U32.pack(len(raw))
        out += raw
    return bytes(out)


def seal(
    data_key: bytes, plaintext: bytes, *, secret_arn: str, version_id: str, kind: str, nonce: bytes
) -> bytes:
    """Encrypt a value. ``nonce`` must be 12 fresh random bytes (``secrets.token_bytes(NONCE_SIZE)``)."""
    if kind not in KINDS:
        raise ValueError(f"value kind must be one of {KINDS}")
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"the data key must be {KEY_SIZE} bytes")
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
    aad = associated_data(secret_arn=secret_arn, version_id=version_id, kind=kind)
    return bytes([FORMAT_V1]) + nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def open_sealed(data_key: bytes, sealed: bytes, *, secret_arn: str, version_id: str, kind: str) -> bytes:
    """Inverse of :func:`seal`; any failure raises ``DecryptionFailure`` (one opaque error)."""
    if (
        len(data_key) != KEY_SIZE
        or len(sealed) < 1 + NONCE_SIZE + TAG_SIZE
        or sealed[0] != FORMAT_V1
        or kind not in KINDS
    ):
        raise DecryptionFailure()
    nonce, body = sealed[1 : 1 + NONCE_SIZE], sealed[1 + NONCE_SIZE :]
    aad = associated_data(secret_arn=secret_arn, version_id=version_id, kind=kind)
    try:
        return AESGCM(data_key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionFailure() from None

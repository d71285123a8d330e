"""The KMS ciphertext blob (what Encrypt and GenerateDataKey return, and Decrypt takes). Pure.

Layout::

    0x01 | len(key_id) (1) | key_id (ASCII) | material_id (32 bytes) | nonce (32) | iv (12) | ct | tag (16)
    '----------------------------------- header -----------------------------------'

The header is cleartext, so Decrypt can find the key and the key-material version without a KeyId. Every
message gets its own AES-256-GCM key, ``HKDF-SHA256(material, salt=nonce, info=header)``; the associated data
is ``header || canonical(encryption context)``, so any change to the header, the body or the context fails the
tag check. Every parse, length or tag failure raises the one opaque ``InvalidCiphertext`` (no message).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coffer.core.errors import InvalidCiphertext
from coffer.crypto import aead
from coffer.crypto.encoding import encode_context

FORMAT_VERSION = 0x01
MATERIAL_ID_SIZE = 32
MATERIAL_SIZE = 32
NONCE_SIZE = 32
MAX_KEY_ID_LENGTH = 255
#: CiphertextType upper bound in the AWS model.
MAX_BLOB_SIZE = 6144
_FIXED_OVERHEAD = 2 + MATERIAL_ID_SIZE + NONCE_SIZE + aead.IV_SIZE + aead.TAG_SIZE


@dataclass(frozen=True, slots=True)
class BlobHeader:
    key_id: str
    material_id: bytes
    nonce: bytes

    def encode(self) -> bytes:
        kid = self.key_id.encode("ascii")
        if not 1 <= len(kid) <= MAX_KEY_ID_LENGTH:
            raise ValueError("key id must be 1-255 ASCII characters")
        if len(self.material_id) != MATERIAL_ID_SIZE or len(self.nonce) != NONCE_SIZE:
            raise ValueError("material id and nonce must be 32 bytes each")
        return bytes((FORMAT_VERSION, len(kid))) + kid + self.material_id + self.nonce

    @property
    def material_id_hex(self) -> str:
        return self.material_id.hex()


@dataclass(frozen=True, slots=True)
class ParsedBlob:
    header: BlobHeader
    header_bytes: bytes
    iv: bytes
    ciphertext_and_tag: bytes

    @property
    def key_id(self) -> str:
        return self.header.key_id

    @property
    def material_id_hex(self) -> str:
        return self.header.material_id_hex


def _message_key(material: bytes, nonce: bytes, header: bytes) -> bytes:
    if len(material) != MATERIAL_SIZE:
        raise ValueError("key material must be 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=aead.KEY_SIZE, salt=nonce, info=header).derive(material)


def seal_blob(
    *,
    key_id: str,
    material_id: bytes,
    material: bytes,
    plaintext: bytes,
    context: Mapping[str, str],
    nonce: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """Encrypt ``plaintext`` under one key-material version, binding ``context``. ``nonce``/``iv`` are random
    unless given (tests only)."""
    header = BlobHeader(
        key_id=key_id,
        material_id=material_id,
        nonce=secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce,
    ).encode()
    message_iv = secrets.token_bytes(aead.IV_SIZE) if iv is None else iv
    key = _message_key(material, header[-NONCE_SIZE:], header)
    body = aead.encrypt(key, message_iv, plaintext, aad=header + encode_context(context))
    return header + message_iv + body


def parse_blob(blob: bytes) -> ParsedBlob:
    """Split a blob into header and body; any malformation raises ``InvalidCiphertext``."""
    if not isinstance(blob, bytes | bytearray) or len(blob) > MAX_BLOB_SIZE:
        raise InvalidCiphertext()
    data = bytes(blob)
    if len(data) < _FIXED_OVERHEAD + 1 or data[0] != FORMAT_VERSION:
        raise InvalidCiphertext()
    kid_len = data[1]
    if kid_len == 0 or len(data) < _FIXED_OVERHEAD + kid_len:
        raise InvalidCiphertext()
    pos = 2 + kid_len
    try:
        key_id = data[2:pos].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidCiphertext() from None
    if not key_id.isprintable():
        raise InvalidCiphertext()
    material_id = data[pos : pos + MATERIAL_ID_SIZE]
    pos += MATERIAL_ID_SIZE
    nonce = data[pos : pos + NONCE_SIZE]
    pos += NONCE_SIZE
    header_bytes = data[:pos]
    iv = data[pos : pos + aead.IV_SIZE]
    pos += aead.IV_SIZE
    return ParsedBlob(
        header=BlobHeader(key_id=key_id, material_id=material_id, nonce=nonce),
        header_bytes=header_bytes,
        iv=iv,
        ciphertext_and_tag=data[pos:],
    )


def open_blob(parsed: ParsedBlob, *, material: bytes, context: Mapping[str, str]) -> bytes:
    """Authenticate and decrypt with the key material the header names; ``InvalidCiphertext`` on any failure
    (including a context that is missing, extra or different)."""
    try:
        key = _message_key(material, parsed.header.nonce, parsed.header_bytes)
        return aead.decrypt(
            key, parsed.iv, parsed.ciphertext_and_tag, aad=parsed.header_bytes + encode_context(context)
        )
    except (aead.AeadError, ValueError):
        raise InvalidCiphertext() from None


def decrypt_blob(blob: bytes, *, material: bytes, context: Mapping[str, str]) -> bytes:
    """``parse_blob`` then ``open_blob``."""
    return open_blob(parse_blob(blob), material=material, context=context)

"""AES-256-GCM helpers over ``cryptography``. Pure (randomness from ``secrets``; no I/O).

``seal`` returns ``iv || ciphertext || tag``; ``open_sealed`` reverses it and raises the one opaque
``AeadError`` on any length or authentication failure.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16


class AeadError(Exception):
    """Decryption failed (wrong key, wrong associated data, altered or truncated input). Opaque on purpose."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


def new_key() -> bytes:
    """A fresh random AES-256 key."""
    return secrets.token_bytes(KEY_SIZE)


def _cipher(key: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-256-GCM needs a {KEY_SIZE}-byte key, got {len(key)} bytes")
    return AESGCM(key)


def encrypt(key: bytes, iv: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Low level: ``ciphertext || tag`` under an explicit 12-byte IV (which must never repeat for a key)."""
    if len(iv) != IV_SIZE:
        raise ValueError(f"AES-GCM IV must be {IV_SIZE} bytes")
    return _cipher(key).encrypt(iv, plaintext, aad)


def decrypt(key: bytes, iv: bytes, ciphertext_and_tag: bytes, *, aad: bytes) -> bytes:
    """Low level inverse of ``encrypt``; raises ``AeadError`` on any failure."""
    if len(iv) != IV_SIZE or len(ciphertext_and_tag) < TAG_SIZE:
        raise AeadError()
    try:
        return _cipher(key).decrypt(iv, ciphertext_and_tag, aad)
    except InvalidTag:
        raise AeadError() from None


def seal(key: bytes, plaintext: bytes, *, aad: bytes, iv: bytes | None = None) -> bytes:
    """Encrypt under a random IV (or the given one) and return ``iv || ciphertext || tag``."""
    nonce = secrets.token_bytes(IV_SIZE) if iv is None else iv
    return nonce + encrypt(key, nonce, plaintext, aad=aad)


def open_sealed(key: bytes, sealed: bytes, *, aad: bytes) -> bytes:
    """Inverse of ``seal``; raises ``AeadError`` on any length or authentication failure."""
    if len(sealed) < IV_SIZE + TAG_SIZE:
        raise AeadError()
    return decrypt(key, sealed[:IV_SIZE], sealed[IV_SIZE:], aad=aad)

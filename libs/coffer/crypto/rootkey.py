"""The KMS root key: 32 random bytes kept outside the database that wrap every key-material version. Pure.

Rows in PostgreSQL hold only ``RootKey.wrap`` output: ``0x01 || iv (12) || ciphertext || tag (16)`` under an
AES-256-GCM key derived from the root key, with associated data binding the wrap to (account, region, key id,
material id), so a row moved to another key or another material id fails to unwrap. Loading the key from a
file is ``coffer.rootkey_file``'s job.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coffer.crypto import aead
from coffer.crypto.encoding import encode_strings

ROOT_KEY_SIZE = 32
WRAP_VERSION = 0x01
_WRAP_INFO = b"coffer/kms/root-key/wrap/v1"
_AAD_LABEL = "coffer-kms-material-v1"


class UnwrapError(Exception):
    """The wrapped material does not authenticate under this root key and binding (wrong root key, row moved
    to another key or material id, or corrupted)."""


@dataclass(frozen=True, slots=True)
class MaterialBinding:
    """What a wrapped key-material row belongs to (the wrap's associated data)."""

    account_id: str
    region: str
    key_id: str
    material_id: str

    def encode(self) -> bytes:
        return encode_strings(_AAD_LABEL, self.account_id, self.region, self.key_id, self.material_id)


class RootKey:
    """Holds the root secret in memory only; ``repr`` never shows it."""

    __slots__ = ("_key_id", "_wrap_key")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != ROOT_KEY_SIZE:
            raise ValueError(f"a root key is {ROOT_KEY_SIZE} bytes, got {len(secret)}")
        self._key_id = hmac.new(secret, b"id", hashlib.sha256).hexdigest()[:16]
        self._wrap_key = HKDF(
            algorithm=hashes.SHA256(), length=aead.KEY_SIZE, salt=None, info=_WRAP_INFO
        ).derive(secret)

    @classmethod
    def generate(cls) -> RootKey:
        return cls(secrets.token_bytes(ROOT_KEY_SIZE))

    @property
    def key_id(self) -> str:
        """A short public identifier of this root key (stored beside each wrap, for re-wrapping)."""
        return self._key_id

    def wrap(self, material: bytes, binding: MaterialBinding) -> bytes:
        return bytes((WRAP_VERSION,)) + aead.seal(self._wrap_key, material, aad=self._aad(binding))

    def unwrap(self, wrapped: bytes, binding: MaterialBinding) -> bytes:
        if not wrapped or wrapped[0] != WRAP_VERSION:
            raise UnwrapError("unknown wrap format")
        try:
            return aead.open_sealed(self._wrap_key, wrapped[1:], aad=self._aad(binding))
        except aead.AeadError:
            raise UnwrapError(
                f"key material {binding.material_id} of key {binding.key_id} does not unwrap under root key "
                f"{self._key_id}"
            ) from None

    @staticmethod
    def _aad(binding: MaterialBinding) -> bytes:
        return bytes((WRAP_VERSION,)) + binding.encode()

    def __repr__(self) -> str:
        return f"RootKey(key_id={self._key_id!r})"

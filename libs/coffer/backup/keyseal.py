"""The KMS root key in a backup: encrypted under a key derived from a passphrase. Pure.

scrypt (N=2^17, r=8, p=1: 128 MiB and about a second here, so guessing passphrases is slow) derives a 256-bit
key from the passphrase and a random 16-byte salt; AES-256-GCM with a random 96-bit nonce encrypts the root
key, with associated data binding it to its file name and to the backup's data digest
(:meth:`coffer.backup.manifest.Manifest.data_digest`): the key of one backup does not open in another, and a
changed manifest stops it decrypting. A wrong passphrase and a changed blob give the same error (GCM cannot
tell them apart). The blob is JSON; it never holds the key or the passphrase in the clear.
"""

from __future__ import annotations

import base64
import secrets
import unicodedata
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from coffer.backup import BackupError

FORMAT = "coffer-backup-root-key"
VERSION = 1
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
#: Shorter passphrases are refused when a backup is written.
MIN_PASSPHRASE_LENGTH = 12
_AAD_LABEL = b"coffer-backup-root-key-v1"


def _aad(name: str, data_digest: str) -> bytes:
    return b"\0".join((_AAD_LABEL, name.encode("utf-8"), data_digest.encode("ascii")))


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    normalized = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(normalized)


def check_passphrase(passphrase: str) -> None:
    """A passphrase good enough to write a backup with (long enough; not all blank)."""
    if len(passphrase.strip()) < MIN_PASSPHRASE_LENGTH:
        raise BackupError(
            f"the backup passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long "
            "(and not only blanks)"
        )


def seal(
    secret: bytes,
    passphrase: str,
    *,
    name: str,
    data_digest: str,
    n: int = SCRYPT_N,
    r: int = SCRYPT_R,
    p: int = SCRYPT_P,
) -> dict[str, Any]:
    """``secret`` encrypted under ``passphrase``, as the JSON object written to the backup."""
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    key = _derive(passphrase, salt, n, r, p)
    ciphertext = AESGCM(key).encrypt(nonce, secret, _aad(name, data_digest))
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "kdf": {"name": "scrypt", "salt": _b64(salt), "n": n, "r": r, "p": p},
        "cipher": "AES-256-GCM",
        "nonce": _b64(nonce),
        "ciphertext": _b64(ciphertext),
    }


def open_sealed(blob: Mapping[str, Any], passphrase: str, *, name: str, data_digest: str) -> bytes:
    """The secret in ``blob``; a wrong passphrase or a blob or manifest changed since the backup was written
    is a :class:`BackupError`."""
    try:
        if blob["format"] != FORMAT or blob["version"] != VERSION or blob["cipher"] != "AES-256-GCM":
            raise BackupError(f"the encrypted root key {name} is of an unknown format")
        kdf = blob["kdf"]
        if kdf["name"] != "scrypt":
            raise BackupError(f"the encrypted root key {name} uses an unknown key derivation")
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        salt, nonce, ciphertext = _unb64(kdf["salt"]), _unb64(blob["nonce"]), _unb64(blob["ciphertext"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"the encrypted root key {name} is malformed ({type(exc).__name__})") from None
    if not (2**14 <= n <= 2**22 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise BackupError(f"the encrypted root key {name} has scrypt parameters out of range")
    key = _derive(passphrase, salt, n, r, p)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, _aad(name, data_digest))
    except InvalidTag:
        raise BackupError(
            f"the root key {name} does not decrypt: the passphrase is wrong, or the backup was changed "
            "after it was written"
        ) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("not a string")
    return base64.b64decode(text.encode("ascii"), validate=True)

"""Access keys: the ids and secrets IAM hands out, and the signing key derived from a secret.

An access key id is ``AKIA`` (a user's long-term key) or ``ASIA`` (a session's) followed by 16 characters of
base32 (``A-Z2-7``); a secret access key is 40 characters of URL-safe base64 (240 random bits). The secret is
shown once and never stored: the store keeps only :func:`derive_signing_key` of it, which the caller derives
too and signs each request with (``coffer.crypto.signing``), so the secret itself never crosses the wire.
A session token is 48 random bytes, base64url; the store keeps its SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

USER_PREFIX = "AKIA"
SESSION_PREFIX = "ASIA"
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SIGNING_KEY_LABEL = b"coffer-signing-v1"


def new_access_key_id(prefix: str = USER_PREFIX) -> str:
    if prefix not in (USER_PREFIX, SESSION_PREFIX):
        raise ValueError(f"unknown access key prefix {prefix!r}")
    return prefix + "".join(secrets.choice(_BASE32) for _ in range(16))


def new_secret_access_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(30)).decode("ascii")


def new_session_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(48)).decode("ascii").rstrip("=")


def derive_signing_key(secret_access_key: str) -> bytes:
    """The 32-byte key requests are signed with (and the only form of the secret the store keeps)."""
    return hmac.new(secret_access_key.encode("utf-8"), SIGNING_KEY_LABEL, hashlib.sha256).digest()


def token_digest(session_token: str) -> bytes:
    return hashlib.sha256(session_token.encode("utf-8")).digest()

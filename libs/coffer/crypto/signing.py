"""Request signing: ``COFFER1-HMAC-SHA256``. Pure (no I/O).

A client signs every call with the signing key derived from its secret access key
(``coffer.crypto.access_keys.derive_signing_key``) and sends the gRPC metadata::

    authorization: COFFER1-HMAC-SHA256 Credential=<AccessKeyId>, Timestamp=<unix seconds>, Signature=<hex>
    x-coffer-session-token: <token>        (session credentials, ASIA… keys, only)

The signature is HMAC-SHA256(signing key, canonical string), the canonical string being::

    COFFER1-HMAC-SHA256\\n<full method>\\n<timestamp>\\n<hex sha256 of the request message>\\n
    <hex sha256 of the session token, or empty>

where the request message is serialized with ``SerializeToString(deterministic=True)``. The gateway
recomputes it with the signing key the store keeps for the access key id (:func:`verify_request`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass

from coffer.core import errors

ALGORITHM = "COFFER1-HMAC-SHA256"
AUTHORIZATION_HEADER = "authorization"
SESSION_TOKEN_HEADER = "x-coffer-session-token"
#: How far a request's timestamp may be from the gateway's clock.
MAX_SKEW_SECONDS = 300

MISSING_CODE = "MissingAuthenticationTokenException"
MISSING_MESSAGE = (
    "Missing authentication: sign the request with an access key (gRPC metadata 'authorization: "
    f"{ALGORITHM} Credential=<AccessKeyId>, Timestamp=<unix seconds>, Signature=<hex>'); the Coffer SDK and "
    "CLI do it with COFFER_ACCESS_KEY_ID / COFFER_SECRET_ACCESS_KEY or the profile's keys."
)
INCOMPLETE_CODE = "IncompleteSignature"
UNKNOWN_KEY_CODE = "UnrecognizedClientException"
UNKNOWN_KEY_MESSAGE = "The security token included in the request is invalid."
INVALID_KEY_CODE = "InvalidClientTokenId"
INVALID_KEY_MESSAGE = "The security token included in the request is invalid."
SIGNATURE_CODE = "InvalidSignatureException"
SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your Coffer "
    "Secret Access Key and signing method."
)
EXPIRED_SIGNATURE_MESSAGE = (
    "Signature expired: the request timestamp is more than 5 minutes from the server time."
)
EXPIRED_TOKEN_CODE = "ExpiredTokenException"
EXPIRED_TOKEN_MESSAGE = "The security token included in the request is expired"

_HEADER_RE = re.compile(
    r"^COFFER1-HMAC-SHA256 Credential=(?P<akid>(?:AKIA|ASIA)[A-Z2-7]{16}), "
    r"Timestamp=(?P<ts>[0-9]{1,12}), Signature=(?P<sig>[0-9a-f]{64})$"
)
_EMPTY_SHA256 = ""


@dataclass(frozen=True, slots=True)
class SignedHeader:
    access_key_id: str
    timestamp: int
    signature: str


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def token_hex_digest(session_token: str | None) -> str:
    return hashlib.sha256(session_token.encode("utf-8")).hexdigest() if session_token else _EMPTY_SHA256


def canonical_string(method: str, timestamp: int, body_sha256: str, token_sha256: str) -> str:
    return f"{ALGORITHM}\n{method}\n{timestamp}\n{body_sha256}\n{token_sha256}"


def signature(signing_key: bytes, method: str, timestamp: int, body: bytes, session_token: str | None) -> str:
    canonical = canonical_string(method, timestamp, body_digest(body), token_hex_digest(session_token))
    return hmac.new(signing_key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_header(access_key_id: str, timestamp: int, sig: str) -> str:
    return f"{ALGORITHM} Credential={access_key_id}, Timestamp={timestamp}, Signature={sig}"


def sign_request(
    *,
    access_key_id: str,
    signing_key: bytes,
    method: str,
    body: bytes,
    timestamp: int,
    session_token: str | None = None,
) -> list[tuple[str, str]]:
    """The metadata that authenticates one call."""
    sig = signature(signing_key, method, timestamp, body, session_token)
    out = [(AUTHORIZATION_HEADER, authorization_header(access_key_id, timestamp, sig))]
    if session_token:
        out.append((SESSION_TOKEN_HEADER, session_token))
    return out


def parse_authorization(header: str | None) -> SignedHeader:
    """The parts of an ``authorization`` header; ``MissingAuthenticationTokenException`` without one,
    ``IncompleteSignature`` for one of the wrong shape."""
    if header is None or not header.strip():
        raise errors.Unauthenticated(MISSING_MESSAGE, code=MISSING_CODE)
    match = _HEADER_RE.match(header.strip())
    if match is None:
        if not header.strip().startswith(ALGORITHM + " "):
            raise errors.Unauthenticated(
                f"Unsupported authorization scheme: use {ALGORITHM} (bearer tokens are no longer accepted).",
                code=MISSING_CODE,
            )
        raise errors.Unauthenticated(
            f"Malformed authorization header: expected '{ALGORITHM} Credential=<AccessKeyId>, "
            "Timestamp=<unix seconds>, Signature=<64 hex>'.",
            code=INCOMPLETE_CODE,
        )
    return SignedHeader(match["akid"], int(match["ts"]), match["sig"])


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """What the gateway knows of an access key (from the principal directory)."""

    access_key_id: str
    signing_key: bytes
    active: bool = True
    #: Sessions (ASIA…): the SHA-256 of the session token and the expiry.
    token_sha256: bytes | None = None
    expires: dt.datetime | None = None


def check_key(
    key: KeyMaterial | None,
    access_key_id: str,
    *,
    session_token: str | None,
    now: float,
    token_header: str = SESSION_TOKEN_HEADER,
    invalid_token_code: str = INVALID_KEY_CODE,
) -> KeyMaterial:
    """The checks of an access key before its signature is: it exists and is active, and a session key
    (ASIA…, or any key with a token hash) comes with its own unexpired session token, a long-term key
    with none. Raises ``errors.Unauthenticated`` with the AWS error name; returns ``key``. Shared by both
    signature schemes (this module's and SigV4 on the AWS-protocol endpoint, whose token arrives in
    ``token_header`` and whose forged tokens AWS names ``invalid_token_code``)."""
    if key is None:
        raise errors.Unauthenticated(UNKNOWN_KEY_MESSAGE, code=UNKNOWN_KEY_CODE)
    if not key.active:
        raise errors.Unauthenticated(INVALID_KEY_MESSAGE, code=invalid_token_code)
    if key.token_sha256 is not None or access_key_id.startswith("ASIA"):
        if not session_token or key.token_sha256 is None:
            raise errors.Unauthenticated(
                f"Session credentials need their session token ({token_header}).",
                code=invalid_token_code,
            )
        if not hmac.compare_digest(hashlib.sha256(session_token.encode("utf-8")).digest(), key.token_sha256):
            raise errors.Unauthenticated(INVALID_KEY_MESSAGE, code=invalid_token_code)
        if key.expires is not None and now >= key.expires.timestamp():
            raise errors.Unauthenticated(EXPIRED_TOKEN_MESSAGE, code=EXPIRED_TOKEN_CODE)
    elif session_token:
        raise errors.Unauthenticated(
            "A session token was sent with a long-term access key (AKIA…): send it only with session "
            "credentials.",
            code=invalid_token_code,
        )
    return key


def verify_request(
    key: KeyMaterial | None,
    header: SignedHeader,
    *,
    method: str,
    body: bytes,
    session_token: str | None,
    now: float,
) -> None:
    """Raise ``errors.Unauthenticated`` (with the AWS error name) unless ``header`` is a valid signature
    of this call by ``key`` (None: an unknown access key id)."""
    key = check_key(key, header.access_key_id, session_token=session_token, now=now)
    if abs(now - header.timestamp) > MAX_SKEW_SECONDS:
        raise errors.Unauthenticated(EXPIRED_SIGNATURE_MESSAGE, code=SIGNATURE_CODE)
    expected = signature(key.signing_key, method, header.timestamp, body, session_token)
    if not hmac.compare_digest(expected, header.signature):
        raise errors.Unauthenticated(SIGNATURE_MESSAGE, code=SIGNATURE_CODE)

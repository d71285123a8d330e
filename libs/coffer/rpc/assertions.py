"""Principal assertions: how the store and the kms learn, in a form they can verify, on whose behalf the
gateway calls them.

The gateway authenticates the end caller, then attaches ``x-coffer-assertion``: the principal, the
audience (the internal services that may accept it) and an expiry, signed with the gateway's Ed25519
principal-signing key (not its TLS key; only the gateway reads the private half, the store and the kms hold
the public half). The store forwards the assertion it verified to the kms. A claimed principal without a
valid assertion is refused, so a stolen gateway certificate alone cannot act as anybody but
``service/gateway``.

Cost: signing and verifying are public-key operations, so both sides amortise them. The gateway signs one
assertion per principal and reuses it for :data:`REUSE_SECONDS`; each is valid for
:data:`LIFETIME_SECONDS`, so a reused one always has at least a minute left. The verifier remembers the
assertions it verified (token -> principal, expiry) in a bounded dict: in the steady state both sides cost a
dict lookup and a clock read per call.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from coffer.core import errors

VERSION = "v1"
#: How long an assertion is valid, and for how long the gateway reuses one it signed.
LIFETIME_SECONDS = 120.0
REUSE_SECONDS = 60.0
#: The internal services a gateway assertion is meant for (the store forwards it to the kms).
AUDIENCE = ("store", "kms")
#: Bound on each side's cache; when full it is emptied (the entries are rebuilt on the next calls).
CACHE_MAX = 4096
#: Longest principal accepted in an assertion (an ARN, or a service name such as ``service/rotation``).
MAX_PRINCIPAL_CHARS = 256


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid assertion says: the principal (``sub``: an ARN, or ``service/<name>``), and for IAM
    principals the access key id the gateway verified (``akid``) and the principal's account (``acct``)."""

    principal: str
    access_key_id: str | None = None
    account: str | None = None


class PrincipalSigner:
    """The gateway's side: ``assertion_for(principal)``, signed at most once per :data:`REUSE_SECONDS`."""

    def __init__(
        self,
        key: ed25519.Ed25519PrivateKey,
        *,
        audience: Iterable[str] = AUDIENCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._audience = list(audience)
        self._clock = clock
        self._cache: dict[tuple[str, str | None], tuple[float, str]] = {}

    @classmethod
    def from_file(cls, path: Path) -> PrincipalSigner:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def assertion_for(
        self, principal: str, *, access_key_id: str | None = None, account: str | None = None
    ) -> str:
        now = self._clock()
        cache_key = (principal, access_key_id)
        cached = self._cache.get(cache_key)
        if cached is not None and now - cached[0] < REUSE_SECONDS:
            return cached[1]
        claims: dict[str, object] = {
            "sub": principal,
            "aud": self._audience,
            "exp": int(now + LIFETIME_SECONDS),
        }
        if access_key_id is not None:
            claims["akid"] = access_key_id
        if account is not None:
            claims["acct"] = account
        payload = json.dumps(claims, separators=(",", ":")).encode()
        signed = f"{VERSION}.{_b64(payload)}"
        token = f"{signed}.{_b64(self._key.sign(signed.encode('ascii')))}"
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[cache_key] = (now, token)
        return token


class PrincipalVerifier:
    """The store's and the kms's side: ``verify(token)`` returns the principal of a valid assertion meant for
    ``audience`` (this service's identity), or raises ``AccessDenied``."""

    def __init__(
        self,
        public_key: ed25519.Ed25519PublicKey,
        *,
        audience: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = public_key
        self._audience = audience
        self._clock = clock
        self._verified: dict[str, tuple[Claims, float]] = {}

    @classmethod
    def from_file(cls, path: Path, *, audience: str) -> PrincipalVerifier:
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError(f"{path} is not an Ed25519 public key")
        return cls(key, audience=audience)

    def verify(self, token: str) -> str:
        return self.verify_claims(token).principal

    def verify_claims(self, token: str) -> Claims:
        now = self._clock()
        hit = self._verified.get(token)
        if hit is not None:
            if now < hit[1]:
                return hit[0]
            del self._verified[token]
            raise errors.AccessDenied("The principal assertion has expired.")
        claims, expires = self._check(token, now)
        if len(self._verified) >= CACHE_MAX:
            self._verified.clear()
        self._verified[token] = (claims, expires)
        return claims

    def _check(self, token: str, now: float) -> tuple[Claims, float]:
        version, _, rest = token.partition(".")
        payload_b64, _, sig_b64 = rest.partition(".")
        try:
            if version != VERSION or not payload_b64 or not sig_b64:
                raise ValueError("malformed")
            self._key.verify(_unb64(sig_b64), f"{version}.{payload_b64}".encode("ascii"))
            claims = json.loads(_unb64(payload_b64))
        except (ValueError, UnicodeError, binascii.Error, InvalidSignature):
            raise errors.AccessDenied("The principal assertion is not valid.") from None
        principal = claims.get("sub") if isinstance(claims, dict) else None
        audience = claims.get("aud") if isinstance(claims, dict) else None
        expires = claims.get("exp") if isinstance(claims, dict) else None
        if (
            not isinstance(principal, str)
            or not 0 < len(principal) <= MAX_PRINCIPAL_CHARS
            or not isinstance(audience, list)
            or not isinstance(expires, int)
        ):
            raise errors.AccessDenied("The principal assertion is not valid.")
        if self._audience not in audience:
            raise errors.AccessDenied(f"The principal assertion is not meant for {self._audience}.")
        if now >= expires:
            raise errors.AccessDenied("The principal assertion has expired.")
        akid = claims.get("akid")
        acct = claims.get("acct")
        if (akid is not None and not isinstance(akid, str)) or (
            acct is not None and not isinstance(acct, str)
        ):
            raise errors.AccessDenied("The principal assertion is not valid.")
        return Claims(principal, akid, acct), float(expires)

"""Principal assertions (``coffer.rpc.assertions``): what the store and the kms accept as the end caller's
principal. Only an assertion signed by the gateway's key, meant for the verifying service and not expired,
names a principal; a forged, tampered, foreign-key, wrong-audience or expired one is AccessDenied. Both sides
amortise the public-key work (one signature per principal per minute, one verification per assertion)."""

from __future__ import annotations

import base64
import json
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from coffer.core import errors
from coffer.rpc.assertions import LIFETIME_SECONDS, REUSE_SECONDS, PrincipalSigner, PrincipalVerifier


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _verifier(key: ed25519.Ed25519PrivateKey, clock: Clock, audience: str = "store") -> PrincipalVerifier:
    return PrincipalVerifier(key.public_key(), audience=audience, clock=clock)


def test_a_signed_assertion_names_its_principal_for_each_audience(
    key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    token = PrincipalSigner(key, clock=clock).assertion_for("user/alice")
    assert _verifier(key, clock, "store").verify(token) == "user/alice"
    assert _verifier(key, clock, "kms").verify(token) == "user/alice"


def test_the_signer_reuses_an_assertion_for_a_minute_then_signs_a_new_one(
    key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    signer = PrincipalSigner(key, clock=clock)
    first = signer.assertion_for("user/alice")
    clock.now += REUSE_SECONDS - 1
    assert signer.assertion_for("user/alice") == first
    assert signer.assertion_for("user/bob") != first
    clock.now += 2
    second = signer.assertion_for("user/alice")
    assert second != first
    # a reused assertion still has at least LIFETIME - REUSE seconds to live when it is sent
    assert _verifier(key, clock).verify(first) == "user/alice"
    assert LIFETIME_SECONDS - REUSE_SECONDS >= 60


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    loaded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return loaded


def _forge(token: str, **changes: object) -> str:
    """``token`` with its claims changed but its signature kept."""
    version, _, sig = token.split(".")
    claims = {**_claims(token), **changes}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{version}.{payload}.{sig}"


def test_forged_tampered_and_foreign_assertions_are_refused(
    key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    verifier = _verifier(key, clock)
    token = PrincipalSigner(key, clock=clock).assertion_for("user/alice")
    other_key = ed25519.Ed25519PrivateKey.generate()
    refused = [
        "",
        "user/admin",
        "v1.e30.AAAA",
        token + "x",
        _forge(token, sub="user/admin"),
        _forge(token, exp=int(clock.now) + 10**6),
        PrincipalSigner(other_key, clock=clock).assertion_for("user/admin"),
    ]
    for bad in refused:
        with pytest.raises(errors.AccessDenied):
            verifier.verify(bad)
    assert verifier.verify(token) == "user/alice"


def test_an_assertion_for_another_audience_is_refused(key: ed25519.Ed25519PrivateKey, clock: Clock) -> None:
    token = PrincipalSigner(key, audience=("kms",), clock=clock).assertion_for("user/alice")
    with pytest.raises(errors.AccessDenied, match="not meant for store"):
        _verifier(key, clock, "store").verify(token)
    assert _verifier(key, clock, "kms").verify(token) == "user/alice"


def test_an_expired_assertion_is_refused_even_once_cached(
    key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    verifier = _verifier(key, clock)
    token = PrincipalSigner(key, clock=clock).assertion_for("user/alice")
    assert verifier.verify(token) == "user/alice"  # now cached
    clock.now += LIFETIME_SECONDS
    with pytest.raises(errors.AccessDenied, match="expired"):
        verifier.verify(token)
    with pytest.raises(errors.AccessDenied, match="expired"):
        _verifier(key, clock).verify(token)  # and uncached


def test_the_steady_state_needs_no_public_key_operation(key: ed25519.Ed25519PrivateKey, clock: Clock) -> None:
    """After the first call, signing and verifying are dict lookups: one signature checked for 100 calls."""

    class Counting:
        calls = 0

        def verify(self, signature: bytes, data: bytes) -> None:
            Counting.calls += 1
            key.public_key().verify(signature, data)

    signer = PrincipalSigner(key, clock=clock)
    verifier = PrincipalVerifier(cast(ed25519.Ed25519PublicKey, Counting()), audience="store", clock=clock)
    for _ in range(100):
        assert verifier.verify(signer.assertion_for("user/alice")) == "user/alice"
    assert Counting.calls == 1

"""COFFER1-HMAC-SHA256: the canonical string, the header, and each refusal of verify_request."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core import errors
from coffer.crypto import signing
from coffer.crypto.access_keys import derive_signing_key, new_access_key_id, new_session_token, token_digest

METHOD = "/coffer.api.secrets.v1.SecretsManagerService/GetSecretValue"
NOW = 1_800_000_000
SECRET = "s3cr3t-access-key-of-forty-characters-xx"
AKID = "AKIA" + "A" * 16


def _key(**kw: object) -> signing.KeyMaterial:
    return signing.KeyMaterial(access_key_id=AKID, signing_key=derive_signing_key(SECRET), **kw)  # type: ignore[arg-type]


def _signed(
    request: sm.GetSecretValueRequest,
    *,
    secret: str = SECRET,
    akid: str = AKID,
    ts: int = NOW,
    token: str | None = None,
    method: str = METHOD,
) -> tuple[signing.SignedHeader, bytes]:
    body = request.SerializeToString(deterministic=True)
    md = dict(
        signing.sign_request(
            access_key_id=akid,
            signing_key=derive_signing_key(secret),
            method=method,
            body=body,
            timestamp=ts,
            session_token=token,
        )
    )
    return signing.parse_authorization(md["authorization"]), body


def test_canonical_string_and_signature_are_the_documented_ones() -> None:
    request = sm.GetSecretValueRequest(secret_id="db/prod")
    body = request.SerializeToString(deterministic=True)
    canonical = signing.canonical_string(METHOD, NOW, hashlib.sha256(body).hexdigest(), "")
    assert canonical == f"COFFER1-HMAC-SHA256\n{METHOD}\n{NOW}\n{hashlib.sha256(body).hexdigest()}\n"
    expected = hmac.new(derive_signing_key(SECRET), canonical.encode(), hashlib.sha256).hexdigest()
    assert signing.signature(derive_signing_key(SECRET), METHOD, NOW, body, None) == expected
    token = "tok"
    assert signing.canonical_string(METHOD, NOW, "b", signing.token_hex_digest(token)).endswith(
        "\n" + hashlib.sha256(b"tok").hexdigest()
    )


def test_header_round_trip() -> None:
    header, _ = _signed(sm.GetSecretValueRequest(secret_id="x"))
    assert header.access_key_id == AKID and header.timestamp == NOW and len(header.signature) == 64
    text = signing.authorization_header(AKID, NOW, header.signature)
    assert text.startswith("COFFER1-HMAC-SHA256 Credential=AKIA")


def test_a_valid_signature_passes() -> None:
    header, body = _signed(sm.GetSecretValueRequest(secret_id="x"))
    signing.verify_request(_key(), header, method=METHOD, body=body, session_token=None, now=NOW + 10)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_header(value: str | None) -> None:
    with pytest.raises(errors.Unauthenticated) as info:
        signing.parse_authorization(value)
    assert info.value.code == "MissingAuthenticationTokenException"


def test_bearer_is_refused_and_malformed_is_incomplete() -> None:
    with pytest.raises(errors.Unauthenticated) as info:
        signing.parse_authorization("Bearer cfr_x_y")
    assert info.value.code == "MissingAuthenticationTokenException"
    with pytest.raises(errors.Unauthenticated) as info:
        signing.parse_authorization("COFFER1-HMAC-SHA256 Credential=nope, Timestamp=1, Signature=zz")
    assert info.value.code == "IncompleteSignature"


def test_unknown_and_inactive_keys() -> None:
    header, body = _signed(sm.GetSecretValueRequest(secret_id="x"))
    with pytest.raises(errors.Unauthenticated) as info:
        signing.verify_request(None, header, method=METHOD, body=body, session_token=None, now=NOW)
    assert info.value.code == "UnrecognizedClientException"
    assert info.value.message == "The security token included in the request is invalid."
    with pytest.raises(errors.Unauthenticated) as info:
        signing.verify_request(
            _key(active=False), header, method=METHOD, body=body, session_token=None, now=NOW
        )
    assert info.value.code == "InvalidClientTokenId"


def test_wrong_secret_other_body_other_method_are_bad_signatures() -> None:
    request = sm.GetSecretValueRequest(secret_id="x")
    header, body = _signed(request, secret="another secret")
    other = sm.GetSecretValueRequest(secret_id="y").SerializeToString(deterministic=True)
    good_header, _ = _signed(request)
    for h, b, m in ((header, body, METHOD), (good_header, other, METHOD), (good_header, body, METHOD + "x")):
        with pytest.raises(errors.Unauthenticated) as info:
            signing.verify_request(_key(), h, method=m, body=b, session_token=None, now=NOW)
        assert info.value.code == "InvalidSignatureException"
        assert info.value.message.startswith(
            "The request signature we calculated does not match the signature you provided"
        )


@pytest.mark.parametrize("skew", [-301, 301, 10_000])
def test_skew_over_five_minutes_is_expired(skew: int) -> None:
    header, body = _signed(sm.GetSecretValueRequest(secret_id="x"))
    with pytest.raises(errors.Unauthenticated) as info:
        signing.verify_request(_key(), header, method=METHOD, body=body, session_token=None, now=NOW + skew)
    assert info.value.code == "InvalidSignatureException"
    assert info.value.message.startswith("Signature expired")


def test_skew_within_five_minutes_passes() -> None:
    header, body = _signed(sm.GetSecretValueRequest(secret_id="x"))
    for skew in (-300, 300):
        signing.verify_request(_key(), header, method=METHOD, body=body, session_token=None, now=NOW + skew)


def _session(expires: dt.datetime) -> tuple[signing.KeyMaterial, str, str]:
    akid, token = new_access_key_id("ASIA"), new_session_token()
    key = signing.KeyMaterial(
        access_key_id=akid,
        signing_key=derive_signing_key(SECRET),
        token_sha256=token_digest(token),
        expires=expires,
    )
    return key, akid, token


def test_sessions_need_their_token_and_expire() -> None:
    later = dt.datetime.fromtimestamp(NOW + 3600, dt.UTC)
    key, akid, token = _session(later)
    request = sm.GetSecretValueRequest(secret_id="x")
    header, body = _signed(request, akid=akid, token=token)
    signing.verify_request(key, header, method=METHOD, body=body, session_token=token, now=NOW)
    for sent in (None, "wrong-token"):
        with pytest.raises(errors.Unauthenticated) as info:
            signing.verify_request(key, header, method=METHOD, body=body, session_token=sent, now=NOW)
        assert info.value.code == "InvalidClientTokenId"
    expired_key, akid2, token2 = _session(dt.datetime.fromtimestamp(NOW - 1, dt.UTC))
    header2, body2 = _signed(request, akid=akid2, token=token2)
    with pytest.raises(errors.Unauthenticated) as info:
        signing.verify_request(expired_key, header2, method=METHOD, body=body2, session_token=token2, now=NOW)
    assert info.value.code == "ExpiredTokenException"
    assert info.value.message == "The security token included in the request is expired"


def test_a_session_token_with_a_long_term_key_is_refused() -> None:
    header, body = _signed(sm.GetSecretValueRequest(secret_id="x"), token="tok")
    with pytest.raises(errors.Unauthenticated) as info:
        signing.verify_request(_key(), header, method=METHOD, body=body, session_token="tok", now=NOW)
    assert info.value.code == "InvalidClientTokenId"

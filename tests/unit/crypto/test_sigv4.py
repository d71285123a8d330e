"""SigV4 verification (aws-wire.md §1 and §2): botocore's own signer makes the requests, the §1.3 test
vector pins the arithmetic, and each refusal carries AWS's code and exact text."""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from coffer.core import errors
from coffer.crypto import sigv4
from coffer.crypto.sigv4 import HttpRequest

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLETOKEN"
REGION = "local-1"
ENDPOINT = "https://coffer.example:8443"


# --- building requests as clients send them ------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _to_http(method: str, url: str, headers: list[tuple[str, Any]], body: bytes | str | None) -> HttpRequest:
    """The request as the server receives it: the Host header the HTTP client adds, raw path and query,
    header values as text (botocore keeps some as bytes until they are written)."""
    parts = urlsplit(url)
    received: dict[str, list[str]] = {}
    for name, value in [("Host", parts.netloc), *headers]:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        received.setdefault(name.lower(), []).append(text)
    data = body.encode() if isinstance(body, str) else (body or b"")
    return HttpRequest(method=method, path=parts.path, query=parts.query, headers=received, body=data)


def client_request(
    service: str,
    operation: str,
    params: Mapping[str, Any],
    *,
    region: str = REGION,
    secret: str = SECRET,
    token: str | None = None,
    endpoint: str = ENDPOINT,
) -> HttpRequest:
    """The request a botocore client sends for one call, caught before it leaves (``before-send``)."""
    client = botocore.session.get_session().create_client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=AKID,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}),
    )

    def capture(request: Any, **_: Any) -> None:
        raise _Captured(request)

    client.meta.events.register("before-send", capture)
    with pytest.raises(_Captured) as caught:
        getattr(client, operation)(**params)
    sent = caught.value.request
    return _to_http(sent.method, sent.url, list(sent.headers.items()), sent.body)


def signed_request(
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    service: str = "secretsmanager",
    region: str = REGION,
    token: str | None = None,
) -> HttpRequest:
    """An AWSRequest signed by botocore's SigV4Auth (repeated headers kept, as the wire carries them)."""
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders appends: a repeated name is sent twice
    SigV4Auth(Credentials(AKID, SECRET, token), service, region).add_auth(request)
    return _to_http(method, request.prepare().url, list(request.headers.items()), body)


def signed_at(request: HttpRequest) -> int:
    """Epoch seconds of the request's X-Amz-Date."""
    return calendar.timegm(time.strptime(request.headers["x-amz-date"][0], "%Y%m%dT%H%M%SZ"))


def check_at_signing(
    header: sigv4.SigV4Header, request: HttpRequest, service: str = "secretsmanager"
) -> None:
    """``check`` with the server's clock at the request's own time."""
    sigv4.check(header, request, region=REGION, service=service, now=signed_at(request))


def accept(request: HttpRequest, *, service: str = "secretsmanager") -> sigv4.SigV4Header:
    header = sigv4.parse(request)
    check_at_signing(header, request, service)
    sigv4.verify(header, request, SECRET)
    return header


def with_body(request: HttpRequest, body: bytes) -> HttpRequest:
    return HttpRequest(request.method, request.path, request.query, request.headers, body)


def refusal(call: Callable[[], object], code: str) -> str:
    with pytest.raises(errors.Unauthenticated) as caught:
        call()
    assert caught.value.code == code
    return caught.value.message


def with_headers(request: HttpRequest, **changes: list[str] | None) -> HttpRequest:
    headers = {k: list(v) for k, v in request.headers.items()}
    for name, values in changes.items():
        key = name.replace("_", "-")
        if values is None:
            headers.pop(key, None)
        else:
            headers[key] = values
    return HttpRequest(request.method, request.path, request.query, headers, request.body)


def with_authorization(request: HttpRequest, old: str, new: str) -> HttpRequest:
    auth = request.headers["authorization"][0]
    assert old in auth
    return with_headers(request, authorization=[auth.replace(old, new)])


GET_SECRET = ("secretsmanager", "get_secret_value", {"SecretId": "db"})


# --- the test vector (aws-wire.md §1.3) ---------------------------------------------------------------


def _vector(token: str | None) -> HttpRequest:
    headers = {
        "host": ["coffer.example:8443"],
        "content-type": ["application/x-amz-json-1.1"],
        "x-amz-date": ["20261201T120000Z"],
        "x-amz-target": ["secretsmanager.GetSecretValue"],
    }
    if token is not None:
        headers["x-amz-security-token"] = [token]
    return HttpRequest("POST", "/", "", headers, b'{"SecretId": "db"}')


@pytest.mark.parametrize(
    ("token", "canonical_sha256", "signature"),
    [
        (
            None,
            "1fca8457d51ed306c4f4506d55223a7866aaa22fde1b0eb0d8733a94d398c424",
            "bd4bc90729078285f5497c96c57b8df767a59c3ebce74210834cc274e70e163e",
        ),
        (
            TOKEN,
            "14d8345d80c8d925a88401de7bcef65879cff3415f13d21141bfc84d0e3fba6a",
            "37c0e6e474b2288ee86834e6fd82de627f3f2feb031f5d8104303f3fcecefd30",
        ),
    ],
)
def test_the_documented_test_vector(token: str | None, canonical_sha256: str, signature: str) -> None:
    request = _vector(token)
    assert hashlib.sha256(request.body).hexdigest() == (
        "01bbb3fa0b5f7072fe075849a0ebd9dfb1c642a4aae124c5afb867580f3b1f0c"
    )
    signed = "content-type;host;x-amz-date;x-amz-target" + (";x-amz-security-token" if token else "")
    signed = ";".join(sorted(signed.split(";")))
    auth = (
        f"AWS4-HMAC-SHA256 Credential={AKID}/20261201/local-1/secretsmanager/aws4_request, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    request = with_headers(request, authorization=[auth])
    header = sigv4.parse(request)
    assert header == sigv4.SigV4Header(
        access_key_id=AKID,
        scope_date="20261201",
        region="local-1",
        service="secretsmanager",
        terminator="aws4_request",
        signed_headers=tuple(signed.split(";")),
        signature=signature,
        amz_date="20261201T120000Z",
    )
    to_sign = sigv4.string_to_sign(header, sigv4.canonical_request(header, request))
    assert to_sign.split("\n") == [
        "AWS4-HMAC-SHA256",
        "20261201T120000Z",
        "20261201/local-1/secretsmanager/aws4_request",
        canonical_sha256,
    ]
    now = calendar.timegm((2026, 12, 1, 12, 0, 0, 0, 0, 0))
    sigv4.check(header, request, region="local-1", service="secretsmanager", now=now)
    sigv4.verify(header, request, SECRET)
    assert sigv4.session_token(request) == token
    # …and one character of the secret decides it
    refusal(lambda: sigv4.verify(header, request, SECRET[:-1] + "X"), "InvalidSignatureException")


# --- what botocore clients send is accepted -------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "operation", "params"),
    [
        GET_SECRET,
        ("secretsmanager", "list_secrets", {}),
        ("kms", "encrypt", {"KeyId": "alias/app", "Plaintext": b"\x00\xff data"}),
        ("sts", "get_caller_identity", {}),
        (
            "sts",
            "assume_role",
            {
                "RoleArn": "arn:aws:iam::111122223333:role/app",
                "RoleSessionName": "s1",
                "Tags": [{"Key": "team", "Value": "a b&c=d"}],
            },
        ),
    ],
)
def test_botocore_client_requests_verify(service: str, operation: str, params: dict[str, Any]) -> None:
    request = client_request(service, operation, params)
    header = accept(request, service=service)
    assert header.access_key_id == AKID and header.region == REGION and header.service == service
    assert "host" in header.signed_headers and "x-amz-date" in header.signed_headers
    assert "user-agent" not in header.signed_headers  # sent, not signed: a proxy may append to it
    assert sigv4.session_token(request) is None


def test_session_credentials_sign_the_token_and_the_caller_gets_it() -> None:
    request = client_request(*GET_SECRET, token=TOKEN)
    header = accept(request)
    assert "x-amz-security-token" in header.signed_headers
    assert sigv4.session_token(request) == TOKEN
    swapped = with_headers(request, x_amz_security_token=["AnotherToken"])
    message = refusal(lambda: sigv4.verify(header, swapped, SECRET), "InvalidSignatureException")
    assert message == sigv4.SIGNATURE_MISMATCH_MESSAGE


def test_an_endpoint_path_is_signed_as_sent() -> None:
    request = client_request(*GET_SECRET, endpoint="https://coffer.example/coffer/aws")
    assert request.path == "/coffer/aws" and request.headers["host"] == ["coffer.example"]
    accept(request)
    moved = HttpRequest(request.method, "/", request.query, request.headers, request.body)
    header = sigv4.parse(moved)
    refusal(lambda: sigv4.verify(header, moved, SECRET), "InvalidSignatureException")


def test_uri_query_and_header_canonicalisation_match_botocore() -> None:
    url = "https://coffer.example:8443/a/./b//c/../d%20e/~x/?z=1&a=%2F%20&a=0&b=&sp=x%2By"
    request = signed_request(
        "GET",
        url,
        headers=[("X-Spaced", "  one   two  "), ("X-Multi", "first"), ("X-Multi", " second  value ")],
    )
    assert request.headers["x-multi"] == ["first", " second  value "]
    header = accept(request)
    assert {"x-spaced", "x-multi"} <= set(header.signed_headers)
    canonical = sigv4.canonical_request(header, request).split("\n")
    assert canonical[1] == "/a/b/d%2520e/~x/"
    assert canonical[2] == "a=%2F%20&a=0&b=&sp=x%2By&z=1"
    assert "x-multi:first,second value" in canonical and "x-spaced:one two" in canonical
    # the order of repeated values is signed too
    swapped = with_headers(request, x_multi=[" second  value ", "first"])
    refusal(lambda: sigv4.verify(header, swapped, SECRET), "InvalidSignatureException")


def test_a_date_header_stands_in_for_x_amz_date() -> None:
    request = signed_request("POST", ENDPOINT + "/", headers=[("Date", "placeholder")], body=b"{}")
    assert "x-amz-date" not in request.headers
    assert request.headers["date"][0].endswith(
        " -0000"
    )  # botocore sends an HTTP date, signs the basic format
    header = sigv4.parse(request)
    assert header.amz_date.endswith("Z") and "date" in header.signed_headers
    now = calendar.timegm(time.strptime(header.amz_date, "%Y%m%dT%H%M%SZ"))
    sigv4.check(header, request, region=REGION, service="secretsmanager", now=now)
    sigv4.verify(header, request, SECRET)
    for http_date in ("Tue, 01 Dec 2026 12:00:00 GMT", "Tue, 01 Dec 2026 13:00:00 +0100"):
        other = with_headers(request, date=[http_date])
        assert sigv4.parse(other).amz_date == "20261201T120000Z"
    # X-Amz-Date wins over Date
    both = with_headers(request, x_amz_date=["20261201T110000Z"])
    assert sigv4.parse(both).amz_date == "20261201T110000Z"


def test_x_amz_content_sha256_is_used_and_must_be_the_body_hash() -> None:
    body = b'{"SecretId": "db"}'
    digest = hashlib.sha256(body).hexdigest()
    request = signed_request("POST", ENDPOINT + "/", headers=[("X-Amz-Content-SHA256", digest)], body=body)
    header = accept(request)
    assert "x-amz-content-sha256" in header.signed_headers
    # the signature covers the announced hash, so a swapped body only shows against the hash
    tampered = with_body(request, b'{"SecretId": "xx"}')
    message = refusal(lambda: sigv4.verify(header, tampered, SECRET), "InvalidSignatureException")
    assert message == "The provided 'x-amz-content-sha256' header does not match what was computed."
    unsigned = signed_request(
        "POST", ENDPOINT + "/", headers=[("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")], body=body
    )
    header = sigv4.parse(unsigned)
    message = refusal(lambda: sigv4.verify(header, unsigned, SECRET), "InvalidSignatureException")
    assert message == sigv4.CONTENT_SHA256_MISMATCH_MESSAGE


def test_the_signing_key_is_the_documented_derivation_and_its_cache_is_bounded() -> None:
    def mac(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    expected = mac(mac(mac(mac(b"AWS4" + SECRET.encode(), "20261201"), "local-1"), "sts"), "aws4_request")
    assert sigv4.signing_key(SECRET, "20261201", "local-1", "sts") == expected
    assert sigv4.signing_key.cache_info().maxsize == sigv4.SIGNING_KEY_CACHE_SIZE


# --- refusals: which check, which code, which text --------------------------------------------------------


def test_a_tampered_body_is_refused() -> None:
    request = client_request(*GET_SECRET)
    header = sigv4.parse(request)
    tampered = with_body(request, b'{"SecretId": "dc"}')
    message = refusal(lambda: sigv4.verify(header, tampered, SECRET), "InvalidSignatureException")
    assert message == (
        "The request signature we calculated does not match the signature you provided. Check your AWS "
        "Secret Access Key and signing method. Consult the service documentation for details."
    )


def test_a_wrong_secret_is_refused() -> None:
    request = client_request(*GET_SECRET, secret="not-the-secret")
    header = sigv4.parse(request)
    sigv4.check(header, request, region=REGION, service="secretsmanager", now=signed_at(request))
    refusal(lambda: sigv4.verify(header, request, SECRET), "InvalidSignatureException")


def test_a_changed_signed_header_is_refused_and_an_unsigned_one_is_not() -> None:
    request = client_request(*GET_SECRET)
    header = sigv4.parse(request)
    other_op = with_headers(request, x_amz_target=["secretsmanager.DeleteSecret"])
    refusal(lambda: sigv4.verify(header, other_op, SECRET), "InvalidSignatureException")
    other_host = with_headers(request, host=["coffer.example:443"])
    refusal(lambda: sigv4.verify(header, other_host, SECRET), "InvalidSignatureException")
    sigv4.verify(header, with_headers(request, user_agent=["proxy-appended/1.0"]), SECRET)


def test_a_signature_that_is_not_hex_is_a_mismatch_not_a_crash() -> None:
    request = client_request(*GET_SECRET)
    sig = sigv4.parse(request).signature
    for bad in ("ünïcode", "", sig.upper()):
        forged = with_authorization(request, f"Signature={sig}", f"Signature={bad or 'x'}")
        header = sigv4.parse(forged)
        refusal(functools.partial(sigv4.verify, header, forged, SECRET), "InvalidSignatureException")


def test_skew_is_five_minutes_each_way() -> None:
    request = client_request(*GET_SECRET)
    header = sigv4.parse(request)
    at = signed_at(request)

    def check(now: float) -> None:
        sigv4.check(header, request, region=REGION, service="secretsmanager", now=now)

    check(at + 300)
    check(at - 300)
    fmt = sigv4._format_amz_date
    late = at + 301
    assert refusal(lambda: check(late + 0.9), "InvalidSignatureException") == (
        f"Signature expired: {header.amz_date} is now earlier than {fmt(late - 300)} ({fmt(late)} - 5 min.)"
    )
    early = at - 301
    assert refusal(lambda: check(early), "InvalidSignatureException") == (
        f"Signature not yet current: {header.amz_date} is still later than {fmt(early + 300)} "
        f"({fmt(early)} + 5 min.)"
    )


def test_skew_texts_are_awss_format() -> None:
    request = with_headers(
        _vector(None),
        authorization=[
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261201/local-1/secretsmanager/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=00"
        ],
    )
    header = sigv4.parse(request)
    noon = calendar.timegm((2026, 12, 1, 12, 0, 0, 0, 0, 0))
    message = refusal(
        lambda: sigv4.check(header, request, region="local-1", service="secretsmanager", now=noon + 3600),
        "InvalidSignatureException",
    )
    assert message == (
        "Signature expired: 20261201T120000Z is now earlier than 20261201T125500Z (20261201T130000Z - 5 min.)"
    )


def test_no_authorization_is_a_missing_token() -> None:
    request = client_request(*GET_SECRET)
    for auth in (None, ["Bearer abc"], ["AWS abc:def"], ["  "]):
        message = refusal(
            functools.partial(sigv4.parse, with_headers(request, authorization=auth)),
            "MissingAuthenticationTokenException",
        )
        assert message == "Request is missing Authentication Token"


def test_presigned_requests_are_refused_with_a_clear_text() -> None:
    request = HttpRequest(
        "GET",
        "/",
        "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIDEXAMPLE%2F20261201%2Flocal-1%2Fsts%2Faws4_request&X-Amz-Signature=00",
        {"host": ["coffer.example"]},
        b"",
    )
    message = refusal(lambda: sigv4.parse(request), "MissingAuthenticationTokenException")
    assert message == sigv4.PRESIGNED_MESSAGE and "Authorization" in message


def test_missing_parts_are_listed_together() -> None:
    request = with_headers(client_request(*GET_SECRET), x_amz_date=None)
    auth = "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date"
    message = refusal(
        lambda: sigv4.parse(with_headers(request, authorization=[auth])), "IncompleteSignatureException"
    )
    assert message == (
        "Authorization header requires 'Credential' parameter. "
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        f"Authorization={auth}"
    )
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261201/local-1/secretsmanager/aws4_request, Signature=ab"
    )
    message = refusal(
        lambda: sigv4.parse(with_headers(request, authorization=[auth], x_amz_date=["20261201T120000Z"])),
        "IncompleteSignatureException",
    )
    assert message == f"Authorization header requires 'SignedHeaders' parameter. Authorization={auth}"


def test_a_parameter_without_equal_sign_is_incomplete() -> None:
    request = client_request(*GET_SECRET)
    auth = "AWS4-HMAC-SHA256 Credential, SignedHeaders=host, Signature=ab"
    message = refusal(
        lambda: sigv4.parse(with_headers(request, authorization=[auth])), "IncompleteSignatureException"
    )
    assert message == (
        f"'Credential' not a valid key=value pair (missing equal-sign) in Authorization header: '{auth}'."
    )


def test_two_authorization_headers_are_refused() -> None:
    request = client_request(*GET_SECRET)
    auth = request.headers["authorization"][0]
    refusal(
        lambda: sigv4.parse(with_headers(request, authorization=[auth, auth])), "IncompleteSignatureException"
    )


@pytest.mark.parametrize("value", ["2026-12-01T12:00:00Z", "20261201T1200Z", "20261301T120000Z", "now"])
def test_a_bad_date_is_incomplete(value: str) -> None:
    request = with_headers(client_request(*GET_SECRET), x_amz_date=[value])
    message = refusal(lambda: sigv4.parse(request), "IncompleteSignatureException")
    assert message == (
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601"
    )


def test_an_unsupported_algorithm_is_incomplete() -> None:
    request = with_authorization(client_request(*GET_SECRET), "AWS4-HMAC-SHA256 ", "AWS4-ECDSA-P256-SHA256 ")
    message = refusal(lambda: sigv4.parse(request), "IncompleteSignatureException")
    assert (
        message == "Unsupported AWS 'algorithm': 'AWS4-ECDSA-P256-SHA256' (only AWS4-HMAC-SHA256 for now). "
    )


def test_a_credential_needs_five_parts() -> None:
    request = client_request(*GET_SECRET)
    scope = sigv4.parse(request)
    credential = f"{AKID}/{scope.scope_date}/{REGION}/secretsmanager"
    forged = with_authorization(request, credential + "/aws4_request", credential)
    message = refusal(lambda: sigv4.parse(forged), "IncompleteSignatureException")
    assert message == (
        "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
        f"got '{credential}'"
    )
    # a trailing slash is ignored, as AWS does
    sigv4.parse(with_authorization(request, "/aws4_request", "/aws4_request/"))


def test_host_must_be_signed() -> None:
    request = client_request(*GET_SECRET)
    forged = with_authorization(request, "SignedHeaders=content-type;host;", "SignedHeaders=content-type;")
    header = sigv4.parse(forged)
    message = refusal(
        lambda: check_at_signing(header, forged),
        "InvalidSignatureException",
    )
    assert message == "'Host' must be a 'SignedHeader' in the AWS Authorization."


def test_the_date_must_be_signed() -> None:
    request = client_request(*GET_SECRET)
    forged = with_authorization(request, ";x-amz-date;", ";")
    header = sigv4.parse(forged)
    message = refusal(
        lambda: check_at_signing(header, forged),
        "InvalidSignatureException",
    )
    assert message == "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."


def test_a_session_token_must_be_signed() -> None:
    request = with_headers(client_request(*GET_SECRET), x_amz_security_token=[TOKEN])
    header = sigv4.parse(request)
    # the signature itself still matches (the token was added after signing)…
    sigv4.verify(header, request, SECRET)
    # …but an unsigned token could have been swapped on the way
    message = refusal(
        lambda: check_at_signing(header, request),
        "InvalidSignatureException",
    )
    assert message == "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization."


def test_another_region_is_refused() -> None:
    for region in ("local-2", "LOCAL-1"):  # byte for byte: botocore keeps the case
        request = client_request(*GET_SECRET, region=region)
        header = sigv4.parse(request)
        message = refusal(
            functools.partial(check_at_signing, header, request),
            "InvalidSignatureException",
        )
        assert message == f"Credential should be scoped to a valid region, not '{region}'. "


def test_another_service_is_refused() -> None:
    request = client_request("kms", "list_keys", {})
    header = sigv4.parse(request)
    message = refusal(
        lambda: check_at_signing(header, request),
        "InvalidSignatureException",
    )
    assert message == "Credential should be scoped to correct service: 'secretsmanager'. "


def test_every_wrong_scope_part_is_named_in_one_message() -> None:
    request = client_request(*GET_SECRET)
    header = sigv4.parse(request)
    forged = with_authorization(
        request,
        f"{AKID}/{header.scope_date}/{REGION}/secretsmanager/aws4_request",
        f"{AKID}/19991231/elsewhere/kms/aws5_request",
    )
    bad = sigv4.parse(forged)
    message = refusal(
        lambda: check_at_signing(bad, forged),
        "InvalidSignatureException",
    )
    assert message == (
        "Credential should be scoped to a valid region, not 'elsewhere'. "
        "Credential should be scoped to correct service: 'secretsmanager'. "
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'. "
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
        f"'19991231' != '{header.amz_date[:8]}', from '{header.amz_date}'."
    )


def test_a_wrong_terminator_or_date_alone() -> None:
    request = client_request(*GET_SECRET)
    header = sigv4.parse(request)

    def check(forged: HttpRequest) -> str:
        parsed = sigv4.parse(forged)
        return refusal(
            lambda: check_at_signing(parsed, forged),
            "InvalidSignatureException",
        )

    assert check(with_authorization(request, "/aws4_request", "/aws4_requests")) == (
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws4_requests'. "
    )
    assert check(with_authorization(request, f"/{header.scope_date}/", "/20000101/")) == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
        f"'20000101' != '{header.amz_date[:8]}', from '{header.amz_date}'."
    )

"""AWS Signature Version 4 verification (header auth) for the AWS-protocol endpoint. Pure (no I/O).

The rules, the exact error codes and texts, and a test vector are in ``shared/docs/aws-wire.md`` §1 and §2.
SEAM (issue 10): the signatures below are the contract between this module and ``coffer.gateway.aws``.

The caller runs the three steps in this order, which is AWS's (Coral's) order of checks, so a client sees
the same error AWS would give it for a request with several faults::

    header = sigv4.parse(request)                     # Missing…/IncompleteSignatureException
    sigv4.check(header, request, region=…, service=…, now=time.time())   # InvalidSignatureException
    … look header.access_key_id up (UnrecognizedClientException when unknown) …
    sigv4.verify(header, request, secret_access_key)  # InvalidSignatureException
    … then the session token, when the key is a session's: ``session_token(request)`` …

Session credentials: SigV4 itself only requires that an ``X-Amz-Security-Token`` header, when present, is
among the signed headers (:func:`check`); whether the token is the key's, and unexpired, is the caller's to
check against the principal directory, with the value :func:`session_token` returns (AWS's answers:
``UnrecognizedClientException`` "The security token included in the request is invalid" and
``ExpiredTokenException`` "The security token included in the request is expired").

Presigned (query-string) requests are refused (:data:`PRESIGNED_MESSAGE`): none of the clients Coffer serves
sends them for these services.
"""

from __future__ import annotations

import calendar
import datetime as dt
import email.utils
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from coffer.core import errors

#: How far X-Amz-Date may be from the server's clock (Secrets Manager and KMS: 5 minutes).
MAX_SKEW_SECONDS = 300

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
#: SHA-256 of the empty body.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: How many (secret, date, region, service) signing keys are kept: a day's keys of this many access keys.
SIGNING_KEY_CACHE_SIZE = 4096

SECURITY_TOKEN_HEADER = "x-amz-security-token"
CONTENT_SHA256_HEADER = "x-amz-content-sha256"

MISSING_CODE = "MissingAuthenticationTokenException"
INCOMPLETE_CODE = "IncompleteSignatureException"
INVALID_CODE = "InvalidSignatureException"

MISSING_MESSAGE = "Request is missing Authentication Token"
PRESIGNED_MESSAGE = (
    "Presigned (query-string) SigV4 requests are not supported by Coffer: sign the request with an "
    "'Authorization: AWS4-HMAC-SHA256 …' header, as the AWS SDKs and the AWS CLI do."
)
SIGNATURE_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
HOST_UNSIGNED_MESSAGE = "'Host' must be a 'SignedHeader' in the AWS Authorization."
#: Not one of AWS's recorded texts: the same sentence as for Host, for the date and the session token, which
#: must be signed too (an unsigned one could be replaced on the way).
UNSIGNED_HEADER_MESSAGE = "'{name}' must be a 'SignedHeader' in the AWS Authorization."
#: S3's text for the same fault (the header is signed, the body is not what it announces).
CONTENT_SHA256_MISMATCH_MESSAGE = (
    "The provided 'x-amz-content-sha256' header does not match what was computed."
)

_AMZ_DATE_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z", flags=re.ASCII)
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_PRESIGNED_PARAM = re.compile(r"(?:^|&)X-Amz-(?:Algorithm|Credential|Signature)=", flags=re.IGNORECASE)
#: RFC 3986 unreserved characters, which SigV4 leaves unencoded (besides ASCII letters and digits).
_UNRESERVED = "-_.~"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What SigV4 covers of one HTTP request, as received."""

    method: str
    #: The raw path as sent (before any decoding), e.g. ``/`` or ``/coffer/aws``.
    path: str
    #: The raw query string (without ``?``), ``""`` when none.
    query: str
    #: Lower-case header name → every value received for it, in order.
    headers: Mapping[str, Sequence[str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class SigV4Header:
    """The parts of ``Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`` and the
    request time they go with."""

    access_key_id: str
    scope_date: str  # yyyymmdd
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # the X-Amz-Date (or Date) value, yyyymmddThhmmssZ


def _missing(message: str = MISSING_MESSAGE) -> errors.Unauthenticated:
    return errors.Unauthenticated(message, code=MISSING_CODE)


def _incomplete(message: str) -> errors.Unauthenticated:
    return errors.Unauthenticated(message, code=INCOMPLETE_CODE)


def _invalid(message: str) -> errors.Unauthenticated:
    return errors.Unauthenticated(message, code=INVALID_CODE)


def _date_header(request: HttpRequest) -> tuple[str, str] | None:
    """(header name, value) of the request time: ``X-Amz-Date``, else ``Date`` (AWS's fallback); the values
    of a repeated header joined by ``,`` as they are signed (so a repeated one is not a valid date)."""
    for name in ("x-amz-date", "date"):
        value = _header_value(request, name)
        if value is not None:
            return name, value
    return None


def _request_time(name: str, value: str) -> str | None:
    """The request time as ``yyyymmddThhmmssZ``, None when ``value`` is not a time. A ``Date`` header may
    also be an HTTP date (``Tue, 01 Dec 2026 12:00:00 GMT``): botocore sends one (``… -0000``) when the
    caller set a Date, and signs the basic-format UTC time it stands for."""
    if _parse_amz_date(value) is not None:
        return value
    if name != "date":
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is not None:  # botocore writes ``-0000`` (no zone: naive here), others ``GMT``
        parsed = parsed.astimezone(dt.UTC)
    return parsed.strftime(_AMZ_DATE_FORMAT)


def _parse_amz_date(value: str) -> int | None:
    """Epoch seconds of a ``yyyymmddThhmmssZ`` time, or None when it is not one. (By hand: strptime would
    be a third of the cost of a whole verification.)"""
    m = _AMZ_DATE_RE.fullmatch(value)
    if m is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in m.groups())
        dt.datetime(year, month, day, hour, minute, second)  # only to refuse 20261301, T250000 …
    except ValueError:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def _format_amz_date(epoch: int) -> str:
    return time.strftime(_AMZ_DATE_FORMAT, time.gmtime(epoch))


def parse(request: HttpRequest) -> SigV4Header:
    """The request's SigV4 header; raises ``errors.Unauthenticated`` with AWS's code and text for a
    missing (MissingAuthenticationTokenException) or malformed (IncompleteSignatureException) one."""
    values = request.headers.get("authorization") or ()
    if not values:
        if _PRESIGNED_PARAM.search(request.query):
            raise _missing(PRESIGNED_MESSAGE)
        raise _missing()
    if len(values) > 1:
        raise _incomplete("Only one 'Authorization' header may be sent.")
    auth = values[0]
    stripped = auth.strip()
    if not stripped.startswith("AWS4-"):
        raise _missing()
    algorithm, _, rest = stripped.partition(" ")
    params: dict[str, str] = {}
    for item in rest.split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise _incomplete(
                f"'{key}' not a valid key=value pair (missing equal-sign) in Authorization header: '{auth}'."
            )
        params[key.strip()] = value.strip()
    date = _date_header(request)
    message = "".join(
        f"Authorization header requires '{name}' parameter. "
        for name in ("Credential", "Signature", "SignedHeaders")
        if not params.get(name)
    )
    if date is None:
        message += "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
    if message:
        raise _incomplete(message + f"Authorization={auth}")
    assert date is not None
    amz_date = _request_time(*date)
    if amz_date is None:
        raise _incomplete(
            f"Date must be in ISO-8601 'basic format'. Got '{date[1]}'. See http://en.wikipedia.org/wiki/ISO_8601"
        )
    if algorithm != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM} for now). ")
    credential = params["Credential"]
    parts = credential.rstrip("/").split("/")  # AWS ignores trailing slashes here
    if len(parts) != 5:
        raise _incomplete(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
            f"got '{credential}'"
        )
    access_key_id, scope_date, region, service, terminator = parts
    signed = tuple(sorted({name.strip().lower() for name in params["SignedHeaders"].split(";")} - {""}))
    return SigV4Header(
        access_key_id=access_key_id,
        scope_date=scope_date,
        region=region,
        service=service,
        terminator=terminator,
        signed_headers=signed,
        signature=params["Signature"],
        amz_date=amz_date,
    )


def check(header: SigV4Header, request: HttpRequest, *, region: str, service: str, now: float) -> None:
    """Clock skew (±5 min), ``host`` signed, the credential scope (region, service, terminator, date);
    raises ``errors.Unauthenticated`` (InvalidSignatureException …) with AWS's texts."""
    signed_at = _parse_amz_date(header.amz_date)
    if signed_at is None:  # parse() made the header; a hand-made one gets parse()'s answer
        raise _incomplete(
            f"Date must be in ISO-8601 'basic format'. Got '{header.amz_date}'. "
            "See http://en.wikipedia.org/wiki/ISO_8601"
        )
    server = int(now)
    if signed_at < server - MAX_SKEW_SECONDS:
        raise _invalid(
            f"Signature expired: {header.amz_date} is now earlier than "
            f"{_format_amz_date(server - MAX_SKEW_SECONDS)} ({_format_amz_date(server)} - 5 min.)"
        )
    if signed_at > server + MAX_SKEW_SECONDS:
        raise _invalid(
            f"Signature not yet current: {header.amz_date} is still later than "
            f"{_format_amz_date(server + MAX_SKEW_SECONDS)} ({_format_amz_date(server)} + 5 min.)"
        )
    signed = set(header.signed_headers)
    if "host" not in signed:
        raise _invalid(HOST_UNSIGNED_MESSAGE)
    date = _date_header(request)
    date_name = date[0] if date is not None else "x-amz-date"
    if date_name not in signed:
        shown = "X-Amz-Date" if date_name == "x-amz-date" else "Date"
        raise _invalid(UNSIGNED_HEADER_MESSAGE.format(name=shown))
    if SECURITY_TOKEN_HEADER in request.headers and SECURITY_TOKEN_HEADER not in signed:
        raise _invalid(UNSIGNED_HEADER_MESSAGE.format(name="X-Amz-Security-Token"))
    message = ""
    if header.region != region:
        message += f"Credential should be scoped to a valid region, not '{header.region}'. "
    if header.service != service:
        message += f"Credential should be scoped to correct service: '{service}'. "
    if header.terminator != TERMINATOR:
        message += (
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{header.terminator}'. "
        )
    if header.scope_date != header.amz_date[:8]:
        message += (
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{header.scope_date}' != '{header.amz_date[:8]}', from '{header.amz_date}'."
        )
    if message:
        raise _invalid(message)


def verify(header: SigV4Header, request: HttpRequest, secret_access_key: str) -> None:
    """Recompute the signature with ``secret_access_key`` and compare in constant time; raises
    ``errors.Unauthenticated`` (InvalidSignatureException) when it differs."""
    canonical = canonical_request(header, request)
    to_sign = string_to_sign(header, canonical)
    key = signing_key(secret_access_key, header.scope_date, header.region, header.service)
    expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    # Bytes, not str: compare_digest refuses non-ASCII str, and the signature is whatever the client sent.
    if not hmac.compare_digest(expected.encode("ascii"), header.signature.encode("utf-8", "surrogatepass")):
        # AWS appends the canonical request and string to sign; not here: they hold the session token.
        raise _invalid(SIGNATURE_MISMATCH_MESSAGE)
    # The signature covers the announced hash; the body must be the one it announces.
    announced = _header_value(request, CONTENT_SHA256_HEADER)
    if announced is not None and not hmac.compare_digest(
        announced.encode("utf-8", "surrogatepass"), hashlib.sha256(request.body).hexdigest().encode("ascii")
    ):
        raise _invalid(CONTENT_SHA256_MISMATCH_MESSAGE)


def session_token(request: HttpRequest) -> str | None:
    """The ``X-Amz-Security-Token`` sent (repeated values joined by ``,``, as signed — no token has one),
    None without one. The caller checks it belongs to the access key and is unexpired; :func:`check` has
    made sure it was signed."""
    return _header_value(request, SECURITY_TOKEN_HEADER)


# --- the canonical request (aws-wire.md §1.2) ---------------------------------------------------------


def _header_value(request: HttpRequest, name: str) -> str | None:
    values = request.headers.get(name)
    if not values:
        return None
    return ",".join(_trim(v) for v in values)


def _trim(value: str) -> str:
    """SigV4's Trimall, as botocore does it: outer whitespace removed, inner runs made one space."""
    return " ".join(value.split())


def _encode(text: str, safe: str = _UNRESERVED) -> str:
    return quote(text, safe=safe)


def canonical_uri(path: str) -> str:
    """The path with empty and dot segments removed (RFC 3986 §5.2.4; AWS also drops empty ones), then
    URI-encoded again (``/`` and ``~`` kept): for every service but S3, the path as sent is encoded twice."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    if not out:
        return "/"
    normalized = "/" + "/".join(out) + ("/" if path.endswith("/") else "")
    return _encode(normalized, safe="/~")


def canonical_query(query: str) -> str:
    """Each ``key=value`` pair decoded and encoded again (unreserved characters kept), sorted by key then
    value; ``""`` for none."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((_encode(unquote(key)), _encode(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(header: SigV4Header, request: HttpRequest) -> str:
    """METHOD, CanonicalURI, CanonicalQuery, CanonicalHeaders (those signed, values trimmed, repeated ones
    joined by ``,``), SignedHeaders and the payload hash (the ``X-Amz-Content-Sha256`` header when sent, as
    botocore signs it; :func:`verify` then checks it is the body's)."""
    lines = [f"{name}:{_header_value(request, name) or ''}\n" for name in header.signed_headers]
    payload = _header_value(request, CONTENT_SHA256_HEADER) or hashlib.sha256(request.body).hexdigest()
    return "\n".join(
        (
            request.method.upper(),
            canonical_uri(request.path),
            canonical_query(request.query),
            "".join(lines),
            ";".join(header.signed_headers),
            payload,
        )
    )


def string_to_sign(header: SigV4Header, canonical: str) -> str:
    scope = f"{header.scope_date}/{header.region}/{header.service}/{header.terminator}"
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{ALGORITHM}\n{header.amz_date}\n{scope}\n{digest}"


@functools.lru_cache(maxsize=SIGNING_KEY_CACHE_SIZE)
def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"); it depends
    only on these four, so it is kept (a bounded LRU) rather than derived four HMACs deep per request."""
    key = ("AWS4" + secret_access_key).encode("utf-8")
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return key

"""AWS Signature Version 4 verification (header auth) for the AWS-protocol endpoint. Pure (no I/O).

The rules, the exact error codes and texts, and a test vector are in ``shared/docs/aws-wire.md`` §1–2.
SEAM (issue 10): the signatures below are the contract between this module and ``coffer.gateway.aws``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: How far X-Amz-Date may be from the server's clock (Secrets Manager and KMS: 5 minutes).
MAX_SKEW_SECONDS = 300


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


def parse(request: HttpRequest) -> SigV4Header:
    """The request's SigV4 header; raises ``errors.Unauthenticated`` with AWS's code and text for a
    missing (MissingAuthenticationTokenException) or malformed (IncompleteSignatureException) one."""
    raise NotImplementedError


def check(header: SigV4Header, request: HttpRequest, *, region: str, service: str, now: float) -> None:
    """Clock skew (±5 min), ``host`` signed, the credential scope (region, service, terminator, date);
    raises ``errors.Unauthenticated`` (InvalidSignatureException …) with AWS's texts."""
    raise NotImplementedError


def verify(header: SigV4Header, request: HttpRequest, secret_access_key: str) -> None:
    """Recompute the signature with ``secret_access_key`` and compare in constant time; raises
    ``errors.Unauthenticated`` (InvalidSignatureException) when it differs."""
    raise NotImplementedError

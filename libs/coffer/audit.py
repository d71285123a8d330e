"""Audit lines: one per call the gateway serves (public calls) and one per call the store or the kms serves
(internal calls, written by the server interceptor), after the decision and the outcome are known.

A line holds who (principal: the end caller, verified), through which service identity (peer: the TLS
certificate's name, on internal calls), what (action: the public action, or the internal method), on what
(resource: the SecretId / KeyId as sent, never a value; empty on internal calls), the outcome (``allowed`` /
``denied`` / ``failed``), the AWS error name when it failed, and the request id. Values, tokens, passwords
and plaintexts are never passed here.
"""

from __future__ import annotations

from typing import Literal, Protocol

import structlog

Outcome = Literal["allowed", "denied", "failed"]


class AuditSink(Protocol):
    def record(
        self,
        *,
        principal: str | None,
        action: str,
        resource: str,
        outcome: Outcome,
        request_id: str | None,
        error_code: str | None = None,
        peer: str | None = None,
    ) -> None: ...


class StructlogAudit:
    """Writes audit lines as structured log events (``event="audit"``, logger ``coffer.audit``)."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("coffer.audit")

    def record(
        self,
        *,
        principal: str | None,
        action: str,
        resource: str,
        outcome: Outcome,
        request_id: str | None,
        error_code: str | None = None,
        peer: str | None = None,
    ) -> None:
        fields: dict[str, str | None] = {
            "principal": principal,
            "action": action,
            "resource": resource,
            "outcome": outcome,
            "request_id": request_id,
        }
        if peer is not None:
            fields["peer"] = peer
        if error_code is not None:
            fields["error_code"] = error_code
        self._log.info("audit", **fields)

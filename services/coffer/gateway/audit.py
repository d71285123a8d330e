"""Audit lines: one per public call, after the decision and the outcome are known.

A line holds who (principal), what (action), on what (resource: the SecretId / KeyId as sent, never a
value), the outcome (``allowed`` / ``denied`` / ``failed``), the AWS error name when it failed, and the
request id. Values, tokens, passwords and plaintexts are never passed here.
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
    ) -> None:
        fields: dict[str, str | None] = {
            "principal": principal,
            "action": action,
            "resource": resource,
            "outcome": outcome,
            "request_id": request_id,
        }
        if error_code is not None:
            fields["error_code"] = error_code
        self._log.info("audit", **fields)

"""structlog JSON logging with a request id per call (contextvars), values redacted and every string field
cut to a bounded size (a caller's 4 MB field costs one short line, not 4 MB of log)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from coffer.core.text import echo

#: Characters at most kept of one string field of a log line (a traceback may keep more).
MAX_FIELD_CHARS = 4096
MAX_EXCEPTION_CHARS = 65536

REDACTED = "[REDACTED]"

#: Field names whose values never reach a log line, whatever their nesting.
SENSITIVE_KEYS = frozenset(
    {
        "secret_string",
        "secret_binary",
        "secretstring",
        "secretbinary",
        "plaintext",
        "password",
        "random_password",
        "token",
        "bearer",
        "authorization",
        "data_key",
        "value",
        "ciphertext",
        "ciphertext_blob",
        "rotation_token",
        "root_key",
        "material",
        # access keys (issue 9): never the secret, the session token or the derived signing key
        "secret_access_key",
        "session_token",
        "signing_key",
        "x-coffer-session-token",
    }
)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: (REDACTED if str(k).lower() in SENSITIVE_KEYS else _redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return value


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Replace every sensitive field (at any depth) by a marker, and every bytes value by its length."""
    return {k: (REDACTED if k.lower() in SENSITIVE_KEYS else _redact(v)) for k, v in event_dict.items()}


def _cap(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"...({len(value) - limit} more characters)"
    if isinstance(value, Mapping):
        return {k: _cap(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cap(v, limit) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return echo(value, MAX_FIELD_CHARS)


def cap_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Cut every string field (at any depth; other objects by their text) to ``MAX_FIELD_CHARS``."""
    return {
        k: _cap(v, MAX_EXCEPTION_CHARS if k == "exception" else MAX_FIELD_CHARS)
        for k, v in event_dict.items()
    }


def pipeline() -> list[Any]:
    """The processors of every service's log lines, the JSON renderer last."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
        cap_processor,
        structlog.processors.JSONRenderer(),
    ]


def configure(*, service: str, level: str = "info", log_file: Path | None = None) -> None:
    stream: TextIO = sys.stderr
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    structlog.configure(
        processors=pipeline(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)

"""structlog JSON logging with a request id per call (contextvars) and values redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

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


def configure(*, service: str, level: str = "info", log_file: Path | None = None) -> None:
    stream: TextIO = sys.stderr
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)

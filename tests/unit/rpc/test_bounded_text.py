"""Echoes of caller input are bounded everywhere they surface: validation messages (``echo``), status
messages (``bounded_message``) and log fields (``cap_processor``)."""

from __future__ import annotations

import json

import grpc
import structlog

from coffer import logs
from coffer.core import errors
from coffer.core.text import ECHO_LIMIT, echo
from coffer.core.validation import Checker
from coffer.rpc.status import MAX_MESSAGE_BYTES, bounded_message, to_status


def test_echo_escapes_control_characters_and_cuts_long_values() -> None:
    assert echo("a\x00b\nc\x1b") == "a\\x00b\\x0ac\\x1b"
    shown = echo("x" * (ECHO_LIMIT + 10))
    assert shown == "x" * ECHO_LIMIT + "...(10 more characters)"
    assert echo("short") == "short"


def test_a_huge_description_gives_a_small_validation_message() -> None:
    c = Checker()
    c.description("d" * 4_000_000)
    try:
        c.done()
    except errors.Validation as exc:
        assert len(exc.message) < 2 * ECHO_LIMIT
        assert exc.message.endswith("Member must have length less than or equal to 2048")
    else:
        raise AssertionError("not refused")


def test_status_messages_are_bounded_in_bytes_on_a_character_boundary() -> None:
    assert bounded_message("fine") == "fine"
    long = "é" * 5000
    cut = bounded_message(long)
    assert len(cut.encode()) <= MAX_MESSAGE_BYTES and cut.endswith("(truncated)")
    code, message, trailers = to_status(errors.Validation(long))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert sum(len(v) for _k, v in trailers) < 2 * MAX_MESSAGE_BYTES


def test_every_string_field_of_a_log_line_is_capped() -> None:
    event = {
        "event": "rpc.error",
        "error": "e" * 4_000_000,
        "nested": {"resource": ["r" * 100_000]},
        "count": 3,
        "path": object(),
    }
    line = json.dumps(logs.cap_processor(None, "info", event))
    assert len(line) < 4 * logs.MAX_FIELD_CHARS
    rendered = structlog.processors.JSONRenderer()(
        None, "info", dict(logs.cap_processor(None, "info", event))
    )
    assert json.loads(rendered)["count"] == 3


def test_the_service_pipeline_caps_and_redacts() -> None:
    processors = logs.pipeline()
    assert logs.cap_processor in processors and logs.redact_processor in processors
    assert processors.index(logs.redact_processor) < processors.index(logs.cap_processor)

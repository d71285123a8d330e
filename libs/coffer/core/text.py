"""Caller text as it may appear in messages and logs.

A value a caller sent is shown back (in an error message, in a log line) through :func:`echo`: control
characters escaped, and at most ``limit`` characters, so a 4 MB field costs a bounded line, not 4 MB of log or
a response trailer over gRPC's metadata limit. Pure: no I/O.
"""

from __future__ import annotations

import re

#: Characters at most shown of one echoed value.
ECHO_LIMIT = 1024

#: C0 and C1 control characters (NUL included) other than tab, line feed and carriage return: refused in
#: every text member of a request (PostgreSQL text cannot hold NUL; the others corrupt logs and terminals).
CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: The same rule as AWS states a member's allowed characters.
TEXT_PATTERN = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"

_ESCAPE_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def has_control(value: str) -> bool:
    return CONTROL_RE.search(value) is not None


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``value`` as text fit to show: every control character (line breaks included) as ``\\xNN``, cut
    after ``limit`` characters with the number of characters left out."""
    text = value if isinstance(value, str) else str(value)
    cut = text[:limit]
    shown = _ESCAPE_RE.sub(_escape, cut)
    if len(text) > limit:
        shown += f"...({len(text) - limit} more characters)"
    return shown

"""Metering arithmetic (pure): a calendar month (UTC) and the secret-months of storage spans in it.

A secret (or a replica: counted apart) is billed for the hours it is stored, prorated by the hour: within a
month, a span [start, end) counts ceil(overlap / 1 hour) hours (a partial hour counts as a whole one), and
the month's SecretMonths is the sum of the hours over the month's hours (672 to 744). A span still open counts
up to ``now``. The store computes the same in SQL (``coffer.store.usage``); this module is its reference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from coffer.core import errors

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Month:
    text: str
    start: datetime
    end: datetime  # exclusive: the first instant of the next month

    @property
    def hours(self) -> int:
        return int((self.end - self.start) / HOUR)


def parse_month(text: str) -> Month:
    """``"YYYY-MM"`` → the month's bounds (UTC); ValidationException otherwise."""
    m = _MONTH.match(text or "")
    if m is None:
        raise errors.Validation(f"Month must be a calendar month as YYYY-MM (e.g. 2026-03), not {text!r}.")
    year, month = int(m.group(1)), int(m.group(2))
    if year < 1970:
        raise errors.Validation(f"Month must be 1970-01 or later, not {text!r}.")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if month == 12 else datetime(year, month + 1, 1, tzinfo=UTC)
    return Month(text=text, start=start, end=end)


def month_of(when: datetime) -> str:
    """The ``YYYY-MM`` (UTC) an instant falls in."""
    return when.astimezone(UTC).strftime("%Y-%m")


def span_hours(start: datetime, end: datetime | None, month: Month, now: datetime) -> int:
    """Hours (a started hour counts whole) the span [start, end) - open when ``end`` is None - overlaps the
    month, counting no further than ``now``."""
    stop = min(end if end is not None else now, now, month.end)
    begin = max(start, month.start)
    if stop <= begin:
        return 0
    return math.ceil((stop - begin) / HOUR)


def secret_months(hours: int, month: Month) -> float:
    return hours / month.hours


def total_hours(spans: Iterable[tuple[datetime, datetime | None]], month: Month, now: datetime) -> int:
    return sum(span_hours(s, e, month, now) for s, e in spans)

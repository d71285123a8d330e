"""Metering arithmetic: months, hour-granular proration of storage spans, SecretMonths."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coffer.core import errors
from coffer.core.usage import month_of, parse_month, secret_months, span_hours, total_hours


def _t(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_month_bounds_and_hours() -> None:
    assert parse_month("2026-02").hours == 28 * 24
    assert parse_month("2028-02").hours == 29 * 24
    assert parse_month("2026-03").hours == 744
    assert parse_month("2026-04").hours == 720
    dec = parse_month("2026-12")
    assert (dec.start, dec.end) == (_t(2026, 12, 1), _t(2027, 1, 1))
    assert month_of(_t(2026, 3, 31, 23, 59)) == "2026-03"
    for bad in ("2026-13", "2026-3", "26-03", "", "2026-03-01", "1969-12"):
        with pytest.raises(errors.Validation):
            parse_month(bad)


def test_a_whole_month_is_one_secret_month() -> None:
    april = parse_month("2026-04")
    hours = span_hours(_t(2026, 1, 5), None, april, now=_t(2026, 6, 1))
    assert hours == 720
    assert secret_months(hours, april) == 1.0


def test_partial_hours_count_whole_and_spans_are_clipped_to_the_month_and_now() -> None:
    april = parse_month("2026-04")
    # created 10:15, deleted 12:16 → 2 h 1 min → 3 hours
    assert span_hours(_t(2026, 4, 10, 10, 15), _t(2026, 4, 10, 12, 16), april, now=_t(2026, 5, 1)) == 3
    # exactly 48 hours
    assert span_hours(_t(2026, 4, 10, 10), _t(2026, 4, 12, 10), april, now=_t(2026, 5, 1)) == 48
    # started in March: counted from April 1
    assert span_hours(_t(2026, 3, 20), _t(2026, 4, 2), april, now=_t(2026, 5, 1)) == 24
    # still open: counted up to now
    assert span_hours(_t(2026, 4, 30, 22, 30), None, april, now=_t(2026, 4, 30, 23)) == 1
    # outside the month, or not started yet
    assert span_hours(_t(2026, 5, 2), None, april, now=_t(2026, 6, 1)) == 0
    assert span_hours(_t(2026, 3, 1), _t(2026, 3, 2), april, now=_t(2026, 6, 1)) == 0
    assert span_hours(_t(2026, 4, 10), None, april, now=_t(2026, 4, 9)) == 0


def test_secret_months_sum_primaries_and_replicas_apart() -> None:
    april = parse_month("2026-04")
    now = _t(2026, 5, 3)
    primaries = [(_t(2026, 4, 1), None), (_t(2026, 4, 16), _t(2026, 4, 16, 0, 1))]
    replicas = [(_t(2026, 4, 16), None)]
    p = total_hours(primaries, april, now)
    r = total_hours(replicas, april, now)
    assert (p, r) == (721, 360)
    assert secret_months(r, april) == 0.5
    assert secret_months(p, april) == pytest.approx(1 + 1 / 720)

"""Rotation schedules: rules validation with AWS's messages, rate/cron parsing, next dates and
windows. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coffer.core import errors
from coffer.core.model import RotationRules
from coffer.core.schedule import BOTH_MESSAGE, DAYS_RANGE_MESSAGE, parse_cron, parse_rules


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rules(**kw: object) -> RotationRules:
    return RotationRules(**kw)  # type: ignore[arg-type]


def test_days_and_expression_together_is_refused() -> None:
    with pytest.raises(errors.InvalidParameter) as e:
        parse_rules(rules(automatically_after_days=3, schedule_expression="rate(3 days)"))
    assert e.value.message == BOTH_MESSAGE
    assert e.value.code == "InvalidParameterException"


@pytest.mark.parametrize("days", [0, -1, 1001])
def test_days_out_of_range(days: int) -> None:
    with pytest.raises(errors.InvalidParameter) as e:
        parse_rules(rules(automatically_after_days=days))
    assert e.value.message == DAYS_RANGE_MESSAGE


@pytest.mark.parametrize("days", [1, 1000])
def test_days_bounds_accepted(days: int) -> None:
    s = parse_rules(rules(automatically_after_days=days))
    assert s is not None and s.kind == "days" and s.interval == timedelta(days=days)


def test_no_rules_no_schedule_but_duration_alone_is_refused() -> None:
    assert parse_rules(rules()) is None
    with pytest.raises(errors.InvalidParameter, match="needs a schedule"):
        parse_rules(rules(duration="2h"))


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("rate(3 hours)", "at most every 4 hours"),
        ("rate(1 hours)", "singular"),
        ("rate(2 day)", "singular"),
        ("rate(0 days)", "between 1 and 1000"),
        ("rate(1001 days)", "between 1 and 1000"),
        ("rate(5 minutes)", "rate(N hours)"),
        ("every day", "use rate"),
        ("cron(30 8 * * ? *)", "Minutes field must be 0"),
        ("cron(0 8 * * ? 2027)", "Year field must be *"),
        ("cron(0 8 * * MON *)", "exactly one of Day-of-month and Day-of-week"),
        ("cron(0 8 ? * ? *)", "exactly one of Day-of-month and Day-of-week"),
        ("cron(0 8 * *)", "6 fields"),
        ("cron(0 25 * * ? *)", "between 0 and 23"),
        ("cron(0 */2 * * ? *)", "at most every 4 hours"),
        ("cron(0 8 31 2 ? *)", "never fires"),
        ("cron(0 8 ? * MON#6 *)", "between 1 and 5"),
    ],
)
def test_bad_expressions(expression: str, fragment: str) -> None:
    with pytest.raises(errors.InvalidParameter) as e:
        parse_rules(rules(schedule_expression=expression))
    assert fragment in e.value.message
    assert expression in e.value.message


@pytest.mark.parametrize("duration", ["0h", "25h", "3", "h", "1d"])
def test_bad_duration(duration: str) -> None:
    with pytest.raises(errors.InvalidParameter, match="Invalid Duration"):
        parse_rules(rules(automatically_after_days=1, duration=duration))


def test_window_may_not_cross_midnight_or_the_next_window() -> None:
    with pytest.raises(errors.InvalidParameter, match="cross into the next UTC day"):
        parse_rules(rules(schedule_expression="cron(0 22 * * ? *)", duration="3h"))
    with pytest.raises(errors.InvalidParameter, match="longer than the interval"):
        parse_rules(rules(schedule_expression="rate(4 hours)", duration="5h"))
    with pytest.raises(errors.InvalidParameter, match="between two windows"):
        parse_rules(rules(schedule_expression="cron(0 0,6,12,18 * * ? *)", duration="7h"))
    # Fits: 22:00 + 2h ends at midnight; 4-hour windows every 4 hours.
    assert parse_rules(rules(schedule_expression="cron(0 22 * * ? *)", duration="2h")) is not None
    assert parse_rules(rules(schedule_expression="rate(4 hours)", duration="4h")) is not None


def test_days_schedule_next_date_and_default_window_until_end_of_day() -> None:
    s = parse_rules(rules(automatically_after_days=3))
    assert s is not None
    start = s.next_window_start(at("2026-03-10T17:45:00"))
    assert start == at("2026-03-13T00:00:00")
    assert s.window_end(start) == at("2026-03-14T00:00:00")
    assert s.phase(start, at("2026-03-12T23:59:59")) == "wait"
    assert s.phase(start, at("2026-03-13T12:00:00")) == "due"
    assert s.phase(start, at("2026-03-14T00:00:00")) == "missed"


def test_duration_shortens_the_window() -> None:
    s = parse_rules(rules(schedule_expression="rate(2 days)", duration="3h"))
    assert s is not None
    start = s.next_window_start(at("2026-03-10T01:00:00"))
    assert start == at("2026-03-12T00:00:00")
    assert s.window_end(start) == at("2026-03-12T03:00:00")
    assert s.phase(start, at("2026-03-12T03:00:01")) == "missed"


def test_hour_rates_start_at_midnight_with_one_hour_windows() -> None:
    s = parse_rules(rules(schedule_expression="rate(6 hours)"))
    assert s is not None and s.hour_based
    # Rotated at 05:30 (in the 00:00 window's period): next window is 06:00.
    assert s.next_window_start(at("2026-03-10T05:30:00")) == at("2026-03-10T06:00:00")
    assert s.next_window_start(at("2026-03-10T06:10:00")) == at("2026-03-10T12:00:00")
    assert s.next_window_start(at("2026-03-10T19:00:00")) == at("2026-03-11T00:00:00")
    assert s.window_end(at("2026-03-10T06:00:00")) == at("2026-03-10T07:00:00")
    odd = parse_rules(rules(schedule_expression="rate(5 hours)"))
    assert odd is not None
    # Windows 00, 05, 10, 15, 20 each day; from 21:00 the earliest is 01:00+ -> 05:00 next day.
    assert odd.next_window_start(at("2026-03-10T21:00:00")) == at("2026-03-11T05:00:00")


def test_cron_day_based_and_hour_based() -> None:
    daily = parse_rules(rules(schedule_expression="cron(0 8 * * ? *)"))
    assert daily is not None and not daily.hour_based
    start = daily.next_window_start(at("2026-03-10T08:10:00"))
    assert start == at("2026-03-11T08:00:00")
    assert daily.window_end(start) == at("2026-03-12T00:00:00")  # until the end of the UTC day
    hourly = parse_rules(rules(schedule_expression="cron(0 */4 * * ? *)"))
    assert hourly is not None and hourly.hour_based
    start = hourly.next_window_start(at("2026-03-10T09:00:00"))
    assert start == at("2026-03-10T12:00:00")
    assert hourly.window_end(start) == at("2026-03-10T13:00:00")


def test_cron_day_of_week_names_nth_and_last() -> None:
    # 2026-03-10 is a Tuesday.
    second_tuesday = parse_cron("cron(0 10 ? FEB,MAY,AUG,NOV TUE#2 *)")
    assert next(second_tuesday.fires_after(at("2026-03-10T00:00:00"))) == at("2026-05-12T10:00:00")
    last_friday = parse_cron("cron(0 3 ? * 6L *)")
    assert next(last_friday.fires_after(at("2026-03-01T00:00:00"))) == at("2026-03-27T03:00:00")
    weekdays = parse_cron("cron(0 9 ? * MON-FRI *)")
    fires = weekdays.fires_after(at("2026-03-13T10:00:00"))  # Friday after 09:00
    assert next(fires) == at("2026-03-16T09:00:00")  # Monday
    sunday = parse_cron("cron(0 0 ? * 1 *)")
    assert next(sunday.fires_after(at("2026-03-10T00:00:00"))) == at("2026-03-15T00:00:00")


def test_cron_last_day_of_month_and_lists() -> None:
    last = parse_cron("cron(0 23 L * ? *)")
    assert next(last.fires_after(at("2026-02-01T00:00:00"))) == at("2026-02-28T23:00:00")
    firsts = parse_cron("cron(0 0 1,15 JAN-MAR ? *)")
    got = list(_take(firsts.fires_after(at("2026-01-01T00:00:00")), 3))
    assert got == [at("2026-01-15T00:00:00"), at("2026-02-01T00:00:00"), at("2026-02-15T00:00:00")]


def test_next_window_after_skips_closed_windows() -> None:
    s = parse_rules(rules(schedule_expression="rate(1 day)", duration="2h"))
    assert s is not None
    base = at("2026-03-10T00:30:00")
    # At 05:00 on the 11th the 11th's window (00:00-02:00) has closed: the next open one is the 12th.
    assert s.next_window_after(at("2026-03-11T05:00:00"), base=base) == at("2026-03-12T00:00:00")
    assert s.next_window_after(at("2026-03-11T01:00:00"), base=base) == at("2026-03-11T00:00:00")


def _take(it: object, n: int) -> list[datetime]:
    out: list[datetime] = []
    for item in it:  # type: ignore[attr-defined]
        out.append(item)
        if len(out) == n:
            break
    return out

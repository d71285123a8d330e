"""Rotation schedules: ``AutomaticallyAfterDays``, ``rate(...)`` and ``cron(...)`` expressions
with AWS's restrictions, the ``Duration`` window, and the next rotation date. Pure: no I/O; all times are UTC.

* ``AutomaticallyAfterDays`` N (1-1000) / ``rate(N days)``: the window opens at midnight UTC, N days after the
  day of the last rotation (a manual value change counts as one); it lasts ``Duration`` or, by default, until
  the end of that UTC day.
* ``rate(N hours)`` (N >= 4): windows open every N hours counted from midnight UTC; default length 1 hour.
* ``cron(0 H DoM Mon DoW *)`` in UTC: minutes must be ``0``, the year ``*``, one of day-of-month and
  day-of-week is ``?``; ``, - * / L #`` as in EventBridge. Default window: 1 hour when the expression fires
  several times a day, else until the end of the UTC day.
* A window never crosses into the next UTC day nor into the next window.
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from coffer.core import errors
from coffer.core.model import RotationRules

MIN_DAYS, MAX_DAYS = 1, 1000
MIN_RATE_HOURS = 4
MAX_RATE_HOURS = MAX_DAYS * 24
MAX_SCHEDULE_EXPRESSION = 256
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

BOTH_MESSAGE = "You cannot specify both rotation frequency and schedule expression together."
DAYS_RANGE_MESSAGE = f"RotationRules.AutomaticallyAfterDays must be within {MIN_DAYS}-{MAX_DAYS}."

_RATE_RE = re.compile(r"^rate\(\s*(\d+)\s+(hours?|days?)\s*\)$")
_CRON_RE = re.compile(r"^cron\((.*)\)$")
_DURATION_RE = re.compile(r"^(\d{1,2})h$")
_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
# EventBridge numbers days of the week 1 (SUN) .. 7 (SAT).
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}

Phase = Literal["wait", "due", "missed"]


def _bad(expression: str, why: str) -> errors.InvalidParameter:
    return errors.InvalidParameter(f"Invalid ScheduleExpression {expression}: {why}")


# --- cron --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cron:
    hours: frozenset[int]
    months: frozenset[int]
    #: None when the field is ``?``.
    days_of_month: frozenset[int] | None
    last_day_of_month: bool
    days_of_week: frozenset[int] | None
    #: ``d#n``: the n-th weekday d of the month.
    nth_weekdays: frozenset[tuple[int, int]]
    #: ``dL``: the last weekday d of the month.
    last_weekdays: frozenset[int]

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        if self.days_of_month is not None or self.last_day_of_month:
            last = calendar.monthrange(day.year, day.month)[1]
            return day.day in (self.days_of_month or ()) or (self.last_day_of_month and day.day == last)
        dow = day.isoweekday() % 7 + 1  # Monday=1 (ISO) -> 2; Sunday=7 (ISO) -> 1
        if self.days_of_week is not None and dow in self.days_of_week:
            return True
        if (dow, (day.day - 1) // 7 + 1) in self.nth_weekdays:
            return True
        last = calendar.monthrange(day.year, day.month)[1]
        return dow in self.last_weekdays and day.day + 7 > last

    @property
    def hour_based(self) -> bool:
        return len(self.hours) > 1

    def fires_after(self, moment: datetime) -> Iterator[datetime]:
        """Firing times strictly after ``moment``, in order (gives up after ~5 years without a match)."""
        day = moment.astimezone(UTC).date()
        for _ in range(366 * 5 + 2):
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    fire = datetime.combine(day, time(hour), tzinfo=UTC)
                    if fire > moment:
                        yield fire
            day += DAY


def _values(
    expression: str, field: str, text: str, low: int, high: int, names: dict[str, int] | None = None
) -> frozenset[int]:
    """``*``, ``a``, ``a-b``, ``*/n``, ``a/n``, ``a-b/n`` and comma lists of those."""

    def number(token: str) -> int:
        if names is not None and token.upper() in names:
            return names[token.upper()]
        if not token.isdigit():
            raise _bad(expression, f"'{token}' is not a valid value in the {field} field.")
        value = int(token)
        if not low <= value <= high:
            raise _bad(expression, f"{field} must be between {low} and {high}, not {value}.")
        return value

    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _bad(expression, f"'{part}' has an invalid increment in the {field} field.")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = number(a), number(b)
            if start > end:
                raise _bad(expression, f"the range '{base}' in the {field} field runs backwards.")
        else:
            start = number(base)
            end = high if step_text else start
        out.update(range(start, end + 1, step))
    return frozenset(out)


def parse_cron(expression: str) -> Cron:
    m = _CRON_RE.match(expression)
    if m is None:
        raise _bad(expression, "expected cron(Minutes Hours Day-of-month Month Day-of-week Year).")
    fields = m.group(1).split()
    if len(fields) != 6:
        raise _bad(
            expression,
            f"a cron expression has 6 fields (Minutes Hours Day-of-month Month Day-of-week Year), not "
            f"{len(fields)}.",
        )
    minutes, hours, dom, month, dow, year = fields
    if minutes != "0":
        raise _bad(expression, "the Minutes field must be 0 (rotation windows start on the hour).")
    if year != "*":
        raise _bad(expression, "the Year field must be *.")
    if (dom == "?") == (dow == "?"):
        raise _bad(expression, "set exactly one of Day-of-month and Day-of-week to ?.")
    hour_set = _values(expression, "Hours", hours, 0, 23)
    months = _values(expression, "Month", month, 1, 12, _MONTHS)
    days_of_month: frozenset[int] | None = None
    last_dom = False
    days_of_week: frozenset[int] | None = None
    nth: set[tuple[int, int]] = set()
    last_dow: set[int] = set()
    if dom != "?":
        parts = [p for p in dom.split(",") if p != "L"]
        last_dom = len(parts) != len(dom.split(","))
        days_of_month = _values(expression, "Day-of-month", ",".join(parts), 1, 31) if parts else frozenset()
    else:
        plain: list[str] = []
        for part in dow.split(","):
            if "#" in part:
                d, _, n = part.partition("#")
                if not n.isdigit() or not 1 <= int(n) <= 5:
                    raise _bad(expression, f"'{part}': the week number after # must be between 1 and 5.")
                nth.add((min(_values(expression, "Day-of-week", d, 1, 7, _DAYS)), int(n)))
            elif part.endswith("L") and part != "L":
                last_dow.add(min(_values(expression, "Day-of-week", part[:-1], 1, 7, _DAYS)))
            elif part == "L":
                last_dow.add(7)
            else:
                plain.append(part)
        days_of_week = _values(expression, "Day-of-week", ",".join(plain), 1, 7, _DAYS) if plain else None
    cron = Cron(
        hours=hour_set,
        months=months,
        days_of_month=days_of_month,
        last_day_of_month=last_dom,
        days_of_week=days_of_week,
        nth_weekdays=frozenset(nth),
        last_weekdays=frozenset(last_dow),
    )
    ordered = sorted(hour_set)
    gaps = [b - a for a, b in itertools.pairwise(ordered)] + [ordered[0] + 24 - ordered[-1]]
    if len(ordered) > 1 and min(gaps) < MIN_RATE_HOURS:
        raise _bad(expression, f"Secrets Manager rotates at most every {MIN_RATE_HOURS} hours.")
    if next(cron.fires_after(datetime(2000, 1, 1, tzinfo=UTC)), None) is None:
        raise _bad(expression, "it never fires.")
    return cron


# --- schedules ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated rotation schedule. ``interval`` for days/rate schedules, ``cron`` for cron ones."""

    kind: Literal["days", "hours", "cron"]
    interval: timedelta | None
    cron: Cron | None
    #: The window length; None = until the end of the UTC day.
    duration: timedelta | None

    @property
    def hour_based(self) -> bool:
        if self.kind == "cron":
            assert self.cron is not None
            return self.cron.hour_based
        return self.kind == "hours"

    def _starts(self, first_day: date) -> Iterator[datetime]:
        """Window starts of a rate(N hours) schedule from midnight of ``first_day`` on."""
        assert self.interval is not None
        step = int(self.interval.total_seconds() // 3600)
        day = first_day
        while True:
            for hour in range(0, 24, step if step < 24 else 24):
                yield datetime.combine(day, time(hour), tzinfo=UTC)
            day += DAY

    def next_window_start(self, base: datetime) -> datetime:
        """When the next window opens, for a secret last rotated (or changed) at ``base``."""
        base = base.astimezone(UTC)
        if self.kind == "cron":
            assert self.cron is not None
            return next(self.cron.fires_after(base))
        assert self.interval is not None
        midnight = datetime.combine(base.date(), time.min, tzinfo=UTC)
        if self.kind == "days":
            return midnight + self.interval
        floor = midnight
        for start in self._starts(base.date()):
            if start > base:
                break
            floor = start
        earliest = floor + self.interval
        return next(s for s in self._starts(earliest.date()) if s >= earliest)

    def window_end(self, start: datetime) -> datetime:
        if self.duration is not None:
            return start + self.duration
        if self.hour_based:
            return start + HOUR
        return datetime.combine(start.astimezone(UTC).date(), time.min, tzinfo=UTC) + DAY

    def phase(self, next_rotation: datetime, now: datetime) -> Phase:
        """Before the window (wait), inside it (due), or after it closed without a rotation (missed)."""
        if now < next_rotation:
            return "wait"
        return "due" if now < self.window_end(next_rotation) else "missed"

    def next_window_after(self, now: datetime, *, base: datetime) -> datetime:
        """The first window (counted from ``base``) that has not closed by ``now``."""
        start = self.next_window_start(base)
        while self.window_end(start) <= now:
            start = self.next_window_start(start)
        return start


def _duration(text: str) -> timedelta:
    m = _DURATION_RE.match(text)
    if m is None or not 1 <= int(m.group(1)) <= 24:
        raise errors.InvalidParameter(
            f"Invalid Duration {text}: give the rotation window in hours as <n>h, n between 1 and 24 "
            "(for example 3h)."
        )
    return timedelta(hours=int(m.group(1)))


def _check_window(schedule: Schedule, expression: str) -> None:
    d = schedule.duration
    if d is None:
        return
    hours = int(d.total_seconds() // 3600)
    if schedule.kind == "hours":
        assert schedule.interval is not None
        if d > schedule.interval:
            raise errors.InvalidParameter(
                f"The rotation window Duration {hours}h is longer than the interval of {expression}, so it "
                "would run into the next window; use a shorter Duration."
            )
        starts = range(0, 24, int(schedule.interval.total_seconds() // 3600))
        start_hours = [h for h in starts] if schedule.interval < DAY else [0]
    elif schedule.kind == "cron":
        assert schedule.cron is not None
        ordered = sorted(schedule.cron.hours)
        gaps = [b - a for a, b in itertools.pairwise(ordered)] + [ordered[0] + 24 - ordered[-1]]
        if len(ordered) > 1 and hours > min(gaps):
            raise errors.InvalidParameter(
                f"The rotation window Duration {hours}h is longer than the time between two windows of "
                f"{expression}; use a shorter Duration."
            )
        start_hours = ordered
    else:
        start_hours = [0]
    for h in start_hours:
        if h + hours > 24:
            raise errors.InvalidParameter(
                f"The rotation window Duration {hours}h starting at {h:02d}:00 UTC would cross into the next "
                "UTC day; use a shorter Duration."
            )


def parse_rules(rules: RotationRules) -> Schedule | None:
    """Validate RotationRules (AWS's rules and messages). None: no schedule (rotation only on demand)."""
    days, expression, duration = rules.automatically_after_days, rules.schedule_expression, rules.duration
    if days is not None and expression is not None:
        raise errors.InvalidParameter(BOTH_MESSAGE)
    window = _duration(duration) if duration is not None else None
    if days is not None:
        if not MIN_DAYS <= days <= MAX_DAYS:
            raise errors.InvalidParameter(DAYS_RANGE_MESSAGE)
        schedule = Schedule(kind="days", interval=timedelta(days=days), cron=None, duration=window)
        _check_window(schedule, f"AutomaticallyAfterDays {days}")
        return schedule
    if expression is None:
        if window is not None:
            raise errors.InvalidParameter(
                "A rotation window Duration needs a schedule: set AutomaticallyAfterDays or "
                "ScheduleExpression."
            )
        return None
    if not 1 <= len(expression) <= MAX_SCHEDULE_EXPRESSION:
        raise errors.Validation(
            "1 validation error detected: Value at 'rotationRules.scheduleExpression' failed to satisfy "
            f"constraint: Member must have length between 1 and {MAX_SCHEDULE_EXPRESSION}"
        )
    expression = expression.strip()
    if expression.startswith("rate("):
        m = _RATE_RE.match(expression)
        if m is None:
            raise _bad(expression, "expected rate(N hours) or rate(N days).")
        value, unit = int(m.group(1)), m.group(2)
        if (value == 1) != (not unit.endswith("s")):
            raise _bad(expression, "use the singular unit (hour, day) for 1 and the plural otherwise.")
        if unit.startswith("day"):
            if not MIN_DAYS <= value <= MAX_DAYS:
                raise _bad(expression, f"the rate must be between {MIN_DAYS} and {MAX_DAYS} days.")
            schedule = Schedule(kind="days", interval=timedelta(days=value), cron=None, duration=window)
        else:
            if value < MIN_RATE_HOURS:
                raise _bad(expression, f"Secrets Manager rotates at most every {MIN_RATE_HOURS} hours.")
            if value > MAX_RATE_HOURS:
                raise _bad(expression, f"the rate must be at most {MAX_RATE_HOURS} hours.")
            schedule = Schedule(kind="hours", interval=timedelta(hours=value), cron=None, duration=window)
    elif expression.startswith("cron("):
        schedule = Schedule(kind="cron", interval=None, cron=parse_cron(expression), duration=window)
    else:
        raise _bad(
            expression,
            "use rate(N hours|days) or cron(Minutes Hours Day-of-month Month Day-of-week Year).",
        )
    _check_window(schedule, expression)
    return schedule

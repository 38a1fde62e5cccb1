"""AWS schedule expressions, parsed and validated without I/O: ``rate(...)``, ``cron(...)``, ``at(...)``.

``@app.periodic(schedule, timezone=...)`` accepts exactly what EventBridge (rules and Scheduler) accepts, so an
expression that works under the local scheduler also deploys, and one AWS would reject fails at import time with
a message naming the task. We implement AWS's semantics ourselves rather than use a Unix cron library, because
they differ: six fields with a year, 1=SUN in day-of-week, ``?``, ``L``, ``W`` and ``#``.

Choices, where AWS leaves room or cannot be known locally:

* ``rate(...)`` fires every interval anchored at the Unix epoch (UTC). EventBridge anchors at rule creation,
  which a local process cannot know; the epoch anchor gives every process the same ticks. A day is 24 hours,
  as in EventBridge Scheduler, so a rate ignores the time zone and DST.
* ``cron(...)`` is evaluated on the wall clock of the time zone. Following EventBridge Scheduler's DST rules, a
  wall time that does not exist (spring forward) is skipped, and a wall time that happens twice (fall back)
  fires once, at its first occurrence.
* ``at(...)`` (Scheduler only) is a wall time in the time zone. One that falls in a spring-forward gap is
  shifted forward by the length of the gap (PEP 495, ``fold=0``) rather than dropped: a one-time job should
  not silently vanish. A repeated wall time fires at its first occurrence.
* Fire times are searched up to the end of 2199, AWS's last cron year, so an expression that can never fire
  (``cron(0 0 31 2 ? *)``) yields no times instead of looping forever.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from itertools import islice
from types import MappingProxyType
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloudq.errors import ScheduleError

__all__ = ["Schedule", "ScheduleKind", "parse_schedule"]

ScheduleKind = Literal["rate", "cron", "at"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_HORIZON = datetime(2200, 1, 1, tzinfo=timezone.utc)
_MAX_RATE_S = int((_HORIZON - _EPOCH).total_seconds())
_EXPRESSION = re.compile(r"\s*(rate|cron|at)\s*\((.*)\)\s*", re.IGNORECASE | re.DOTALL)
_RATE_BODY = re.compile(r"(\S+)\s+(\S+)")
_AT_BODY = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})", re.ASCII)
_RATE_UNITS_S = {"minute": 60, "hour": 3600, "day": 86400}
_MONTH_NAMES = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAY_NAMES = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)}


class _Field(NamedTuple):
    """One cron field's name (for messages), its value range and the names it accepts."""

    name: str
    lo: int
    hi: int
    names: Mapping[str, int] = MappingProxyType({})


_MINUTES = _Field("minutes", 0, 59)
_HOURS = _Field("hours", 0, 23)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _Field("day-of-week", 1, 7, _DAY_NAMES)
_YEAR = _Field("year", 1970, 2199)


@dataclass(frozen=True)
class _Rate:
    """A fixed interval, anchored at the Unix epoch so that every process ticks together."""

    interval: timedelta

    def fire_times(self, after: datetime, zone: tzinfo) -> Iterator[datetime]:
        if after >= _HORIZON:
            return
        fire = _EPOCH + ((after - _EPOCH) // self.interval + 1) * self.interval
        while fire < _HORIZON:
            yield fire
            fire += self.interval


@dataclass(frozen=True)
class _At:
    """One wall time, resolved in the schedule's time zone only when asked (the zone is not known at parse)."""

    when: datetime  # naive

    def fire_times(self, after: datetime, zone: tzinfo) -> Iterator[datetime]:
        if self.when.year >= _HORIZON.year:
            return
        fire = self.when.replace(tzinfo=zone).astimezone(timezone.utc)
        if fire > after:
            yield fire


@dataclass(frozen=True)
class _DaySpec:
    """The days a cron expression fires on, from whichever of day-of-month / day-of-week is not '?'.

    Day-of-week numbers are AWS's: 1=SUN .. 7=SAT.
    """

    month_days: frozenset[int] = frozenset()
    last_day: bool = False  # L
    last_weekday: bool = False  # LW
    nearest_weekday_to: int | None = None  # 15W
    weekdays: frozenset[int] = frozenset()  # MON-FRI; a lone L is 7 (SAT)
    last_of_weekday: int | None = None  # 5L: the month's last Thursday
    nth_weekday: tuple[int, int] | None = None  # 3#2: (TUE, 2nd)

    def days_in(self, year: int, month: int) -> list[int]:
        """The matching days of one month, ascending; a whole month at a time keeps the search fast."""
        ndays = calendar.monthrange(year, month)[1]
        nearest = _nearest_weekday(year, month, self.nearest_weekday_to, ndays)
        last_weekday = _nearest_weekday(year, month, ndays, ndays) if self.last_weekday else None
        return [
            d
            for d in range(1, ndays + 1)
            if d in (nearest, last_weekday) or self._matches(d, date(year, month, d).isoweekday() % 7 + 1, ndays)
        ]

    def _matches(self, day: int, weekday: int, ndays: int) -> bool:
        return (
            day in self.month_days
            or (self.last_day and day == ndays)
            or weekday in self.weekdays
            or (self.last_of_weekday == weekday and day + 7 > ndays)
            or self.nth_weekday == (weekday, (day - 1) // 7 + 1)
        )


def _nearest_weekday(year: int, month: int, target: int | None, ndays: int) -> int | None:
    """The weekday (Mon-Fri) nearest to ``target`` without leaving the month, as AWS's ``W`` means it."""
    if target is None or target > ndays:
        return None
    weekday = date(year, month, target).weekday()  # Mon=0 .. Sun=6
    if weekday == 5:  # Saturday: the Friday before, unless that is last month
        return target - 1 if target > 1 else target + 2
    if weekday == 6:  # Sunday: the Monday after, unless that is next month
        return target + 1 if target < ndays else target - 2
    return target


@dataclass(frozen=True)
class _Cron:
    """A parsed cron expression: sorted minutes, hours, months, years, and the day rule."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: _DaySpec
    months: tuple[int, ...]
    years: tuple[int, ...]

    def fire_times(self, after: datetime, zone: tzinfo) -> Iterator[datetime]:
        # With gaps skipped and repeated wall times taken at fold=0, wall-clock order is UTC order, so the
        # search can start on the local date of ``after`` and walk forward.
        for day in self._days_from(after.astimezone(zone).date()):
            yield from self._fires_on(day, after, zone)

    def _days_from(self, start: date) -> Iterator[date]:
        for year in (y for y in self.years if y >= start.year):
            for month in (m for m in self.months if (year, m) >= (start.year, start.month)):
                for day in self.days.days_in(year, month):
                    if date(year, month, day) >= start:
                        yield date(year, month, day)

    def _fires_on(self, day: date, after: datetime, zone: tzinfo) -> Iterator[datetime]:
        for hour in self.hours:
            for minute in self.minutes:
                local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                fire = local.astimezone(timezone.utc)
                if fire > after and _exists(local, fire, zone):
                    yield fire


def _exists(local: datetime, fire: datetime, zone: tzinfo) -> bool:
    """False for a wall time in a spring-forward gap: it does not survive the round trip through UTC."""
    return fire.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None)


_Spec = _Rate | _Cron | _At


@dataclass(frozen=True)
class Schedule:
    """A validated schedule expression; build one with :func:`parse_schedule`."""

    expression: str
    kind: ScheduleKind
    _spec: _Spec = field(repr=False, compare=False)

    @property
    def interval_s(self) -> int | None:
        """Seconds between fires of a ``rate(...)``; None for cron and at, whose gaps vary."""
        if isinstance(self._spec, _Rate):
            return int(self._spec.interval.total_seconds())
        return None

    def next_fire_times(self, after: datetime, count: int = 1, tz: str | None = None) -> list[datetime]:
        """Up to ``count`` fire times strictly after ``after``, as aware UTC datetimes, evaluated in ``tz``.

        ``tz`` is an IANA name (default UTC). Fewer than ``count`` come back when the schedule runs out
        (an ``at``, a past year list, an impossible date) or reaches the end of 2199.
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError(f"after must be a timezone-aware datetime, got naive {after!r}")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        start = after.astimezone(timezone.utc)
        return list(islice(self._spec.fire_times(start, _zone(tz)), count))

    def next_fire_time(self, after: datetime, tz: str | None = None) -> datetime | None:
        """The first fire time strictly after ``after`` (aware UTC), or None if the schedule never fires again."""
        fires = self.next_fire_times(after, 1, tz)
        return fires[0] if fires else None


def _zone(tz: str | None) -> tzinfo:
    """The tzinfo for an IANA name; UTC needs no tz database, so it never depends on tzdata being installed."""
    if tz is None or tz.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {tz!r}; expected an IANA name such as 'Europe/Berlin'") from None


def parse_schedule(expression: str, *, task: str | None = None) -> Schedule:
    """Parse and validate an AWS schedule expression, as EventBridge would, before anything is deployed.

    Raises :class:`~cloudq.errors.ScheduleError` saying exactly what is wrong, prefixed with the task's name
    when given, so that a bad ``@app.periodic`` fails at import with a message pointing at the culprit.
    """
    try:
        return _parse(expression)
    except ScheduleError as exc:
        if task is None:
            raise
        raise ScheduleError(f"task {task!r}: {exc}") from None


def _parse(expression: str) -> Schedule:
    if not isinstance(expression, str):
        raise ScheduleError(f"a schedule expression must be a string, got {type(expression).__name__}")
    match = _EXPRESSION.fullmatch(expression)
    if match is None:
        raise ScheduleError(
            f"{expression!r} is not a schedule expression; "
            "expected rate(value unit), cron(minutes hours day-of-month month day-of-week year) "
            "or at(yyyy-mm-ddThh:mm:ss)"
        )
    kind, body = match[1].lower(), match[2].strip()
    if kind == "rate":
        return _parse_rate(body)
    if kind == "cron":
        return _parse_cron(body)
    return _parse_at(body)


def _parse_rate(body: str) -> Schedule:
    match = _RATE_BODY.fullmatch(body)
    if match is None:
        raise ScheduleError(f"rate({body}) must be 'rate(value unit)', e.g. rate(5 minutes)")
    value_text, unit = match[1], match[2].lower()
    if not (value_text.isascii() and value_text.isdigit()) or int(value_text) == 0:
        raise ScheduleError(f"rate value must be a positive integer, got {value_text!r}")
    value, singular = int(value_text), unit.removesuffix("s")
    if singular not in _RATE_UNITS_S:
        raise ScheduleError(f"rate unit {unit!r} is not one of minute(s), hour(s), day(s)")
    expected = singular if value == 1 else singular + "s"
    if unit != expected:
        number = "singular" if value == 1 else "plural"
        raise ScheduleError(f"rate value {value} needs the {number} unit {expected!r}, not {unit!r}")
    if value * _RATE_UNITS_S[singular] > _MAX_RATE_S:
        raise ScheduleError(f"rate({value} {unit}) is longer than the {_MAX_RATE_S // 86400} days to the year 2200")
    spec = _Rate(timedelta(seconds=value * _RATE_UNITS_S[singular]))
    return Schedule(f"rate({value} {unit})", "rate", spec)


def _parse_at(body: str) -> Schedule:
    match = _AT_BODY.fullmatch(body)
    if match is None:
        raise ScheduleError(f"at({body}) must be 'at(yyyy-mm-ddThh:mm:ss)', e.g. at(2030-01-31T09:30:00)")
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        when = datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ScheduleError(f"at({body}) is not a real date and time: {exc}") from None
    return Schedule(f"at({body})", "at", _At(when))


def _parse_cron(body: str) -> Schedule:
    fields = body.upper().split()
    if len(fields) != 6:
        raise ScheduleError(
            "cron expressions need exactly 6 fields (minutes hours day-of-month month day-of-week year), "
            f"got {len(fields)} in cron({body})"
        )
    minutes, hours, day_of_month, month, day_of_week, year = fields
    for text, fld in ((minutes, _MINUTES), (hours, _HOURS), (month, _MONTH), (year, _YEAR)):
        if "?" in text:
            raise ScheduleError(f"cron {fld.name} cannot be '?'; it is allowed only in day-of-month and day-of-week")
    spec = _Cron(
        minutes=tuple(sorted(_parse_values(minutes, _MINUTES))),
        hours=tuple(sorted(_parse_values(hours, _HOURS))),
        days=_parse_days(day_of_month, day_of_week),
        months=tuple(sorted(_parse_values(month, _MONTH))),
        years=tuple(sorted(_parse_values(year, _YEAR))),
    )
    return Schedule(f"cron({' '.join(fields)})", "cron", spec)


def _parse_days(day_of_month: str, day_of_week: str) -> _DaySpec:
    """AWS's rule: exactly one of the two day fields is '?', the other a value or '*'."""
    if day_of_month == "?" and day_of_week == "?":
        raise ScheduleError("cron day-of-month and day-of-week cannot both be '?'; one of them must be specified")
    if day_of_month != "?" and day_of_week != "?":
        raise ScheduleError("cron day-of-month and day-of-week cannot both be specified; one must be '?'")
    if day_of_week == "?":
        return _parse_day_of_month(day_of_month)
    return _parse_day_of_week(day_of_week)


def _parse_day_of_month(text: str) -> _DaySpec:
    if text == "L":
        return _DaySpec(last_day=True)
    if text == "LW":
        return _DaySpec(last_weekday=True)
    if text.endswith("W") and "," not in text and "-" not in text and "/" not in text:
        return _DaySpec(nearest_weekday_to=_parse_value(text[:-1], _DAY_OF_MONTH))
    if "L" in text or "W" in text:
        raise ScheduleError(
            f"cron day-of-month {text!r}: 'L', 'LW' and 'nW' (e.g. '15W') must stand alone, without lists or ranges"
        )
    return _DaySpec(month_days=_parse_values(text, _DAY_OF_MONTH))


def _parse_day_of_week(text: str) -> _DaySpec:
    if "," in text and ("#" in text or "L" in text):
        raise ScheduleError(f"cron day-of-week {text!r}: 'L' and '#' must stand alone, not in a list")
    if "/" in text:
        raise ScheduleError(f"cron day-of-week {text!r}: '/' increments are not allowed in day-of-week")
    if "#" in text:
        return _DaySpec(nth_weekday=_parse_nth(text))
    if text == "L":  # the last day of the week: every Saturday
        return _DaySpec(weekdays=frozenset({7}))
    if text.endswith("L") and "-" not in text:
        return _DaySpec(last_of_weekday=_parse_value(text[:-1], _DAY_OF_WEEK))
    return _DaySpec(weekdays=_parse_values(text, _DAY_OF_WEEK))


def _parse_nth(text: str) -> tuple[int, int]:
    """``3#2`` is the month's second Tuesday; a month has at most five of any weekday."""
    weekday_text, _, nth_text = text.partition("#")
    if not (nth_text.isascii() and nth_text.isdigit() and 1 <= int(nth_text) <= 5):
        raise ScheduleError(f"cron day-of-week {text!r}: the number after '#' must be 1-5")
    return _parse_value(weekday_text, _DAY_OF_WEEK), int(nth_text)


def _parse_values(text: str, fld: _Field) -> frozenset[int]:
    """A comma-separated list of ``*``, values, ranges and increments (``0/15``, ``*/5``, ``8-17/2``)."""
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, fld))
    return frozenset(values)


def _parse_item(item: str, fld: _Field) -> range:
    base, slash, step_text = item.partition("/")
    step = _parse_step(step_text, fld) if slash else 1
    if base == "*":
        return range(fld.lo, fld.hi + 1, step)
    if "-" in base:
        first_text, _, last_text = base.partition("-")
        first, last = _parse_value(first_text, fld), _parse_value(last_text, fld)
        if first > last:
            raise ScheduleError(f"cron {fld.name} range {base!r} runs backwards; write it as a list instead")
        return range(first, last + 1, step)
    first = _parse_value(base, fld)
    return range(first, (fld.hi if slash else first) + 1, step)


def _parse_step(text: str, fld: _Field) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= fld.hi):
        raise ScheduleError(f"cron {fld.name} increment {text!r} must be a whole number from 1 to {fld.hi}")
    return int(text)


def _parse_value(text: str, fld: _Field) -> int:
    if text in fld.names:
        return fld.names[text]
    if not (text.isascii() and text.isdigit()):
        hint = f" or a name ({', '.join(fld.names)})" if fld.names else ""
        raise ScheduleError(f"cron {fld.name} value {text!r} is not a number{hint}")
    if not fld.lo <= int(text) <= fld.hi:
        raise ScheduleError(f"cron {fld.name} value {text} is out of range {fld.lo}-{fld.hi}")
    return int(text)

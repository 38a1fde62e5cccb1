"""AWS schedule expressions: what parses, what AWS would reject, and when each schedule fires next."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import cloudq.schedules
from cloudq.errors import ConfigurationError, ScheduleError
from cloudq.schedules import Schedule, expressions, parse_schedule

pytestmark = pytest.mark.unit

UTC = timezone.utc


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def fires(expression: str, after: datetime, count: int, tz: str | None = None) -> list[datetime]:
    return parse_schedule(expression).next_fire_times(after, count, tz)


# --- parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "kind"),
    [
        # The examples from AWS's EventBridge documentation.
        ("cron(0 10 * * ? *)", "cron"),
        ("cron(15 12 * * ? *)", "cron"),
        ("cron(0 18 ? * MON-FRI *)", "cron"),
        ("cron(0 8 1 * ? *)", "cron"),
        ("cron(0/15 * * * ? *)", "cron"),
        ("cron(0/10 * ? * MON-FRI *)", "cron"),
        ("cron(0/5 8-17 ? * MON-FRI *)", "cron"),
        ("cron(0 9 ? * 2#1 *)", "cron"),
        ("cron(0 0/4 * * ? *)", "cron"),
        ("cron(1/10 * * * ? *)", "cron"),
        ("cron(0 12 ? JAN,FEB,MAR * *)", "cron"),
        ("cron(0 8 3W * ? *)", "cron"),
        ("cron(0 5 L * ? *)", "cron"),
        ("cron(0 5 LW * ? *)", "cron"),
        ("cron(0 5 ? * 6L *)", "cron"),
        ("cron(0 5 ? * L *)", "cron"),
        ("cron(0 0 1 1 ? 1970-2199)", "cron"),
        ("cron(0 0 1 1 ? 2025/5)", "cron"),
        ("cron(0 * * * ? *)", "cron"),
        ("cron(0 * ? * * *)", "cron"),
        ("cron(0 10,15 ? * MON-FRI *)", "cron"),
        ("cron(*/5 8-17/3 1-15/2 * ? *)", "cron"),
        ("rate(1 minute)", "rate"),
        ("rate(5 minutes)", "rate"),
        ("rate(1 hour)", "rate"),
        ("rate(12 hours)", "rate"),
        ("rate(1 day)", "rate"),
        ("rate(7 days)", "rate"),
        ("at(2030-06-01T09:00:00)", "at"),
    ],
)
def test_aws_documented_expressions_parse(expression: str, kind: str) -> None:
    """Every expression AWS documents as valid parses, keeps its text and reports its kind."""
    schedule = parse_schedule(expression)
    assert schedule.expression == expression
    assert schedule.kind == kind


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("  cron( 0  18 ? * mon-fri * )  ", "cron(0 18 ? * MON-FRI *)"),
        ("CRON(0 12 ? jan,Feb * *)", "cron(0 12 ? JAN,FEB * *)"),
        ("cron(0 5 lw * ? *)", "cron(0 5 LW * ? *)"),
        ("Rate( 5  Minutes )", "rate(5 minutes)"),
        ("rate(05 minutes)", "rate(5 minutes)"),
        ("AT(2030-06-01T09:00:00)", "at(2030-06-01T09:00:00)"),
    ],
)
def test_expressions_are_normalized(expression: str, normalized: str) -> None:
    """Case and spacing are normalized, so that the text synced to AWS is canonical."""
    assert parse_schedule(expression).expression == normalized


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 12 * * ?)", "exactly 6 fields (minutes hours day-of-month month day-of-week year), got 5"),
        ("cron(0 12 * * ? * *)", "got 7"),
        ("cron(0 12 ? * ? *)", "cannot both be '?'"),
        ("cron(0 12 * * MON *)", "cannot both be specified; one must be '?'"),
        ("cron(0 12 * * * *)", "cannot both be specified; one must be '?'"),
        ("cron(0 12 1 * 2 *)", "cannot both be specified; one must be '?'"),
        ("cron(60 * * * ? *)", "minutes value 60 is out of range 0-59"),
        ("cron(0 24 * * ? *)", "hours value 24 is out of range 0-23"),
        ("cron(0 0 0 * ? *)", "day-of-month value 0 is out of range 1-31"),
        ("cron(0 0 32 * ? *)", "day-of-month value 32 is out of range 1-31"),
        ("cron(0 0 1 13 ? *)", "month value 13 is out of range 1-12"),
        ("cron(0 0 1 FOO ? *)", "month value 'FOO' is not a number or a name (JAN,"),
        ("cron(0 0 ? * 0 *)", "day-of-week value 0 is out of range 1-7"),
        ("cron(0 0 ? * 8 *)", "day-of-week value 8 is out of range 1-7"),
        ("cron(0 0 ? * MONDAY *)", "day-of-week value 'MONDAY' is not a number"),
        ("cron(0 0 1 1 ? 1969)", "year value 1969 is out of range 1970-2199"),
        ("cron(0 0 1 1 ? 2200)", "year value 2200 is out of range 1970-2199"),
        ("cron(? 0 1 * ? *)", "minutes cannot be '?'"),
        ("cron(0 ? * * ? *)", "hours cannot be '?'"),
        ("cron(0/0 * * * ? *)", "minutes increment '0' must be a whole number from 1 to 59"),
        ("cron(0/x * * * ? *)", "minutes increment 'X'"),
        ("cron(30-10 * * * ? *)", "minutes range '30-10' runs backwards"),
        ("cron(0 0 ? * FRI-MON *)", "day-of-week range 'FRI-MON' runs backwards"),
        ("cron(0,,5 * * * ? *)", "minutes value '' is not a number"),
        ("cron(-1 * * * ? *)", "minutes value '' is not a number"),
        ("cron(0 0 ? * 1/2 *)", "'/' increments are not allowed in day-of-week"),
        ("cron(0 0 ? * 3#1,6#3 *)", "'L' and '#' must stand alone"),
        ("cron(0 0 ? * 5L,6 *)", "'L' and '#' must stand alone"),
        ("cron(0 0 ? * 3#6 *)", "the number after '#' must be 1-5"),
        ("cron(0 0 ? * 3#0 *)", "the number after '#' must be 1-5"),
        ("cron(0 0 ? * 9#1 *)", "day-of-week value 9 is out of range 1-7"),
        ("cron(0 0 1-15W * ? *)", "'L', 'LW' and 'nW' (e.g. '15W') must stand alone"),
        ("cron(0 0 L,15 * ? *)", "'L', 'LW' and 'nW' (e.g. '15W') must stand alone"),
        ("cron(0 0 L-3 * ? *)", "'L', 'LW' and 'nW' (e.g. '15W') must stand alone"),
        ("cron(0 0 32W * ? *)", "day-of-month value 32 is out of range 1-31"),
        ("cron(0 0 1 * L *)", "cannot both be specified"),
        ("cron(0 0 L * ? L)", "year value 'L' is not a number"),
        ("rate(0 minutes)", "rate value must be a positive integer, got '0'"),
        ("rate(-5 minutes)", "rate value must be a positive integer, got '-5'"),
        ("rate(1.5 hours)", "rate value must be a positive integer, got '1.5'"),
        ("rate(1 minutes)", "rate value 1 needs the singular unit 'minute', not 'minutes'"),
        ("rate(1 hours)", "rate value 1 needs the singular unit 'hour', not 'hours'"),
        ("rate(5 minute)", "rate value 5 needs the plural unit 'minutes', not 'minute'"),
        ("rate(5 hour)", "rate value 5 needs the plural unit 'hours', not 'hour'"),
        ("rate(2 weeks)", "rate unit 'weeks' is not one of minute(s), hour(s), day(s)"),
        ("rate(30 seconds)", "rate unit 'seconds' is not one of"),
        ("rate(5)", "must be 'rate(value unit)'"),
        ("rate(5 minutes please)", "must be 'rate(value unit)'"),
        ("rate(999999999 days)", "is longer than the"),
        ("at(2030-06-01 09:00:00)", "must be 'at(yyyy-mm-ddThh:mm:ss)'"),
        ("at(2030-06-01T09:00)", "must be 'at(yyyy-mm-ddThh:mm:ss)'"),
        ("at(2030-02-30T09:00:00)", "is not a real date and time: day is out of range for month"),
        ("at(2030-06-01T24:00:00)", "is not a real date and time"),
        ("every 5 minutes", "is not a schedule expression"),
        ("", "is not a schedule expression"),
        ("cron 0 12 * * ? *", "is not a schedule expression"),
        ("0 12 * * ? *", "is not a schedule expression"),
        ("schedule(5 minutes)", "is not a schedule expression"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    """An expression AWS would reject raises ScheduleError whose message pinpoints the problem."""
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(expression)
    assert message in str(raised.value)


def test_error_names_the_task() -> None:
    """With a task name, the error starts with it so that the culprit in a big app is obvious."""
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("cron(0 12 * * MON *)", task="billing.report")
    assert str(raised.value) == (
        "task 'billing.report': cron day-of-month and day-of-week cannot both be specified; one must be '?'"
    )


def test_error_without_task_has_no_prefix() -> None:
    """Without a task name the message is just the problem."""
    with pytest.raises(ScheduleError, match=r"^rate value 1 needs"):
        parse_schedule("rate(1 minutes)")


def test_schedule_error_is_a_configuration_error() -> None:
    """Callers that catch ConfigurationError at startup also catch a bad schedule."""
    with pytest.raises(ConfigurationError):
        parse_schedule("rate(0 days)", task="t")


def test_non_string_expression_is_rejected() -> None:
    """A non-string (say, a timedelta passed by mistake) is a ScheduleError, not an AttributeError."""
    with pytest.raises(ScheduleError, match="must be a string, got timedelta"):
        parse_schedule(timedelta(minutes=5), task="t")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("expression", "interval_s"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(7 days)", 7 * 86400),
        ("cron(0 10 * * ? *)", None),
        ("at(2030-01-01T00:00:00)", None),
    ],
)
def test_interval_s(expression: str, interval_s: int | None) -> None:
    """interval_s is the rate's period in seconds, and None for schedules without a fixed period."""
    assert parse_schedule(expression).interval_s == interval_s


def test_schedules_compare_by_normalized_expression() -> None:
    """Two spellings of one schedule are equal and hash alike, so they deduplicate in sets and dicts."""
    assert parse_schedule("cron(0 18 ? * mon-fri *)") == parse_schedule("cron(0  18 ? * MON-FRI *)")
    assert len({parse_schedule("rate(5 minutes)"), parse_schedule("RATE(5 MINUTES)")}) == 1


def test_package_exports() -> None:
    """The package re-exports exactly the public API."""
    assert sorted(cloudq.schedules.__all__) == ["Schedule", "ScheduleKind", "parse_schedule"]
    assert cloudq.schedules.Schedule is Schedule


# --- next fire times: cron in UTC -------------------------------------------------------------------------------


def test_fire_times_are_strictly_after_and_aware_utc() -> None:
    """A fire time equal to `after` is not returned, and results are aware UTC datetimes."""
    result = fires("cron(0 10 * * ? *)", utc(2025, 1, 31, 10, 0), 2)
    assert result == [utc(2025, 2, 1, 10, 0), utc(2025, 2, 2, 10, 0)]
    assert all(fire.tzinfo is UTC for fire in result)


def test_after_in_another_offset_is_converted() -> None:
    """`after` may carry any offset; it is the instant that counts."""
    after = datetime(2025, 1, 1, 11, 30, tzinfo=timezone(timedelta(hours=2)))  # 09:30 UTC
    assert fires("cron(0 10 * * ? *)", after, 1) == [utc(2025, 1, 1, 10, 0)]


def test_aws_examples_fire_as_documented() -> None:
    """The documented examples fire when the documentation says they do."""
    friday_evening = utc(2025, 1, 3, 17, 52)  # a Friday
    assert fires("cron(0/15 * * * ? *)", utc(2025, 1, 1, 0, 7), 3) == [
        utc(2025, 1, 1, 0, 15),
        utc(2025, 1, 1, 0, 30),
        utc(2025, 1, 1, 0, 45),
    ]
    assert fires("cron(0/5 8-17 ? * MON-FRI *)", friday_evening, 2) == [utc(2025, 1, 3, 17, 55), utc(2025, 1, 6, 8, 0)]
    assert fires("cron(0 18 ? * MON-FRI *)", friday_evening, 2) == [utc(2025, 1, 3, 18, 0), utc(2025, 1, 6, 18, 0)]
    assert fires("cron(0 8 1 * ? *)", utc(2025, 1, 1, 8, 0), 2) == [utc(2025, 2, 1, 8, 0), utc(2025, 3, 1, 8, 0)]
    assert fires("cron(1/10 * * * ? *)", utc(2025, 1, 1, 0, 0), 3) == [
        utc(2025, 1, 1, 0, 1),
        utc(2025, 1, 1, 0, 11),
        utc(2025, 1, 1, 0, 21),
    ]


def test_first_monday_with_hash() -> None:
    """2#1 is the month's first Monday (1=SUN, so 2=MON)."""
    assert fires("cron(0 9 ? * 2#1 *)", utc(2025, 8, 15), 2) == [utc(2025, 9, 1, 9, 0), utc(2025, 10, 6, 9, 0)]


def test_fifth_weekday_skips_months_without_one() -> None:
    """6#5 (fifth Friday) fires only in months that have five Fridays."""
    assert fires("cron(0 0 ? * FRI#5 *)", utc(2025, 1, 1), 4) == [
        utc(2025, 1, 31),
        utc(2025, 5, 30),
        utc(2025, 8, 29),
        utc(2025, 10, 31),
    ]


def test_last_weekday_of_month_with_l() -> None:
    """5L is the month's last Thursday (Thanksgiving 2025 is the 27th)."""
    assert fires("cron(0 12 ? NOV 5L *)", utc(2025, 1, 1), 2) == [utc(2025, 11, 27, 12), utc(2026, 11, 26, 12)]


def test_lone_l_in_day_of_week_is_every_saturday() -> None:
    """L alone in day-of-week is the last day of the week: every Saturday, not the month's last one."""
    assert fires("cron(0 0 ? * L *)", utc(2025, 5, 1), 3) == [utc(2025, 5, 3), utc(2025, 5, 10), utc(2025, 5, 17)]


def test_last_day_of_month_handles_month_lengths_and_leap_years() -> None:
    """L in day-of-month is the 31st, 30th, 29th or 28th as the month and the year require."""
    assert fires("cron(0 8 L * ? *)", utc(2024, 1, 1), 5) == [
        utc(2024, 1, 31, 8),
        utc(2024, 2, 29, 8),
        utc(2024, 3, 31, 8),
        utc(2024, 4, 30, 8),
        utc(2024, 5, 31, 8),
    ]
    assert fires("cron(0 8 L 2 ? *)", utc(2025, 1, 1), 1) == [utc(2025, 2, 28, 8)]


def test_day_31_skips_short_months() -> None:
    """A day-of-month of 31 fires only in months that have one, never on the 1st of the next."""
    assert fires("cron(0 0 31 * ? *)", utc(2025, 1, 31), 3) == [utc(2025, 3, 31), utc(2025, 5, 31), utc(2025, 7, 31)]


@pytest.fixture
def month_scans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every (year, month) the cron search looks into: its steps, counted instead of timed."""
    scans: list[tuple[int, int]] = []
    real = expressions._DaySpec.days_in

    def days_in(self: expressions._DaySpec, year: int, month: int) -> list[int]:
        scans.append((year, month))
        return real(self, year, month)

    monkeypatch.setattr(expressions._DaySpec, "days_in", days_in)
    return scans


def test_february_29_fires_only_in_leap_years(month_scans: list[tuple[int, int]]) -> None:
    """Feb 29 is found years ahead, and 2100 (divisible by 100, not 400) is skipped, looking into each
    February once (a month at a time, not a day or a minute at a time)."""
    assert fires("cron(0 0 29 2 ? *)", utc(2024, 3, 1), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]
    assert month_scans == [(year, 2) for year in range(2025, 2033)]
    month_scans.clear()
    assert fires("cron(0 0 29 2 ? *)", utc(2096, 3, 1), 1) == [utc(2104, 2, 29)]
    assert month_scans == [(year, 2) for year in range(2097, 2105)]


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 0 31 2 ? *)",  # February never has a 31st
        "cron(0 0 30 FEB ? *)",
        "cron(0 0 31 4,6,9,11 ? *)",
        "cron(0 0 1 1 ? 2000-2010)",  # all years in the past
        "cron(0 0 31W 4 ? *)",  # April has no 31st to be near
        "cron(* * 31 2 ? *)",
    ],
)
def test_schedules_that_never_fire_return_nothing_quickly(expression: str, month_scans: list[tuple[int, int]]) -> None:
    """An expression that can never fire again returns [] / None instead of searching forever: it looks
    into each of its months up to 2199 at most once per call."""
    schedule = parse_schedule(expression)
    assert schedule.next_fire_times(utc(2025, 1, 1), 3) == []
    assert schedule.next_fire_time(utc(2025, 1, 1)) is None
    per_call = month_scans[: len(month_scans) // 2]
    assert month_scans == per_call * 2 and len(set(per_call)) == len(per_call)
    assert all(2025 <= year <= 2199 for year, _ in per_call)


def test_search_ends_with_2199() -> None:
    """Nothing is returned past AWS's last cron year, so the list may come back short."""
    assert fires("cron(0 0 1 1 ? *)", utc(2198, 6, 1), 5) == [utc(2199, 1, 1)]


def test_year_field_limits_fire_times() -> None:
    """The year field restricts fires to the listed years, and an increment steps through years."""
    assert fires("cron(0 12 1 1 ? 2027,2030)", utc(2025, 1, 1), 5) == [utc(2027, 1, 1, 12), utc(2030, 1, 1, 12)]
    assert fires("cron(0 0 1 JAN ? 2026/2)", utc(2025, 1, 1), 3) == [utc(2026, 1, 1), utc(2028, 1, 1), utc(2030, 1, 1)]
    assert fires("cron(0 0 ? 6 2#1 2025-2026)", utc(2025, 1, 1), 5) == [utc(2025, 6, 2), utc(2026, 6, 1)]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # 15W: the 15th of Feb 2025 is a Saturday -> Friday the 14th; of June 2025 a Sunday -> Monday the 16th.
        ("cron(0 9 15W * ? *)", utc(2025, 2, 1), utc(2025, 2, 14, 9)),
        ("cron(0 9 15W * ? *)", utc(2025, 6, 1), utc(2025, 6, 16, 9)),
        ("cron(0 9 15W * ? *)", utc(2025, 7, 1), utc(2025, 7, 15, 9)),  # a Tuesday: the day itself
        # 1W on Saturday Feb 1 2025 -> Monday the 3rd, not Friday Jan 31 in the previous month.
        ("cron(0 9 1W * ? *)", utc(2025, 1, 15), utc(2025, 2, 3, 9)),
        # 31W on Sunday Aug 31 2025 -> Friday the 29th, not Monday Sep 1 in the next month.
        ("cron(0 9 31W * ? *)", utc(2025, 8, 1), utc(2025, 8, 29, 9)),
        # LW: the last weekday. May 31 2025 is a Saturday -> 30th; Aug 31 2025 a Sunday -> 29th.
        ("cron(0 9 LW * ? *)", utc(2025, 5, 1), utc(2025, 5, 30, 9)),
        ("cron(0 9 LW * ? *)", utc(2025, 8, 1), utc(2025, 8, 29, 9)),
        ("cron(0 9 LW * ? *)", utc(2025, 9, 1), utc(2025, 9, 30, 9)),  # a Tuesday: the last day itself
    ],
)
def test_nearest_weekday_stays_inside_the_month(expression: str, after: datetime, expected: datetime) -> None:
    """W moves a weekend day to the nearest weekday without crossing into another month."""
    assert fires(expression, after, 1) == [expected]


def test_every_minute_is_fast_and_dense() -> None:
    """cron(* * * * ? *) fires every minute; the search does not step second by second."""
    assert fires("cron(* * * * ? *)", utc(2025, 1, 1, 23, 58, 30), 3) == [
        utc(2025, 1, 1, 23, 59),
        utc(2025, 1, 2, 0, 0),
        utc(2025, 1, 2, 0, 1),
    ]


def test_count_zero_and_negative() -> None:
    """count=0 asks for nothing; a negative count is a programming error."""
    schedule = parse_schedule("rate(5 minutes)")
    assert schedule.next_fire_times(utc(2025, 1, 1), 0) == []
    with pytest.raises(ValueError, match="count must be >= 0"):
        schedule.next_fire_times(utc(2025, 1, 1), -1)


def test_naive_after_is_rejected() -> None:
    """A naive `after` is ambiguous, so it is refused rather than guessed."""
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("rate(5 minutes)").next_fire_time(datetime(2025, 1, 1))


def test_unknown_time_zone_is_a_schedule_error() -> None:
    """A misspelt IANA name is a configuration error with the name in the message."""
    with pytest.raises(ScheduleError, match="unknown time zone 'Europe/Berln'"):
        parse_schedule("cron(0 10 * * ? *)").next_fire_time(utc(2025, 1, 1), tz="Europe/Berln")


# --- next fire times: rate and at ------------------------------------------------------------------------------


def test_rate_is_anchored_at_the_unix_epoch() -> None:
    """Rate ticks fall on multiples of the interval since 1970-01-01T00:00Z, whatever `after` is."""
    assert fires("rate(5 minutes)", utc(2025, 1, 1, 12, 3, 10), 3) == [
        utc(2025, 1, 1, 12, 5),
        utc(2025, 1, 1, 12, 10),
        utc(2025, 1, 1, 12, 15),
    ]
    assert fires("rate(1 hour)", utc(2025, 1, 1, 12, 0), 1) == [utc(2025, 1, 1, 13, 0)]
    # 2025-01-01T00:00Z is 20089 * 1440 minutes after the epoch, which is 2 past a multiple of 7.
    assert fires("rate(7 minutes)", utc(2025, 1, 1), 1) == [utc(2025, 1, 1, 0, 5)]


def test_rate_in_days_is_24_hours_and_ignores_time_zone() -> None:
    """rate(7 days) ticks every Thursday at 00:00 UTC (1970-01-01 was a Thursday), in any time zone."""
    expected = [utc(2025, 3, 6), utc(2025, 3, 13)]
    assert fires("rate(7 days)", utc(2025, 3, 1), 2) == expected
    assert fires("rate(7 days)", utc(2025, 3, 1), 2, tz="America/New_York") == expected  # across a DST change


def test_rate_ticks_are_the_same_from_any_starting_point() -> None:
    """Two processes asking at different moments agree on the ticks (stable across restarts)."""
    schedule = parse_schedule("rate(15 minutes)")
    first = schedule.next_fire_times(utc(2025, 1, 1, 0, 1), 4)
    later = schedule.next_fire_times(utc(2025, 1, 1, 0, 20), 2)
    assert later == first[1:3]


def test_at_fires_once_in_its_time_zone() -> None:
    """at(...) is a wall time in tz, fires once, and never again after it has passed."""
    schedule = parse_schedule("at(2030-01-01T09:00:00)")
    assert schedule.next_fire_times(utc(2025, 1, 1), 3, tz="Europe/Berlin") == [utc(2030, 1, 1, 8, 0)]
    assert schedule.next_fire_time(utc(2025, 1, 1)) == utc(2030, 1, 1, 9, 0)
    assert schedule.next_fire_time(utc(2030, 1, 1, 9, 0)) is None


def test_at_in_a_spring_forward_gap_is_shifted_forward() -> None:
    """A one-time wall time that does not exist (02:30 on 2025-03-09 in New York) runs at 03:30 EDT, not never."""
    schedule = parse_schedule("at(2025-03-09T02:30:00)")
    assert schedule.next_fire_time(utc(2025, 1, 1), tz="America/New_York") == utc(2025, 3, 9, 7, 30)


def test_at_in_a_repeated_hour_fires_at_the_first_occurrence() -> None:
    """01:30 happens twice on 2025-11-02 in New York; at(...) takes the first (EDT)."""
    schedule = parse_schedule("at(2025-11-02T01:30:00)")
    assert schedule.next_fire_time(utc(2025, 1, 1), tz="America/New_York") == utc(2025, 11, 2, 5, 30)


# --- next fire times: daylight saving time ---------------------------------------------------------------------


def test_new_york_spring_forward_skips_the_missing_time() -> None:
    """02:30 does not exist on 2025-03-09 in New York, so that day's fire is skipped, as EventBridge Scheduler does."""
    assert fires("cron(30 2 * * ? *)", utc(2025, 3, 8, 12), 2, tz="America/New_York") == [
        utc(2025, 3, 10, 6, 30),  # 02:30 EDT
        utc(2025, 3, 11, 6, 30),
    ]
    assert fires("cron(0 * * * ? *)", utc(2025, 3, 9, 5, 30), 3, tz="America/New_York") == [
        utc(2025, 3, 9, 6, 0),  # 01:00 EST
        utc(2025, 3, 9, 7, 0),  # 03:00 EDT; 02:00 never happened
        utc(2025, 3, 9, 8, 0),
    ]


def test_new_york_fall_back_fires_a_repeated_time_once() -> None:
    """01:00-01:59 happens twice on 2025-11-02 in New York; each wall time fires once, at its first occurrence."""
    assert fires("cron(30 1 * * ? *)", utc(2025, 11, 1, 12), 2, tz="America/New_York") == [
        utc(2025, 11, 2, 5, 30),  # 01:30 EDT, and not again at 01:30 EST
        utc(2025, 11, 3, 6, 30),  # 01:30 EST
    ]
    assert fires("cron(0/30 * * * ? *)", utc(2025, 11, 2, 4, 0), 5, tz="America/New_York") == [
        utc(2025, 11, 2, 4, 30),  # 00:30 EDT
        utc(2025, 11, 2, 5, 0),  # 01:00 EDT
        utc(2025, 11, 2, 5, 30),  # 01:30 EDT
        utc(2025, 11, 2, 7, 0),  # 02:00 EST; the second 01:00 and 01:30 do not fire again
        utc(2025, 11, 2, 7, 30),
    ]


def test_asking_during_the_repeated_hour_finds_the_next_new_wall_time() -> None:
    """From inside the second 01:xx (EST), the next fire is the next wall time not yet fired."""
    after = utc(2025, 11, 2, 6, 15)  # 01:15 EST, the second pass
    assert fires("cron(0/30 * * * ? *)", after, 1, tz="America/New_York") == [utc(2025, 11, 2, 7, 0)]


def test_berlin_spring_forward_skips_the_missing_time() -> None:
    """02:30 does not exist on 2025-03-30 in Berlin (02:00 CET -> 03:00 CEST): that day is skipped."""
    assert fires("cron(30 2 * * ? *)", utc(2025, 3, 29), 2, tz="Europe/Berlin") == [
        utc(2025, 3, 29, 1, 30),  # 02:30 CET
        utc(2025, 3, 31, 0, 30),  # 02:30 CEST
    ]


def test_berlin_fall_back_fires_the_repeated_time_once() -> None:
    """02:30 happens twice on 2025-10-26 in Berlin (03:00 CEST -> 02:00 CET); it fires once, in CEST."""
    assert fires("cron(30 2 * * ? *)", utc(2025, 10, 25, 12), 2, tz="Europe/Berlin") == [
        utc(2025, 10, 26, 0, 30),  # 02:30 CEST
        utc(2025, 10, 27, 1, 30),  # 02:30 CET
    ]


def test_daily_local_time_keeps_its_wall_clock_across_dst() -> None:
    """A 09:00 New York job stays at 09:00 local, so its UTC time moves by an hour at the change."""
    assert fires("cron(0 9 ? * MON-FRI *)", utc(2025, 3, 7, 15), 2, tz="America/New_York") == [
        utc(2025, 3, 10, 13, 0),  # Monday 09:00 EDT
        utc(2025, 3, 11, 13, 0),
    ]
    assert fires("cron(0 9 ? * MON-FRI *)", utc(2025, 3, 6, 15), 1, tz="America/New_York") == [utc(2025, 3, 7, 14, 0)]

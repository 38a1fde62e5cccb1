"""Schedules for ``@app.periodic``: AWS schedule expressions and their next fire times."""

from cloudq.schedules.expressions import Schedule, ScheduleKind, parse_schedule

__all__ = ["Schedule", "ScheduleKind", "parse_schedule"]

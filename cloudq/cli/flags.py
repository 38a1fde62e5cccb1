"""Argparse ``type`` functions shared by the command groups.

Why argparse types and not checks inside the commands: a bad value is then argparse's usage line and one
``error:`` line, exit 2, before any app is imported or any broker built, never a default silently taken,
a traceback, or (for nan, which passes every comparison) a hang. Each function is named after the type
argparse reports for text that is not a number at all ("invalid float value: 'x'").
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from cloudq.producer import MAX_DELAY_S  # the longest delay --delay takes: the library's own bound

__all__ = ["MAX_DELAY_S", "delay_seconds", "finite_seconds", "int_in"]



def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int in ``low..high`` (``high`` None: no upper bound)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}" if high is not None else f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def finite_seconds(text: str) -> float:
    """A float that is a number (no nan or inf): the runtimes check its range, but nan passes any comparison."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text}")
    return value


finite_seconds.__name__ = "float"


def delay_seconds(text: str) -> float:
    """A job's delay: finite, not negative, at most :data:`MAX_DELAY_S`."""
    value = float(text)
    if not math.isfinite(value) or not 0 <= value <= MAX_DELAY_S:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_DELAY_S} seconds (366 days), got {text}")
    return value


delay_seconds.__name__ = "float"

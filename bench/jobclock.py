"""What each no-op job records in a spawned consumer (a ``cloudq worker`` or the raw boto3 loop).

:func:`tick` keeps ``time.perf_counter()`` per job in memory (CLOCK_MONOTONIC on Linux, the same clock in
every process, so the parent can subtract its own spawn time) and this process's CPU time (user and system, from
``getrusage``) at the first and the last job. At the ``BENCH_CLOCK_JOBS``-th job it writes everything once, as JSON, to ``BENCH_CLOCK_PATH``:
nothing is written or logged while the queue drains. It imports only the standard library, so the raw
loop pays no more for it than cloudq does.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from typing import Any

__all__ = ["note", "tick"]

_PATH = os.environ.get("BENCH_CLOCK_PATH")
_EXPECTED = int(os.environ.get("BENCH_CLOCK_JOBS") or 0)
_FIRST_PATH = os.environ.get("BENCH_CLOCK_FIRST_PATH")  # touched at the first job (bench.profile_cli attaches then)
_lock = threading.Lock()
_stamps: list[float] = []
_cpu: list[tuple[float, float]] = []  # (user, system) CPU of the process (all threads) at the first job, then the last
_notes: dict[str, Any] = {}


def note(key: str, value: Any) -> None:
    """Something the parent should know (e.g. whether the middleware variant really installed one)."""
    _notes[key] = value


def tick() -> None:
    """Called by the no-op job, in whatever thread runs it."""
    now = time.perf_counter()
    with _lock:
        _stamps.append(now)
        count = len(_stamps)
        if count == 1:
            _cpu.append(_usage())
            if _FIRST_PATH:
                open(_FIRST_PATH, "w").close()
        if count != _EXPECTED:
            return
        _cpu.append(_usage())
    _write()


def _usage() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _write() -> None:
    if not _PATH:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    data = {
        "stamps": _stamps, "cpu_first_s": sum(_cpu[0]), "cpu_last_s": sum(_cpu[-1]),
        "sys_first_s": _cpu[0][1], "sys_last_s": _cpu[-1][1], "maxrss_kb": usage.ru_maxrss,
        "threads": threading.active_count(), "notes": _notes,
    }  # fmt: skip
    tmp = f"{_PATH}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(tmp, _PATH)

"""``python -m bench.testing_drain [--jobs 100] [--rounds 20]``: how long ``cloudq.testing.drain`` takes.

A user's test enqueues a few jobs and drains them; the issue asks for 100 no-op jobs on the memory broker
well under 100 ms. Each round enqueues ``--jobs`` jobs with ``.map`` (not timed) and times one ``drain``, for
a sync and an async no-op task, in two log set-ups:

- ``structlog default``: nothing configured, as in a user's pytest run: structlog's default console renderer
  prints every line (debug included) to stdout, which is captured here as pytest captures it;
- ``level WARNING``: ``configure_logging("json", "WARNING")``, so the per-job lines are filtered out.

The first round (imports of the consumer core, first log lines) is reported apart from the steady rounds.
No LocalStack needed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable

import cloudq
from cloudq import testing
from cloudq.logs import configure_logging

__all__ = ["main", "time_drains"]


def _app() -> tuple[cloudq.App, dict[str, cloudq.Task[[], None]]]:
    app = cloudq.App("bench", settings=cloudq.Settings(broker="memory"))

    @app.task(name="bench.noop")
    def noop() -> None:
        return None

    @app.task(name="bench.anoop")
    async def anoop() -> None:
        return None

    return app, {"sync": noop, "async": anoop}  # type: ignore[dict-item]


def time_drains(jobs: int, rounds: int, task: str, configure: Callable[[io.StringIO], None]) -> list[float]:
    """Milliseconds per drain of ``jobs`` jobs, one entry per round (a fresh app each time, so the first
    round pays for what a test run's first drain pays)."""
    app, tasks = _app()
    out = io.StringIO()
    configure(out)
    timings = []
    with contextlib.redirect_stdout(out):
        for _ in range(rounds):
            tasks[task].map([()] * jobs)
            started = time.perf_counter()
            stats = testing.drain(app)
            timings.append((time.perf_counter() - started) * 1000)
            assert stats.succeeded == jobs and not testing.enqueued(app), stats
            out.seek(0)
            out.truncate()
    return timings


def _default_logs(out: io.StringIO) -> None:
    import structlog

    structlog.reset_defaults()


def _warning_logs(out: io.StringIO) -> None:
    configure_logging("json", "WARNING", stream=out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.testing_drain", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"cloudq.testing.drain of {args.jobs} no-op jobs on the memory broker, ms per drain")
    print(f"{'task':<6} {'logs':<18} {'first':>7} {'median':>7} {'min':>7} {'max':>7}")
    for logs, configure in (("structlog default", _default_logs), ("level WARNING", _warning_logs)):
        for task in ("sync", "async"):
            first, *rest = time_drains(args.jobs, args.rounds + 1, task, configure)
            print(f"{task:<6} {logs:<18} {first:7.1f} {statistics.median(rest):7.1f} {min(rest):7.1f} {max(rest):7.1f}")


if __name__ == "__main__":
    main()

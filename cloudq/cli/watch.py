"""``cloudq status APP --watch [--interval S]``: a live table of the app's queues, until Ctrl-C.

Each refresh reads every registry queue and its dead-letter queue through the admin protocol (one
GetQueueAttributes each on SQS, as ``cloudq status`` does) and shows visible, in flight, delayed,
the oldest message's age (the local and memory brokers know it; on SQS it comes from CloudWatch's
``ApproximateAgeOfOldestMessage``, read at most once a minute: :class:`CloudWatchAges`), the DLQ's depth, and per-interval rates: how fast the backlog and the DLQ grew (negative:
shrank) since the last refresh.

On a terminal with rich installed (the ``demo`` extra) the table redraws in place; otherwise each
refresh prints a timestamped plain table, so piping it into a file or ``less`` works. Ctrl-C
(SIGINT) ends it with exit 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from cloudq.cli.tables import render_table

if TYPE_CHECKING:
    from cloudq.brokers.base import QueueStats
    from cloudq.queues import QueuePlan

__all__ = ["WATCH_HEADERS", "CloudWatchAges", "WatchRow", "sample", "watch"]

WATCH_HEADERS = ("QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST", "DLQ", "VISIBLE/S", "DLQ/S")


@dataclass(frozen=True, slots=True)
class WatchRow:
    """One queue at one refresh; the rates are per second since the previous refresh (None at the first)."""

    queue: str
    exists: bool
    visible: int
    in_flight: int
    delayed: int
    oldest_age_s: float | None
    dlq: int
    visible_per_s: float | None = None
    dlq_per_s: float | None = None

    def cells(self) -> list[str]:
        if not self.exists:
            return [self.queue, "MISSING", "", "", "", "", "", ""]
        return [
            self.queue, str(self.visible), str(self.in_flight), str(self.delayed), _age(self.oldest_age_s), str(self.dlq),
            _rate(self.visible_per_s), _rate(self.dlq_per_s),
        ]  # fmt: skip


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def _rate(per_s: float | None) -> str:
    return "-" if per_s is None else f"{per_s:+.1f}"


def sample(
    plans: Sequence[QueuePlan], stats_of: Callable[[str], QueueStats], previous: dict[str, WatchRow], elapsed_s: float,
    ages: Mapping[str, float] | None = None,
) -> list[WatchRow]:
    """The rows of one refresh; rates against ``previous`` (queue -> its row), ``elapsed_s`` apart; ``ages``
    (physical queue -> seconds) stands in for an oldest age the broker does not report. Pure."""
    rows = []
    for plan in plans:
        s, dlq = stats_of(plan.physical), stats_of(plan.dead_letter_queue)
        depth = dlq.visible + dlq.in_flight + dlq.delayed
        before = previous.get(plan.queue)
        visible_rate = dlq_rate = None
        if before is not None and elapsed_s > 0:
            visible_rate = (s.visible - before.visible) / elapsed_s
            dlq_rate = (depth - before.dlq) / elapsed_s
        oldest = s.oldest_age_s if s.oldest_age_s is not None else (ages or {}).get(plan.physical)
        rows.append(WatchRow(plan.queue, s.exists, s.visible, s.in_flight, s.delayed, oldest, depth, visible_rate, dlq_rate))
    return rows


class CloudWatchAges:
    """SQS reports a queue's oldest message age only to CloudWatch (``AWS/SQS``
    ``ApproximateAgeOfOldestMessage``, one-minute resolution): one GetMetricData for every queue, at most
    once a minute (``every_s``), the latest Maximum of the last 10 minutes. A failure (no permission, no
    CloudWatch) is one line on stderr, after which the column shows ``-``."""

    def __init__(self, settings: Any, *, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._every_s = every_s
        self._clock = clock
        self._client: Any = None
        self._fetched_at: float | None = None
        self._ages: dict[str, float] = {}
        self.failed = False

    def __call__(self, queues: Sequence[str]) -> dict[str, float]:
        now = self._clock()
        if self.failed or (self._fetched_at is not None and now - self._fetched_at < self._every_s):
            return self._ages
        self._fetched_at = now
        try:
            self._ages = self._fetch(list(queues))
        except Exception as exc:  # noqa: BLE001 - the age is a nicety; the counts still show
            self.failed = True
            print(f"cloudq: oldest message age unavailable: CloudWatch GetMetricData failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._ages = {}
        return self._ages

    def _fetch(self, queues: list[str]) -> dict[str, float]:
        from datetime import timedelta

        if self._client is None:
            from cloudq.aws.clients import client

            self._client = client("cloudwatch", self._settings)
        end = datetime.now(timezone.utc) + timedelta(minutes=1)  # the current minute's datapoint included
        queries = [
            {
                "Id": f"q{i}", "ReturnData": True,
                "MetricStat": {"Period": 60, "Stat": "Maximum", "Metric": {
                    "Namespace": "AWS/SQS", "MetricName": "ApproximateAgeOfOldestMessage", "Dimensions": [{"Name": "QueueName", "Value": name}],
                }},
            }
            for i, name in enumerate(queues)
        ]  # fmt: skip
        found: dict[str, float] = {}
        for start in range(0, len(queries), 500):  # GetMetricData takes 500 queries a call
            response = self._client.get_metric_data(
                MetricDataQueries=queries[start : start + 500], StartTime=end - timedelta(minutes=11), EndTime=end, ScanBy="TimestampDescending"
            )
            for result in response.get("MetricDataResults", []):
                if result.get("Values"):
                    found[queues[int(result["Id"][1:])]] = float(result["Values"][0])
        return found

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def watch(app: Any, interval_s: float, *, out: TextIO | None = None, stats_of: Callable[[str], QueueStats] | None = None) -> int:
    """Refresh every ``interval_s`` until Ctrl-C; returns the exit code (0)."""
    from cloudq.brokers.base import admin_of
    from cloudq.queues import plan_queues

    out = out or sys.stdout
    plans = plan_queues(app)
    read = stats_of or admin_of(app.broker).stats
    title = f"cloudq status {app.name}: every {interval_s:g}s, Ctrl-C to stop"
    show = _rich_view(out, title) or _plain_view(out, title)
    ages = CloudWatchAges(app.settings) if getattr(app.settings, "broker", "") == "sqs" else None
    physical = [plan.physical for plan in plans]
    previous: dict[str, WatchRow] = {}
    last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            rows = sample(plans, read, previous, now - last, ages(physical) if ages is not None else None)
            previous, last = {r.queue: r for r in rows}, now
            show(rows)
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0
    finally:
        show(None)
        if ages is not None:
            ages.close()
        app.close()


def _plain_view(out: TextIO, title: str) -> Callable[[list[WatchRow] | None], None]:
    def show(rows: list[WatchRow] | None) -> None:
        if rows is None:
            return
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S UTC")
        out.write(f"{title} ({stamp})\n{render_table(WATCH_HEADERS, [r.cells() for r in rows])}\n\n")
        out.flush()

    return show


def _rich_view(out: TextIO, title: str) -> Callable[[list[WatchRow] | None], None] | None:
    """A table redrawn in place, on a terminal with rich; None otherwise."""
    if not out.isatty():
        return None
    try:
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table
    except ImportError:
        return None
    live = Live(console=Console(file=out), auto_refresh=False)
    live.start()

    def show(rows: list[WatchRow] | None) -> None:
        if rows is None:
            live.stop()
            return
        table = Table(*WATCH_HEADERS, title=title, caption=datetime.now(timezone.utc).strftime("%H:%M:%S UTC"))
        for row in rows:
            table.add_row(*row.cells())
        live.update(table, refresh=True)

    return show

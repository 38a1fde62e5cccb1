"""``cloudq status APP --watch [--interval S]``: a live table of the app's queues, until Ctrl-C.

Each refresh reads every registry queue and its dead-letter queue through the admin protocol (one
GetQueueAttributes each on SQS, as ``cloudq status`` does) and shows visible, in flight, delayed,
the oldest message's age (where the broker knows it: local and memory; SQS reports it to CloudWatch
only), the DLQ's depth, and per-interval rates: how fast the backlog and the DLQ grew (negative:
shrank) since the last refresh.

On a terminal with rich installed (the ``demo`` extra) the table redraws in place; otherwise each
refresh prints a timestamped plain table, so piping it into a file or ``less`` works. Ctrl-C
(SIGINT) ends it with exit 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from cloudq.cli.tables import render_table

if TYPE_CHECKING:
    from cloudq.brokers.base import QueueStats
    from cloudq.queues import QueuePlan

__all__ = ["WATCH_HEADERS", "WatchRow", "sample", "watch"]

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


def sample(plans: Sequence[QueuePlan], stats_of: Callable[[str], QueueStats], previous: dict[str, WatchRow], elapsed_s: float) -> list[WatchRow]:
    """The rows of one refresh; rates against ``previous`` (queue -> its row), ``elapsed_s`` apart. Pure."""
    rows = []
    for plan in plans:
        s, dlq = stats_of(plan.physical), stats_of(plan.dead_letter_queue)
        depth = dlq.visible + dlq.in_flight + dlq.delayed
        before = previous.get(plan.queue)
        visible_rate = dlq_rate = None
        if before is not None and elapsed_s > 0:
            visible_rate = (s.visible - before.visible) / elapsed_s
            dlq_rate = (depth - before.dlq) / elapsed_s
        rows.append(WatchRow(plan.queue, s.exists, s.visible, s.in_flight, s.delayed, s.oldest_age_s, depth, visible_rate, dlq_rate))
    return rows


def watch(app: Any, interval_s: float, *, out: TextIO | None = None, stats_of: Callable[[str], QueueStats] | None = None) -> int:
    """Refresh every ``interval_s`` until Ctrl-C; returns the exit code (0)."""
    from cloudq.brokers.base import admin_of
    from cloudq.queues import plan_queues

    out = out or sys.stdout
    plans = plan_queues(app)
    read = stats_of or admin_of(app.broker).stats
    title = f"cloudq status {app.name}: every {interval_s:g}s, Ctrl-C to stop"
    show = _rich_view(out, title) or _plain_view(out, title)
    previous: dict[str, WatchRow] = {}
    last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            rows = sample(plans, read, previous, now - last)
            previous, last = {r.queue: r for r in rows}, now
            show(rows)
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0
    finally:
        show(None)
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

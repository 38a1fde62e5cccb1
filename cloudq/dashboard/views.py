"""What the dashboard's pages show, read through the admin protocol: data, no HTML, no Starlette.

Apart from the web layer (:mod:`cloudq.dashboard.web`) so that a benchmark or a test can call what a page
reads without a server. Every broker call goes through :func:`cloudq.brokers.base.admin_of` and
:mod:`cloudq.admin`, the code ``cloudq status`` and ``cloudq dlq peek`` use, so the local broker and SQS
take the same path. The admin protocol is synchronous (boto3 on SQS, SQLite on the local broker): a page
runs its calls in the dashboard's own thread pool, concurrently (the queues page: one GetQueueAttributes
per queue and per dead-letter queue, all at once, at most ``pool`` in flight).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

from cloudq.admin import dead_letter_record, stats_reader
from cloudq.brokers.base import AdminBroker, Delivery, QueueStats
from cloudq.queues import QueuePlan, plan_queues

if TYPE_CHECKING:
    from cloudq.app import App

__all__ = [
    "BodyResolver", "Calls", "DeadLetter", "QueueRow", "ScheduleRow", "dead_letter", "queue_rows", "schedule_rows",
]  # fmt: skip

T = TypeVar("T")

BodyResolver = Callable[[str], str]
"""A dead letter's body as stored (maybe a pointer to the real payload, e.g. in S3) -> the body to show.

The hook for payloads kept outside the message: ``create_app(app, resolve_body=...)``. It runs in the
dashboard's thread pool; whatever it raises is shown beside the stored body, never as an error page."""

PREVIEW_CHARS = 2_000  # of a dead letter's arguments on the list page
PAGE_CHARS = 65_536  # of a dead letter's body on its own page; the raw view has all of it


class Calls:
    """The dashboard's thread pool for the synchronous admin calls, sized like the SQS client's pool
    (10 connections by default), so concurrent calls never queue for a connection inside botocore."""

    def __init__(self, pool: int = 10) -> None:
        self._executor = ThreadPoolExecutor(max_workers=pool, thread_name_prefix="cloudq-dashboard")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- queues ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueRow:
    """One logical queue of the app: its counts and its dead-letter queue's; ``backlog_rate`` and
    ``dlq_rate`` are their changes per second since the previous refresh (None on the first)."""

    plan: QueuePlan
    stats: QueueStats
    dlq: QueueStats
    backlog_rate: float | None = None
    dlq_rate: float | None = None

    @property
    def backlog(self) -> int:
        return self.stats.visible + self.stats.in_flight + self.stats.delayed

    @property
    def queue(self) -> str:
        return self.plan.queue

    @property
    def dlq_depth(self) -> int:
        return self.dlq.visible + self.dlq.in_flight + self.dlq.delayed


class Rates:
    """Each queue's backlog and dead letters at the previous refresh, for per-second rates: from the
    counts the page reads anyway, so rates cost no call of their own (as ``cloudq status --watch``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, tuple[float, int, int]] = {}

    def rows(self, rows: list[QueueRow]) -> list[QueueRow]:
        now = self._clock()
        out = []
        for row in rows:
            before = self._last.get(row.plan.physical)
            self._last[row.plan.physical] = (now, row.backlog, row.dlq_depth)
            if before is None or now <= before[0]:
                out.append(row)
                continue
            elapsed = now - before[0]
            out.append(replace(row, backlog_rate=(row.backlog - before[1]) / elapsed, dlq_rate=(row.dlq_depth - before[2]) / elapsed))
        return out


async def queue_rows(app: App, admin: AdminBroker, calls: Calls, rates: Rates | None = None) -> list[QueueRow]:
    """Every registry queue with its DLQ: one stats call per physical queue, all of them concurrently."""
    plans = plan_queues(app)
    read = stats_reader(admin)
    names = [name for plan in plans for name in (plan.physical, plan.dead_letter_queue)]
    stats = await asyncio.gather(*(calls.run(read, name) for name in names))
    by_name = dict(zip(names, stats))
    rows = [QueueRow(plan, by_name[plan.physical], by_name[plan.dead_letter_queue]) for plan in plans]
    return rates.rows(rows) if rates is not None else rows


# -- dead letters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as the pages show it: :func:`cloudq.admin.dead_letter_record` plus its shown text.

    ``text`` is the arguments as pretty JSON for an envelope, else the body (pretty if it is JSON, as it
    is otherwise); ``size`` is its full length, so a page can say what it cut and link to the rest."""

    record: dict[str, Any]
    text: str
    size: int
    resolve_error: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    def preview(self, limit: int = PREVIEW_CHARS) -> str:
        return self.text if self.size <= limit else self.text[:limit]

    def truncated(self, limit: int = PREVIEW_CHARS) -> bool:
        return self.size > limit


def dead_letter(delivery: Delivery, resolve_body: BodyResolver | None = None) -> DeadLetter:
    """Never raises for what a producer put in the body: not JSON, not an envelope, megabytes, markup."""
    resolve_error = None
    if resolve_body is not None:
        try:
            delivery = Delivery(**{**_fields(delivery), "body": resolve_body(delivery.body)})
        except Exception as exc:  # noqa: BLE001 - the stored body is still worth showing
            resolve_error = f"{type(exc).__name__}: {exc}"
    record = dead_letter_record(delivery)
    text = _shown_text(record)
    return DeadLetter(record, text, len(text), resolve_error, dict(delivery.attributes))


def _fields(delivery: Delivery) -> dict[str, Any]:
    return {name: getattr(delivery, name) for name in Delivery.__dataclass_fields__}


def _shown_text(record: dict[str, Any]) -> str:
    if record["task"] is not None:
        shown: Any = record["args"] if not record["kwargs"] else {"args": record["args"], "kwargs": record["kwargs"]}
        return json.dumps(shown, indent=2, ensure_ascii=False, default=str)
    body: str = record["body"]
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return body


# -- schedules ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleRow:
    """A periodic task: expression, time zone, next fire times (in that zone), deployed state and sync."""

    task: str
    expression: str
    timezone: str
    resource: str
    state: str
    next_fires: tuple[str, ...]
    sync: str  # "in sync", "not deployed", "out of sync: ...", "orphaned", or a local broker's word
    in_sync: bool | None  # None: nothing to be in sync with (local and memory brokers)


def schedule_rows(app: App, engine: str = "rules") -> tuple[list[ScheduleRow], list[str]]:
    """The rows, and notes for the page (what is out of sync beyond the rows, or why it could not be read).

    On SQS the state comes from :func:`cloudq.schedules.deploy.schedule_statuses` and the sync verdict from
    the plan ``cloudq schedules sync --dry-run`` prints (:func:`cloudq.schedules.deploy.plan`), so the page
    says "in sync" exactly when a sync would change nothing for that task."""
    if not app.periodic_tasks:
        return [], []
    if app.settings.broker == "local":
        from cloudq.schedules.local import local_statuses

        return [_row(s, "local: workers fire it", None) for s in local_statuses(app)], []
    if app.settings.broker != "sqs":
        return [_row(s, "not deployed (the memory broker has no schedules)", None) for s in _undeployed(app)], []
    return _aws_rows(app, engine)


def _aws_rows(app: App, engine: str) -> tuple[list[ScheduleRow], list[str]]:
    from cloudq.errors import CloudQError
    from cloudq.schedules.deploy import AwsClients, plan, schedule_statuses

    clients = AwsClients.from_settings(app.settings)
    try:
        statuses = schedule_statuses(app, clients, engine=engine)  # type: ignore[arg-type]
        try:
            changes, notes = plan(app, clients, engine=engine), []  # type: ignore[arg-type]
        except CloudQError as exc:
            changes, notes = [], [f"cannot compare with the registry: {exc}"]
    finally:
        clients.close()
    by_name = {c.name: c for c in changes if c.kind in ("rule", "schedule")}
    notes += [f"{c.kind} {c.name}: {c.action} ({c.detail or 'run cloudq schedules sync'})" for c in changes if c.kind not in ("rule", "schedule") and c.is_change]
    rows = []
    for status in statuses:
        change = by_name.get(status.resource)
        verdict = _verdict(change.action, change.detail) if change else ("cannot compare: see above", None)
        rows.append(_row(status, *verdict))
    return rows, notes


def _verdict(action: str, detail: str) -> tuple[str, bool | None]:
    if action == "unchanged":
        return "in sync", True
    if action == "create":
        return "not deployed: run cloudq schedules sync", False
    if action == "update":
        return f"out of sync: {detail}", False
    if action in ("orphaned", "delete"):
        return "orphaned: no longer in the registry (cloudq schedules sync --prune deletes it)", False
    return "unknown", None


def _undeployed(app: App) -> Sequence[Any]:
    from cloudq.schedules.deploy import ScheduleStatus
    from cloudq.schedules.plan import resource_name

    now = datetime.now(timezone.utc)
    return [
        ScheduleStatus(s.name, s.schedule.expression, s.tz, resource_name(app.settings.queue_prefix, s.name), "-", None,
                       tuple(s.schedule.next_fire_times(now, 3, s.tz)))
        for s in sorted(app.periodic_tasks.values(), key=lambda s: s.name)
    ]  # fmt: skip


def _row(status: Any, sync: str, in_sync: bool | None) -> ScheduleRow:
    zone = timezone.utc if status.timezone.upper() in ("UTC", "-") else ZoneInfo(status.timezone)
    fires = tuple(f.astimezone(zone).isoformat(timespec="minutes") for f in status.next_fires)
    return ScheduleRow(status.task, status.expression, status.timezone, status.resource, status.state, fires, sync, in_sync)

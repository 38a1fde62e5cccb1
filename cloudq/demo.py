"""``cloudq demo``: the example shop app, end to end on the embedded local broker.

It enqueues N jobs with ``.map`` (most succeed at once, a few fail once and succeed on
retry, one is rejected to the dead-letter queue), drains them with the same in-process
:class:`~cloudq.worker.Worker` that ``cloudq worker`` runs, shows a live progress bar on
a terminal, and ends with a summary: counts, throughput, the dead letter read back from
its DLQ, and how to run the same app on SQS.

The broker file is ``.cloudq/demo.db`` in the working directory, deleted at the start of
each run, so every run starts empty and never touches the default ``.cloudq/broker.db``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cloudq.app import App
from cloudq.brokers.base import Delivery
from cloudq.brokers.local import LocalBroker
from cloudq.envelope import Envelope
from cloudq.errors import ConfigurationError, EnvelopeError
from cloudq.settings import Settings
from cloudq.worker import Worker, WorkerStats

__all__ = ["DEMO_DB", "run_demo"]

DEMO_DB = ".cloudq/demo.db"
APP_SPEC = "cloudq.examples.shop:app"
SQS_ENV = "CLOUDQ_BROKER=sqs CLOUDQ_ENDPOINT_URL=http://127.0.0.1:4566"
_STALL_S = 30.0  # no job settled for this long: something is wrong, stop and say so
_TICK_S = 0.05
# Outcome lines the summary reports anyway; other warnings and errors are still shown.
_OUTCOME_EVENTS = frozenset({"job.succeeded", "job.retrying", "job.dead_lettered", "job.failed", "job.rescheduled"})


@dataclass(slots=True)
class DemoRun:
    """What one demo run did, for the summary."""

    jobs: int
    concurrency: int
    enqueue_s: float = 0.0
    elapsed_s: float = 0.0
    settled: bool = False
    stats: WorkerStats = field(default_factory=WorkerStats)
    dead_letters: list[tuple[str, Delivery]] = field(default_factory=list)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.elapsed_s if self.elapsed_s > 0 else 0.0


def demo_settings() -> Settings:
    """Local broker on the demo's own file; short retries and polls so the demo finishes fast."""
    return Settings(
        broker="local", local_path=DEMO_DB, concurrency=10, retry_backoff_s=0.5, wait_time_s=1, visibility_timeout_s=30
    )


def run_demo(n: int, *, console: Console | None = None) -> int:
    """Run the demo with ``n`` jobs; 0 when every job settled, 1 when the run stalled."""
    if n < 3:
        raise ConfigurationError("the demo needs at least 3 jobs (-n 3): one to retry, one to dead-letter, one to succeed")
    console = console or Console()
    settings = demo_settings()
    run = DemoRun(jobs=n, concurrency=settings.concurrency)
    with _example_app_on(settings) as app, _outcome_logs_dropped(console):
        _delete_database(Path(settings.local_path))  # before the app's broker first opens it
        console.print(f"cloudq demo: [bold]{APP_SPEC}[/] on the local broker ([cyan]{settings.local_path}[/])")
        started = time.perf_counter()
        _enqueue(n)
        run.enqueue_s = time.perf_counter() - started
        asyncio.run(_drain(app, run, console))
        run.dead_letters = _dead_letters(app)
    console.print(_summary(run))
    console.print(_next_steps(), soft_wrap=True, highlight=False)
    if not run.settled:
        console.print(f"[red]stopped: no job settled for {_STALL_S:g}s[/]")
    return 0 if run.settled else 1


def _delete_database(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


@contextmanager
def _example_app_on(settings: Settings) -> Iterator[App]:
    """The example app pointed at the demo's settings and a fresh broker, restored afterwards.

    The demo owns its process; restoring keeps an in-process caller (a test) unaffected.
    """
    from cloudq.examples.shop import app

    saved = app.settings
    app.close()
    app.settings, app._broker = settings, None  # App has no public broker swap; a new broker opens the fresh file
    try:
        yield app
    finally:
        app.close()
        app.settings, app._broker = saved, None


def _enqueue(n: int) -> None:
    """N jobs: about 1% retried once, exactly one dead-lettered, the rest split over two tasks.

    The retried ones go first, so their one-second retry delay overlaps the drain. Product
    ids are fresh per run because the flaky task remembers first attempts per process.
    """
    from cloudq.examples.shop import charge, notify_legacy_crm, send_welcome_email, update_search_index

    flaky = max(1, n // 100)
    emails = (n - flaky - 1) // 2
    charges = n - flaky - 1 - emails
    run_id = uuid.uuid4().hex[:8]
    update_search_index.map(f"sku-{run_id}-{i}" for i in range(flaky))
    notify_legacy_crm.delay("customer-7")
    send_welcome_email.map(f"user{i}@example.com" for i in range(emails))
    charge.map((f"order-{i}", 100 + i) for i in range(charges))


async def _drain(app: App, run: DemoRun, console: Console) -> None:
    """Run a worker on every queue until all jobs succeeded or dead-lettered, then stop it."""
    worker = Worker(app)
    stats = worker.stats
    with _progress(console) as progress:
        bar = progress.add_task("draining", total=run.jobs)
        started = last_change = time.perf_counter()
        working = asyncio.create_task(worker.run())
        settled = 0
        while not working.done():
            await asyncio.wait({working}, timeout=_TICK_S)
            now = time.perf_counter()
            if stats.succeeded + stats.dead_lettered != settled:
                settled, last_change = stats.succeeded + stats.dead_lettered, now
                progress.update(bar, completed=settled)
            if settled >= run.jobs or now - last_change > _STALL_S:
                run.elapsed_s, run.settled = now - started, settled >= run.jobs
                worker.stop("demo finished" if run.settled else "demo stalled")
                break
        run.stats = await working  # re-raises the worker's fatal error, if any
    await app.aclose()


def _progress(console: Console) -> Progress:
    """A live bar of settled jobs; off when stdout is not a terminal (logs, CI, pipes)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


class _RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        elapsed = task.elapsed or 0
        return Text(f"{task.completed / elapsed:,.0f} jobs/s" if elapsed > 0 else "", style="progress.data.speed")


def _dead_letters(app: App) -> list[tuple[str, Delivery]]:
    """Read every DLQ of the app's queues without consuming (the local broker's peek)."""
    broker = app.broker
    assert isinstance(broker, LocalBroker)
    found = []
    for queue in app.queues():
        dlq = app.settings.dlq_name(queue)
        found += [(dlq, d) for d in broker.peek(dlq)]
    return found


def _summary(run: DemoRun) -> Table:
    table = Table(title="cloudq demo summary", box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    stats = run.stats
    table.add_row("processed", f"{stats.succeeded + stats.dead_lettered:,} of {run.jobs:,} jobs ({stats.succeeded:,} succeeded)")
    table.add_row("retried", f"{stats.retried:,} (failed once, succeeded on a retry 1 s later)")
    table.add_row("dead-lettered", f"{stats.dead_lettered:,}")
    table.add_row("enqueued", f"in {run.enqueue_s:.2f} s with .map")
    table.add_row("elapsed", f"{run.elapsed_s:.2f} s to drain (one worker, concurrency {run.concurrency})")
    table.add_row("jobs/s", f"{run.jobs_per_s:,.0f}")
    for dlq, delivery in run.dead_letters:
        table.add_row("dead letter", _describe_dead_letter(dlq, delivery))
    return table


def _next_steps() -> Text:
    """The same app on SQS: two environment variables (LocalStack takes any credentials)."""
    return Text.assemble(
        "The same app on SQS (LocalStack on :4566) takes two environment variables:\n",
        (f"  export {SQS_ENV}\n", "bold"),
        f"  cloudq queues ensure {APP_SPEC}   # once: the queues and their DLQs\n",
        f"  cloudq worker {APP_SPEC}",
    )


def _describe_dead_letter(dlq: str, delivery: Delivery) -> str:
    try:
        task = Envelope.decode(delivery.body).task
    except EnvelopeError:
        task = "?"
    reason = delivery.attributes.get("cloudq-reason", "?")
    error = delivery.attributes.get("cloudq-error", "")
    return f"queue {dlq}: task {task}, {reason}: {error}"


# -- logging during the demo ------------------------------------------------------------------
class _ConsoleLogger:
    """structlog output through the rich console, so a warning prints above the live bar."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def msg(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False, soft_wrap=True)

    log = debug = info = warning = warn = error = err = critical = exception = fatal = failure = msg


def _drop_outcomes(_: Any, __: str, event_dict: Any) -> Any:
    if event_dict.get("event") in _OUTCOME_EVENTS:
        raise structlog.DropEvent
    return event_dict


@contextmanager
def _outcome_logs_dropped(console: Console) -> Iterator[None]:
    """Warnings and errors only, minus the per-job outcome lines; the previous config is restored."""
    previous = structlog.get_config() if structlog.is_configured() else None
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _drop_outcomes,
            structlog.dev.ConsoleRenderer(colors=console.is_terminal, exception_formatter=structlog.dev.plain_traceback),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=lambda *_: _ConsoleLogger(console),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        if previous is None:
            structlog.reset_defaults()
        else:
            structlog.configure(**previous)

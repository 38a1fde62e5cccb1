"""``cloudq demo``: the example shop app, end to end on the embedded local broker.

It enqueues N jobs with ``.map`` (most succeed at once, a few fail once and succeed on
retry, one is rejected to the dead-letter queue, one is cancelled before it runs), drains them with the same in-process
:class:`~cloudq.runtimes.worker.Worker` that ``cloudq worker`` runs, shows a live progress bar on
a terminal, and ends with a summary: counts, throughput, the dead letter read back from
its DLQ, a few jobs' state and results read back from the job store (the local broker's file), and
how to run the same app on SQS.

The bar and the summary table are drawn with rich, the ``cloudq[demo]`` extra, which is no
dependency of cloudq itself: structlog imports rich whenever it is installed, and that would
cost every worker and Lambda cold start about 100 ms. Without rich the demo prints the same
report as plain text, with a one-line progress counter on a terminal.

The broker file is ``.cloudq/demo.db`` in the working directory, deleted at the start of
each run, so every run starts empty and never touches the default ``.cloudq/broker.db``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import structlog

from cloudq.app import App
from cloudq.brokers.base import Delivery, admin_of
from cloudq.envelope import Envelope
from cloudq.errors import CloudQError, ConfigurationError, EnvelopeError
from cloudq.jobs.ref import JobRef
from cloudq.settings import Settings
from cloudq.runtimes.worker import Worker, WorkerStats

if TYPE_CHECKING:
    from rich.console import Console

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
    shown: list[JobRef] = field(default_factory=list)
    """Jobs whose stored state the summary reads back: a charge, a retried one, the dead letter, the cancelled one."""

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.elapsed_s if self.elapsed_s > 0 else 0.0


def demo_settings() -> Settings:
    """Local broker on the demo's own file; short retries and polls so the demo finishes fast."""
    return Settings(
        broker="local", job_store="local", local_path=DEMO_DB, concurrency=10, retry_backoff_s=0.5, wait_time_s=1, visibility_timeout_s=30
    )


def run_demo(n: int, *, console: Console | None = None) -> int:
    """Run the demo with ``n`` jobs; 0 when every job settled, 1 when the run stalled.

    Output goes to ``console``, else to a rich console on stdout, else (rich not installed) to stdout as plain text.
    """
    if n < 3:
        raise ConfigurationError("the demo needs at least 3 jobs (-n 3): one to retry, one to dead-letter, one to succeed")
    out = _output(console)
    settings = demo_settings()
    run = DemoRun(jobs=n, concurrency=settings.concurrency)
    with _example_app_on(settings) as app, _outcome_logs_dropped(out):
        _delete_database(Path(settings.local_path))  # before the app's broker first opens it
        out.title(APP_SPEC, settings.local_path)
        started = time.perf_counter()
        run.shown = _enqueue(n)
        run.enqueue_s = time.perf_counter() - started
        asyncio.run(_drain(app, run, out))
        run.dead_letters = _dead_letters(app)
        job_rows = _job_rows(run.shown)
    out.summary("cloudq demo summary", _summary_rows(run) + job_rows)
    out.next_steps(_next_steps())
    if not run.settled:
        out.error(f"stopped: no job settled for {_STALL_S:g}s")
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
    app.settings = settings
    app.use_broker(None)  # a new broker, built on first use, opens the fresh file
    try:
        yield app
    finally:
        app.close()
        app.settings = saved
        app.use_broker(None)


def _enqueue(n: int) -> list[JobRef]:
    """N jobs: about 1% retried once, exactly one dead-lettered, one cancelled, the rest split over two
    tasks; returns the refs of the jobs the summary reads back.

    The retried ones go first, so their one-second retry delay overlaps the drain. Product
    ids are fresh per run because the flaky task remembers first attempts per process.
    """
    from cloudq.examples.shop import charge, notify_legacy_crm, send_welcome_email, update_search_index

    flaky = max(1, n // 100)
    emails = (n - flaky - 2) // 2
    charges = n - flaky - 2 - emails
    run_id = uuid.uuid4().hex[:8]
    retried = update_search_index.map(f"sku-{run_id}-{i}" for i in range(flaky))
    rejected = notify_legacy_crm.delay("customer-7")
    cancelled = send_welcome_email.delay("changed-their-mind@example.com")
    cancelled.cancel()  # before any worker saw it: it is acked without running
    send_welcome_email.map(f"user{i}@example.com" for i in range(emails))
    charged = charge.map((f"order-{i}", 100 + i) for i in range(charges))
    return [*charged[:2], retried[0], rejected, cancelled]


async def _drain(app: App, run: DemoRun, out: _Output) -> None:
    """Run a worker on every queue until all jobs succeeded or dead-lettered, then stop it."""
    worker = Worker(app, fire_schedules=False)  # the demo counts exactly N jobs: no hourly firing mid-run
    stats = worker.stats
    with out.progress(run.jobs) as show_settled:
        started = last_change = time.perf_counter()
        working = asyncio.create_task(worker.run())
        settled = 0
        while not working.done():
            await asyncio.wait({working}, timeout=_TICK_S)
            now = time.perf_counter()
            if stats.succeeded + stats.dead_lettered + stats.cancelled != settled:
                settled, last_change = stats.succeeded + stats.dead_lettered + stats.cancelled, now
                show_settled(settled)
            if settled >= run.jobs or now - last_change > _STALL_S:
                run.elapsed_s, run.settled = now - started, settled >= run.jobs
                worker.stop("demo finished" if run.settled else "demo stalled")
                break
        run.stats = await working  # re-raises the worker's fatal error, if any
    await app.aclose()


def _dead_letters(app: App) -> list[tuple[str, Delivery]]:
    """Read every DLQ of the app's queues without consuming (the admin protocol's peek)."""
    broker = admin_of(app.broker)
    found = []
    for queue in app.queues():
        dlq = app.settings.dlq_name(queue)
        found += [(dlq, d) for d in broker.peek(dlq)]
    return found


def _summary_rows(run: DemoRun) -> list[tuple[str, str]]:
    stats = run.stats
    rows = [
        ("processed", f"{stats.succeeded + stats.dead_lettered + stats.cancelled:,} of {run.jobs:,} jobs ({stats.succeeded:,} succeeded)"),
        ("retried", f"{stats.retried:,} (failed once, succeeded on a retry 1 s later)"),
        ("dead-lettered", f"{stats.dead_lettered:,}"),
        ("cancelled", f"{stats.cancelled:,} (cancelled before it ran: acked, never run)"),
        ("enqueued", f"in {run.enqueue_s:.2f} s with .map"),
        ("elapsed", f"{run.elapsed_s:.2f} s to drain (one worker, concurrency {run.concurrency})"),
        ("jobs/s", f"{run.jobs_per_s:,.0f}"),
    ]
    return rows + [("dead letter", _describe_dead_letter(dlq, delivery)) for dlq, delivery in run.dead_letters]


def _job_rows(refs: list[JobRef]) -> list[tuple[str, str]]:
    """A few jobs as the job store recorded them: ``cloudq job APP ID`` shows the same."""
    rows = []
    for ref in refs:
        try:
            state = ref.status()
        except CloudQError as exc:  # the store is only shown here; a failure to read it is not the demo's
            rows.append(("job", f"{ref.id[:8]} {ref.task}: {exc}"))
            continue
        if state.status == "succeeded":
            detail = f"result {json.dumps(state.result)}"
        elif state.error is not None:
            detail = f"{state.error.reason or 'error'}: {state.error.message}"
        else:
            detail = ""
        attempts = f", {state.attempts} attempts" if state.attempts > 1 else ""
        rows.append(("job", f"{ref.id[:8]} {state.task} {state.status}{attempts} {detail}".rstrip()))
    return rows


def _next_steps() -> list[tuple[str, bool]]:
    """The same app on SQS: two environment variables (LocalStack takes any credentials). Lines, and whether bold."""
    return [
        ("The same app on SQS (LocalStack on :4566) takes two environment variables:", False),
        (f"  export {SQS_ENV}", True),
        (f"  cloudq queues ensure {APP_SPEC}   # once: the queues and their DLQs", False),
        (f"  cloudq worker {APP_SPEC}", False),
    ]


def _describe_dead_letter(dlq: str, delivery: Delivery) -> str:
    try:
        task = Envelope.decode(delivery.body).task
    except EnvelopeError:
        task = "?"
    reason = delivery.attributes.get("cloudq-reason", "?")
    error = delivery.attributes.get("cloudq-error", "")
    return f"queue {dlq}: task {task}, {reason}: {error}"


# -- output: rich when installed, plain text otherwise ------------------------------------------
class _Output(Protocol):
    is_terminal: bool

    def title(self, app_spec: str, path: str) -> None: ...
    def progress(self, total: int) -> AbstractContextManager[Callable[[int], None]]: ...
    def summary(self, title: str, rows: list[tuple[str, str]]) -> None: ...
    def next_steps(self, lines: list[tuple[str, bool]]) -> None: ...
    def error(self, text: str) -> None: ...
    def log(self, message: str) -> None: ...


def _output(console: Console | None) -> _Output:
    if console is not None:
        return _RichOutput(console)
    try:
        from rich.console import Console
    except ImportError:
        return _PlainOutput(sys.stdout)
    return _RichOutput(Console())


class _RichOutput:
    """A live bar and a summary table on a rich console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.is_terminal = console.is_terminal

    def title(self, app_spec: str, path: str) -> None:
        self.console.print(f"cloudq demo: [bold]{app_spec}[/] on the local broker ([cyan]{path}[/])")

    @contextmanager
    def progress(self, total: int) -> Iterator[Callable[[int], None]]:
        with _rich_progress(self.console) as progress:
            bar = progress.add_task("draining", total=total)
            yield lambda completed: progress.update(bar, completed=completed)

    def summary(self, title: str, rows: list[tuple[str, str]]) -> None:
        from rich import box
        from rich.table import Table

        table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for label, value in rows:
            table.add_row(label, value)
        self.console.print(table)

    def next_steps(self, lines: list[tuple[str, bool]]) -> None:
        from rich.text import Text

        last = len(lines) - 1
        parts = [(text + ("\n" if i < last else ""), "bold" if bold else "") for i, (text, bold) in enumerate(lines)]
        self.console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)

    def error(self, text: str) -> None:
        self.console.print(text, style="red", markup=False, highlight=False)

    def log(self, message: str) -> None:
        """structlog output through the console, so a warning prints above the live bar."""
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)


def _rich_progress(console: Console) -> Any:
    """A live bar of settled jobs; off when stdout is not a terminal (logs, CI, pipes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
    from rich.progress import TimeElapsedColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            elapsed = task.elapsed or 0
            return Text(f"{task.completed / elapsed:,.0f} jobs/s" if elapsed > 0 else "", style="progress.data.speed")

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


class _PlainOutput:
    """The same report as plain text (rich not installed); on a terminal, one counter line rewritten in place."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.is_terminal = stream.isatty()
        self._counter = ""  # the counter line on screen, if any

    def _line(self, text: str) -> None:
        if self._counter:  # end the counter's line; its next update draws it again below
            self._stream.write("\n")
            self._counter = ""
        self._stream.write(text + "\n")
        self._stream.flush()

    def title(self, app_spec: str, path: str) -> None:
        self._line(f"cloudq demo: {app_spec} on the local broker ({path})")
        if self.is_terminal:
            self._line("(pip install 'cloudq[demo]' for a live progress bar)")

    @contextmanager
    def progress(self, total: int) -> Iterator[Callable[[int], None]]:
        started = time.perf_counter()

        def show(completed: int) -> None:
            if not self.is_terminal:
                return
            elapsed = time.perf_counter() - started
            rate = f"{completed / elapsed:,.0f} jobs/s" if elapsed > 0 else ""
            counter = f"draining {completed:,}/{total:,} jobs  {rate}  {elapsed:.1f} s"
            self._stream.write("\r" + counter.ljust(len(self._counter)))
            self._stream.flush()
            self._counter = counter

        try:
            yield show
        finally:
            if self._counter:
                self._stream.write("\n")
                self._counter = ""

    def summary(self, title: str, rows: list[tuple[str, str]]) -> None:
        width = max(len(label) for label, _ in rows)
        self._line("\n".join(["", title, *(f"  {label:<{width}}  {value}" for label, value in rows), ""]))

    def next_steps(self, lines: list[tuple[str, bool]]) -> None:
        self._line("\n".join(text for text, _ in lines))

    def error(self, text: str) -> None:
        self._line(text)

    def log(self, message: str) -> None:
        self._line(message)


# -- logging during the demo ------------------------------------------------------------------
class _OutputLogger:
    """A structlog logger that writes through the demo's output."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def msg(self, message: str) -> None:
        self._write(message)

    log = debug = info = warning = warn = error = err = critical = exception = fatal = failure = msg


def _drop_outcomes(_: Any, __: str, event_dict: Any) -> Any:
    if event_dict.get("event") in _OUTCOME_EVENTS:
        raise structlog.DropEvent
    return event_dict


@contextmanager
def _outcome_logs_dropped(out: _Output) -> Iterator[None]:
    """Warnings and errors only, minus the per-job outcome lines; the previous config is restored."""
    previous = structlog.get_config() if structlog.is_configured() else None
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _drop_outcomes,
            structlog.dev.ConsoleRenderer(colors=out.is_terminal, exception_formatter=structlog.dev.plain_traceback),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=lambda *_: _OutputLogger(out.log),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        if previous is None:
            structlog.reset_defaults()
        else:
            structlog.configure(**previous)

"""What cloudq measures, and the middleware that measures it: one table of metrics, two sinks.

:data:`METRICS` is the one table (the README's is checked against it): each metric's name, kind,
unit and dimensions. A sink (:class:`~cloudq.observability.emf.EmfSink` or
:class:`~cloudq.observability.prometheus.PrometheusSink`) turns the records into its own format;
:class:`Metrics` is what the rest of cloudq calls, and :class:`MetricsMiddleware` feeds it from the
public middleware seam (``on_job`` times the run, ``on_outcome`` counts the fate), so that the
worker, the Lambda handler and ``lambda-local`` all report through the one consumer core. The worker
adds its own per-receive records (:meth:`Metrics.received`, :meth:`Metrics.deleted`); nothing here
runs per message when ``CLOUDQ_METRICS=none``, because then none of this is installed.

Dimensions stay low-cardinality: app, queue, task (and a dead letter's reason kind), never a job id.
A task name that is not registered (a typo, or an attacker's message) is reported as
``(unregistered)``, so a stream of bad messages cannot mint new metrics.

Everything is called on the runtime's event loop (one thread), so the sinks need no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cloudq.errors import TaskSignal
from cloudq.middleware import CallNext, Middleware

if TYPE_CHECKING:
    from cloudq.job import Job
    from cloudq.retry import Outcome

__all__ = ["METRICS", "Metric", "Metrics", "MetricsMiddleware", "Sink", "outcome_counters"]

UNREGISTERED = "(unregistered)"
JOB_DIMENSIONS = ("app", "queue", "task")
QUEUE_DIMENSIONS = ("app", "queue")


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of the table: ``kind`` is ``counter``, ``distribution`` (EMF values/counts, a Prometheus
    histogram) or ``gauge`` (sampled; EMF values/counts too, a Prometheus gauge)."""

    name: str
    kind: Literal["counter", "distribution", "gauge"]
    unit: Literal["Count", "Milliseconds"]
    dimensions: tuple[str, ...]
    help: str


def _table(*rows: Metric) -> dict[str, Metric]:
    return {row.name: row for row in rows}


METRICS: dict[str, Metric] = _table(
    Metric("jobs_succeeded", "counter", "Count", JOB_DIMENSIONS, "jobs whose task returned"),
    Metric("jobs_failed", "counter", "Count", JOB_DIMENSIONS, "runs whose task raised an error (each retry counts again)"),
    Metric("jobs_retried", "counter", "Count", JOB_DIMENSIONS, "runs given back to the queue with a backoff"),
    Metric("jobs_dead_lettered", "counter", "Count", (*JOB_DIMENSIONS, "reason"), "jobs sent to the dead-letter queue, by reason kind"),
    Metric("jobs_cancelled", "counter", "Count", JOB_DIMENSIONS, "jobs acked without running because they were cancelled"),
    Metric("jobs_duplicate", "counter", "Count", JOB_DIMENSIONS, "deliveries acked without running: the job had already run"),
    Metric("jobs_rescheduled", "counter", "Count", JOB_DIMENSIONS, "jobs re-sent because their ETA is beyond SQS's 15-minute delay"),
    Metric("job_duration_ms", "distribution", "Milliseconds", JOB_DIMENSIONS, "how long the task ran (middleware included)"),
    Metric("job_lag_ms", "distribution", "Milliseconds", JOB_DIMENSIONS, "start of the run minus the envelope's enqueued_at"),
    Metric("receives", "counter", "Count", QUEUE_DIMENSIONS, "ReceiveMessage calls of a worker"),
    Metric("empty_receives", "counter", "Count", QUEUE_DIMENSIONS, "ReceiveMessage calls that returned nothing"),
    Metric("messages_per_receive", "distribution", "Count", QUEUE_DIMENSIONS, "messages one ReceiveMessage returned"),
    Metric("deletes_per_call", "distribution", "Count", QUEUE_DIMENSIONS, "messages one DeleteMessageBatch deleted"),
    Metric("slots_busy", "gauge", "Count", ("app",), "a worker's busy job slots, sampled at each receive"),
)
"""Metric name -> its row, as the README's metrics table lists them."""

_SUCCEEDED, _DURATION, _LAG = METRICS["jobs_succeeded"], METRICS["job_duration_ms"], METRICS["job_lag_ms"]

# outcome kind -> the counter it bumps; "cancelled" and "duplicate" come with the job store (issue 12)
_KIND_COUNTERS = {
    "ack": "jobs_succeeded",
    "retry": "jobs_retried",
    "dead_letter": "jobs_dead_lettered",
    "reschedule": "jobs_rescheduled",
    "cancelled": "jobs_cancelled",
    "duplicate": "jobs_duplicate",
}


class Sink(Protocol):
    """Where records go. ``labels`` are the metric's dimension values, in the table's order."""

    def record(self, metric: Metric, labels: tuple[str, ...], value: float) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def outcome_counters(outcome: Outcome) -> list[str]:
    """The counters a fate bumps: its kind's, plus ``jobs_failed`` exactly when ``job.failed`` is logged
    (the task raised an error, not a signal such as Reject or Retry, and it was not poison; a job
    cancelled while it ran is ``jobs_cancelled`` only)."""
    names = [_KIND_COUNTERS.get(outcome.kind, f"jobs_{outcome.kind}")]
    error = outcome.error
    if (
        outcome.kind in ("retry", "dead_letter")
        and error is not None
        and not isinstance(error, TaskSignal)
        and outcome.reason.get("cloudq-reason") in (None, "max_retries_exceeded")
    ):
        names.append("jobs_failed")
    return names


class Metrics:
    """The records cloudq makes, each with its labels, handed to one sink."""

    def __init__(self, sink: Sink, app: str, is_task: Callable[[str], bool], *, interval_s: float | None = None) -> None:
        self.sink = sink
        self.app = app
        self._is_task = is_task
        self.interval_s = interval_s
        """How often a long-running process should call :meth:`flush` (None: the sink needs no flushing)."""

    def job(self, job: Job, outcome: Outcome, duration_ms: float | None, lag_ms: float | None) -> None:
        task = job.task if self._is_task(job.task) else UNREGISTERED
        labels = (self.app, job.queue, task)
        record = self.sink.record
        if outcome.kind == "ack":  # the common case, without building the list
            record(_SUCCEEDED, labels, 1)
        else:
            for name in outcome_counters(outcome):
                metric = METRICS.get(name)
                if metric is None:
                    continue
                if name == "jobs_dead_lettered":
                    record(metric, (*labels, outcome.reason.get("cloudq-reason", "unknown")), 1)
                else:
                    record(metric, labels, 1)
        if duration_ms is not None:
            record(_DURATION, labels, duration_ms)
        if lag_ms is not None:
            record(_LAG, labels, lag_ms)

    def received(self, queue: str, messages: int, slots_busy: int) -> None:
        """One receive of a worker's poller: ``messages`` came back, ``slots_busy`` slots now hold a job."""
        labels = (self.app, queue)
        record = self.sink.record
        record(METRICS["receives"], labels, 1)
        if not messages:
            record(METRICS["empty_receives"], labels, 1)
        record(METRICS["messages_per_receive"], labels, messages)
        record(METRICS["slots_busy"], (self.app,), slots_busy)

    def deleted(self, queue: str, messages: int) -> None:
        self.sink.record(METRICS["deletes_per_call"], (self.app, queue), messages)

    def deletes_of(self, logical: dict[str, str]) -> Callable[[str, int], None]:
        """The worker's delete-batch callback, which names queues physically: ``logical`` maps them back."""
        deleted = self.deleted
        return lambda physical, count: deleted(logical.get(physical, physical), count)

    async def flush_every_interval(self) -> None:
        """Flush every ``interval_s`` until cancelled (a worker's background task); returns at once if
        the sink needs no flushing (Prometheus is scraped)."""
        if self.interval_s is None:
            return
        import asyncio

        while True:
            await asyncio.sleep(self.interval_s)
            self.sink.flush()

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()


# The run of the job this asyncio task is processing: (job, started perf_counter, lag ms, duration ms).
_run: ContextVar[tuple[Any, float, float | None, float | None] | None] = ContextVar("cloudq_metrics_run", default=None)


class MetricsMiddleware(Middleware):
    """Times each run (``on_job``) and counts each fate (``on_outcome``) into :class:`Metrics`.

    The two hooks run in the same asyncio task (the consumer core processes a delivery in one), so the
    duration travels from one to the other in a context variable; a fate decided without a run (an
    invalid body, an unknown task, an ETA still ahead) is counted without a duration.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def on_job(self, job: Job, call_next: CallNext) -> Any:
        started = time.perf_counter()
        lag_ms = _lag_ms(job.enqueued_at)
        try:
            return await call_next()
        finally:
            _run.set((job, started, lag_ms, round((time.perf_counter() - started) * 1000, 3)))

    def on_outcome(self, job: Job, outcome: Outcome) -> None:
        run = _run.get()
        if run is not None and run[0] is job:
            _run.set(None)
            self.metrics.job(job, outcome, run[3], run[2])
        else:
            self.metrics.job(job, outcome, None, None)


def _lag_ms(enqueued_at: datetime | None) -> float | None:
    if enqueued_at is None:
        return None
    return max(0.0, round((datetime.now(timezone.utc) - enqueued_at).total_seconds() * 1000, 3))

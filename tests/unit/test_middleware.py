"""Middleware and current_job() on the memory broker, through the worker and the Lambda handler."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq.brokers.memory import MemoryBroker
from cloudq.runtimes.aws_lambda import LambdaHandler
from cloudq.runtimes.lambda_local import sqs_event
from cloudq.runtimes.worker import Worker

pytestmark = pytest.mark.unit


class Recorder(cloudq.Middleware):
    """Records every hook it sees, under its own name, into a shared list."""

    def __init__(self, name: str, calls: list[tuple[str, ...]]) -> None:
        self.name, self.calls = name, calls

    def on_enqueue(self, envelope: cloudq.Envelope) -> cloudq.Envelope:
        self.calls.append((self.name, "enqueue"))
        return envelope.with_headers(**{f"x-{self.name}": "1"})

    async def on_job(self, job: cloudq.Job, call_next: Any) -> Any:
        self.calls.append((self.name, "job-in", json.dumps(dict(job.headers), sort_keys=True)))
        try:
            return await call_next()
        finally:
            self.calls.append((self.name, "job-out"))

    def on_outcome(self, job: cloudq.Job, outcome: cloudq.Outcome) -> None:
        self.calls.append((self.name, "outcome", outcome.kind))


def make_app(*middleware: cloudq.Middleware, **settings: Any) -> cloudq.App:
    values: dict[str, Any] = {"broker": "memory", "max_retries": 2, "retry_backoff_s": 1}
    values.update(settings)
    return cloudq.App("shop", settings=cloudq.Settings(**values), broker=MemoryBroker(), middleware=middleware)


async def burst(app: cloudq.App, **kwargs: Any) -> Worker:
    worker = Worker(app, burst=True, burst_wait_s=0, **kwargs)
    await asyncio.wait_for(worker.run(), 10)
    return worker


EXPECTED_ORDER = [
    ("a", "enqueue"),
    ("b", "enqueue"),
    ("a", "job-in", '{"x-a": "1", "x-b": "1"}'),
    ("b", "job-in", '{"x-a": "1", "x-b": "1"}'),
    ("b", "job-out"),
    ("a", "job-out"),
    ("a", "outcome", "ack"),
    ("b", "outcome", "ack"),
]


async def test_hooks_run_in_order_the_first_outermost_in_the_worker() -> None:
    """Headers added by on_enqueue reach on_job; on_job nests a outside b; on_outcome follows, in order."""
    calls: list[tuple[str, ...]] = []
    app = make_app(Recorder("a", calls))
    app.add_middleware(Recorder("b", calls))

    @app.task(name="t")
    def t() -> None:
        calls.append(("task",))

    t.delay()
    await burst(app)
    assert calls == EXPECTED_ORDER[:4] + [("task",)] + EXPECTED_ORDER[4:]


def test_hooks_run_in_the_same_order_in_the_lambda_handler() -> None:
    """The Lambda handler goes through the same core: the same hooks, in the same order, as the worker."""
    calls: list[tuple[str, ...]] = []
    app = make_app(Recorder("a", calls), Recorder("b", calls))

    @app.task(name="t")
    def t() -> None:
        calls.append(("task",))

    t.delay()
    broker = app.broker
    assert isinstance(broker, MemoryBroker)
    deliveries = asyncio.run(broker.receive("default", max_messages=10, wait_s=0))
    handler = LambdaHandler(app, configure_logs=False)
    try:
        response = handler(sqs_event(deliveries, region="us-east-1"))
    finally:
        handler.close()
    assert response == {"batchItemFailures": []}
    assert calls == EXPECTED_ORDER[:4] + [("task",)] + EXPECTED_ORDER[4:]


def test_on_enqueue_that_raises_fails_the_enqueue_and_sends_nothing() -> None:
    """A producer-side middleware error is the caller's error; no message reaches the queue."""

    class Refuse(cloudq.Middleware):
        def on_enqueue(self, envelope: cloudq.Envelope) -> cloudq.Envelope:
            raise ValueError("no jobs today")

    app = make_app(Refuse())

    @app.task(name="t")
    def t(i: int) -> None: ...

    with pytest.raises(ValueError, match="no jobs today"):
        t.map([1, 2, 3])
    with pytest.raises(ValueError):
        app.enqueue("t", 1)
    assert app.broker.stats("default").visible == 0  # type: ignore[attr-defined]


async def test_on_job_that_raises_counts_as_the_task_failing() -> None:
    """An on_job error goes through the retry policy like a task's: retried, then dead-lettered."""

    class Broken(cloudq.Middleware):
        async def on_job(self, job: cloudq.Job, call_next: Any) -> Any:
            raise RuntimeError("middleware broke")

    app = make_app(Broken(), max_retries=0)
    ran: list[int] = []

    @app.task(name="t")
    def t() -> None:
        ran.append(1)

    t.delay()
    worker = await burst(app)
    assert ran == [] and worker.stats.dead_lettered == 1
    broker = app.broker
    assert isinstance(broker, MemoryBroker)
    [reason] = broker.attributes("default-dlq")
    assert reason["cloudq-error"] == "middleware broke"


async def test_on_outcome_that_raises_is_logged_and_loses_nothing() -> None:
    """A failing on_outcome is logged once per job; each message is settled exactly once (acked, no re-run)."""

    class Noisy(cloudq.Middleware):
        def on_outcome(self, job: cloudq.Job, outcome: cloudq.Outcome) -> None:
            raise RuntimeError("metrics down")

    app = make_app(Noisy())
    ran: list[int] = []

    @app.task(name="t")
    def t(i: int) -> None:
        ran.append(i)

    t.map(range(5))
    with capture_logs() as logs:
        worker = await burst(app)
    assert sorted(ran) == [0, 1, 2, 3, 4] and worker.stats.succeeded == 5
    assert sum(1 for e in logs if e["event"] == "middleware.failed") == 5
    stats = app.broker.stats("default")  # type: ignore[attr-defined]
    assert (stats.visible, stats.in_flight) == (0, 0)


async def test_current_job_in_sync_and_async_tasks_with_attempt_growing_on_retry() -> None:
    """current_job() is the running job in a sync task's thread and in an async task; attempt grows with each retry."""
    app = make_app(retry_backoff_s=0.01)
    seen: list[tuple[str, str, str, int, str]] = []

    @app.task(name="sync_t")
    def sync_t() -> None:
        job = cloudq.current_job()
        assert job is not None
        seen.append(("sync", job.id, job.task, job.attempt, job.queue))
        if job.attempt == 1:
            raise cloudq.Retry(delay=0)

    @app.task(name="async_t")
    async def async_t() -> None:
        job = cloudq.current_job()
        assert job is not None
        seen.append(("async", job.id, job.task, job.attempt, job.queue))
        if job.attempt < 3:
            raise cloudq.Retry(delay=0)

    sync_ref, async_ref = sync_t.delay(), async_t.delay()
    assert cloudq.current_job() is None
    await burst(app)
    assert sorted(seen) == sorted(
        [("sync", sync_ref.id, "sync_t", 1, "default"), ("sync", sync_ref.id, "sync_t", 2, "default")]
        + [("async", async_ref.id, "async_t", n, "default") for n in (1, 2, 3)]
    )
    assert cloudq.current_job() is None


def test_middleware_must_subclass_the_base() -> None:
    """An object that is not a cloudq.Middleware is refused at once with a clear error."""
    with pytest.raises(cloudq.ConfigurationError, match="must subclass cloudq.Middleware"):
        make_app(object())  # type: ignore[arg-type]

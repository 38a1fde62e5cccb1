"""Regression tests for the worker defects a new user hit: starvation, burst strands, start-up outage."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq.brokers.memory import MemoryBroker
from cloudq.errors import BrokerUnavailable
from cloudq.runtimes.worker import Worker

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def make_app(broker: MemoryBroker | None = None, **settings: Any) -> cloudq.App:
    values: dict[str, Any] = {"broker": "memory", "max_retries": 3, "retry_backoff_s": 0.5, "retry_backoff_max_s": 1}
    values.update(settings)
    return cloudq.App("shop", settings=cloudq.Settings(**values), broker=broker or MemoryBroker())


def two_queue_app() -> tuple[cloudq.App, list[str], Any, Any]:
    """An app with a task on the default queue and one on billing, long polls of 20 s; ``ran`` names the
    queue of each job run, in order."""
    app = make_app(wait_time_s=20)
    ran: list[str] = []

    @app.task(name="a")
    def a() -> None:
        ran.append("default")

    @app.task(name="b", queue="billing")
    def b() -> None:
        ran.append("billing")

    return app, ran, a, b


async def test_one_slot_serves_every_queue_and_max_tasks_ends_the_run() -> None:
    """-c 1 with two queues (long polls of 20 s): jobs waiting in either queue run, and --max-tasks ends it."""
    app, ran, _, b = two_queue_app()
    for _ in range(2):
        b.delay()
    worker = Worker(app, concurrency=1, max_tasks=2)
    assert sorted(worker.queues) == ["billing", "default"]
    stats = await asyncio.wait_for(worker.run(), 10)  # the default queue is empty: its poller must not keep the slot
    assert ran == ["billing", "billing"] and stats.processed == 2


async def test_slots_rotate_among_queues_when_both_have_jobs() -> None:
    """With one slot and work in both queues, the queues take turns: neither waits for the other to drain."""
    app, ran, a, b = two_queue_app()
    for _ in range(5):
        a.delay()
        b.delay()
    await asyncio.wait_for(Worker(app, concurrency=1, max_tasks=4).run(), 10)
    assert sorted(ran) == ["billing", "billing", "default", "default"]


async def test_burst_waits_for_a_due_retry_and_leaves_the_job_terminal() -> None:
    """A burst runs a retry that comes back within its bound: the job ends succeeded, nothing in flight."""
    app = make_app()
    attempts: list[int] = []

    @app.task(name="flaky")
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise cloudq.Retry(delay=1)

    flaky.delay()
    stats = await asyncio.wait_for(Worker(app, burst=True, burst_wait_s=0).run(), 10)
    assert (stats.retried, stats.succeeded) == (1, 1) and len(attempts) == 2
    queue = app.broker.stats("default")  # type: ignore[attr-defined]
    assert (queue.visible, queue.in_flight) == (0, 0)


async def test_burst_runs_a_failing_job_to_its_dead_letter_queue() -> None:
    """Retries with backoff inside one burst until max_retries, then the DLQ: never stranded in flight."""
    app = make_app(max_retries=2)

    @app.task(name="broken")
    def broken() -> None:
        raise ValueError("always")

    broken.delay()
    stats = await asyncio.wait_for(Worker(app, burst=True, burst_wait_s=0).run(), 15)
    assert (stats.retried, stats.dead_lettered) == (2, 1)
    broker = app.broker
    assert isinstance(broker, MemoryBroker)
    assert broker.messages("default") == [] and len(broker.messages("default-dlq")) == 1


async def test_burst_releases_a_retry_due_beyond_its_bound() -> None:
    """A retry due later than burst_retry_wait_s is made visible again as the burst ends, not left in flight."""
    app = make_app()

    @app.task(name="later")
    def later() -> None:
        raise cloudq.Retry(delay=300)

    later.delay()
    with capture_logs() as logs:
        stats = await asyncio.wait_for(Worker(app, burst=True, burst_wait_s=0, burst_retry_wait_s=60).run(), 10)
    assert stats.retried == 1
    queue = app.broker.stats("default")  # type: ignore[attr-defined]
    assert (queue.visible, queue.in_flight) == (1, 0)
    assert [e["count"] for e in logs if e["event"] == "worker.retries_released"] == [1]


class UnreachableAtStart(MemoryBroker):
    """Resolving queues fails ``failures`` times with BrokerUnavailable, as SQS does while its endpoint is down."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def prepare(self, queues: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("connection refused")


async def test_worker_started_during_an_outage_waits_then_consumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable endpoint at start-up is logged and retried with backoff; the worker then runs the job."""
    monkeypatch.setattr("cloudq.runtimes.worker._backoff_s", lambda failures: 0.01)
    app = make_app(UnreachableAtStart(failures=3))
    ran: list[int] = []

    @app.task(name="t")
    def t() -> None:
        ran.append(1)

    t.delay()
    with capture_logs() as logs:
        await asyncio.wait_for(Worker(app, burst=True, burst_wait_s=0).run(), 10)
    assert ran == [1]
    assert [e.get("phase") for e in logs if e["event"] == "worker.broker_unavailable"] == ["start"] * 3


async def test_stop_while_waiting_for_the_endpoint_returns_cleanly() -> None:
    """A stop (SIGTERM) while the start-up waits for the endpoint ends the run at once, without an error."""
    app = make_app(UnreachableAtStart(failures=10**6))
    worker = Worker(app)
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)
    worker.stop("SIGTERM")
    stats = await asyncio.wait_for(runner, 5)
    assert stats.received == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_worker_started_while_the_endpoint_is_down_exits_0_on_sigterm(tmp_path: Path) -> None:
    """`cloudq worker` with SQS unreachable logs worker.broker_unavailable and keeps waiting; SIGTERM exits 0."""
    env = {
        **os.environ,
        "CLOUDQ_BROKER": "sqs",
        "CLOUDQ_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
        "CLOUDQ_REGION": "us-east-1",
        "CLOUDQ_LOG_FORMAT": "json",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudq", "worker", "cloudq.examples.shop:app"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "worker.broker_unavailable" in line:
                break
        assert any("worker.broker_unavailable" in line for line in lines), "".join(lines)
        assert proc.poll() is None, "".join(lines)  # still waiting, not crashed
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _SlowDeletes(MemoryBroker):
    """Deletes that take ``delay_s`` to return, as a delete does under throttling and botocore's retries."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def ack(self, queue: str, deliveries: Any) -> None:
        await asyncio.sleep(self.delay_s)
        await super().ack(queue, deliveries)


async def test_a_finished_job_stays_invisible_while_its_slow_delete_is_in_flight() -> None:
    """A delete that takes longer than the visibility timeout (2 s here; the chaos suite saw a throttled
    delete take 5 s) does not let the message come back: the heartbeat extends it until the delete returns,
    so the job runs once, not twice."""
    app = make_app(_SlowDeletes(delay_s=3.5), visibility_timeout_s=2, wait_time_s=1)
    ran: list[int] = []

    @app.task(name="t")
    def t() -> None:
        ran.append(1)

    t.delay()
    worker = Worker(app, concurrency=2)
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(5.0)  # the delete returns at about 3.5 s; unextended, the message is visible at 2 s
    worker.stop()
    await asyncio.wait_for(runner, 10)
    assert ran == [1]

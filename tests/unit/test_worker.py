"""The worker end to end on the memory broker: outcomes, batching, heartbeat, shutdown."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

import cloudq
from cloudq.brokers.base import OutgoingMessage
from cloudq.brokers.memory import MemoryBroker
from cloudq.errors import BrokerUnavailable
from cloudq.runtimes.worker import Worker

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> MemoryBroker:
    return MemoryBroker(clock=clock)


@pytest.fixture
def app(broker: MemoryBroker) -> cloudq.App:
    settings = cloudq.Settings(broker="memory", max_retries=2, visibility_timeout_s=30, shutdown_grace_s=2)
    return cloudq.App("shop", settings=settings, broker=broker)


async def burst(app: cloudq.App, **kwargs: Any) -> Worker:
    # The broker runs on a fake clock that tests step between bursts: a burst must not wait (on the real
    # clock) for a retry to come back, so burst_retry_wait_s=0 unless a test says otherwise.
    kwargs.setdefault("burst_retry_wait_s", 0)
    worker = Worker(app, burst=True, burst_wait_s=0, **kwargs)
    await asyncio.wait_for(worker.run(), 10)
    return worker


async def run_jobs(app: cloudq.App, n: int, **kwargs: Any) -> Worker:
    """Run exactly ``n`` jobs, then stop (``max_tasks``, not burst: a retry stays in flight, on the broker's fake clock)."""
    worker = Worker(app, max_tasks=n, **kwargs)
    await asyncio.wait_for(worker.run(), 10)
    return worker


def send_raw(broker: MemoryBroker, body: str, queue: str = "default") -> None:
    broker.send(queue, [OutgoingMessage(body)])


async def test_successful_jobs_are_deleted_in_batches(app: cloudq.App, broker: MemoryBroker) -> None:
    """25 successful jobs end deleted with at most 4 delete calls (batches of 10)."""
    done: list[int] = []

    @app.task(name="t")
    def t(i: int) -> None:
        done.append(i)

    t.map([(i,) for i in range(25)])
    worker = await burst(app)
    assert sorted(done) == list(range(25)) and worker.stats.succeeded == 25
    assert broker.messages("default") == []
    assert broker.calls["ack"] <= 4


async def test_failure_retries_with_backoff_then_dead_letters_with_reason(app: cloudq.App, broker: MemoryBroker, clock: FakeClock) -> None:
    """A failing task is retried via visibility (max_retries=2: 3 attempts), then dead-lettered with its reason."""
    attempts: list[int] = []

    @app.task(name="flaky")
    def flaky() -> None:
        attempts.append(1)
        raise ValueError("card declined")

    flaky.delay()
    for _ in range(3):
        await run_jobs(app, 1)
        assert broker.stats("default").visible == 0
        clock.now += 10_000
    assert len(attempts) == 3
    assert broker.messages("default") == []
    [reason] = broker.attributes("default-dlq")
    assert reason["cloudq-reason"] == "max_retries_exceeded"
    assert reason["cloudq-error-type"] == "ValueError" and reason["cloudq-error"] == "card declined"
    assert reason["cloudq-attempts"] == "3" and "Traceback" in reason["cloudq-traceback"]


async def test_retry_signal_uses_its_delay(app: cloudq.App, broker: MemoryBroker, clock: FakeClock) -> None:
    """raise Retry(delay=60) hides the message for 60 s, then it runs again."""
    calls: list[int] = []

    @app.task(name="later")
    def later() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise cloudq.Retry(delay=60)

    later.delay()
    await run_jobs(app, 1)
    clock.now += 59
    assert broker.stats("default").in_flight == 1
    clock.now += 2
    await run_jobs(app, 1)
    assert len(calls) == 2 and broker.messages("default") == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "invalid_envelope"),
        ('{"args": []}', "invalid_envelope"),
        ('{"task": "nobody.home"}', "unknown_task"),
        ('{"task": "t", "args": [1, 2, 3]}', "bad_arguments"),
        ('{"task": "rejecting"}', "rejected"),
    ],
)
async def test_poison_goes_to_the_dlq_at_once_with_its_reason(app: cloudq.App, broker: MemoryBroker, body: str, reason: str) -> None:
    """Malformed bodies, unknown tasks, unbindable args and Reject dead-letter on the first attempt."""

    @app.task(name="t")
    def t(a: int) -> None: ...

    @app.task(name="rejecting")
    def rejecting() -> None:
        raise cloudq.Reject("not allowed")

    send_raw(broker, body)
    worker = await burst(app)
    assert worker.stats.dead_lettered == 1
    assert broker.messages("default") == [] and broker.messages("default-dlq") == [body]
    attributes = broker.attributes("default-dlq")[0]
    assert attributes["cloudq-reason"] == reason and attributes["cloudq-attempts"] == "1"


async def test_minimal_envelope_from_plain_producer_runs(app: cloudq.App, broker: MemoryBroker) -> None:
    """{"task", "args", "kwargs"} from any producer runs."""
    got: list[Any] = []

    @app.task(name="t")
    def t(a: int, b: str = "") -> None:
        got.append((a, b))

    send_raw(broker, json.dumps({"task": "t", "args": [1], "kwargs": {"b": "x"}}))
    await burst(app)
    assert got == [(1, "x")]


async def test_async_task_past_its_timeout_is_cancelled_and_fails(app: cloudq.App, broker: MemoryBroker) -> None:
    """An async task running past `timeout` is cancelled and retried."""

    @app.task(name="slow", timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(5)

    slow.delay()
    worker = await run_jobs(app, 1)
    assert worker.stats.retried == 1 and broker.stats("default").in_flight == 1


async def test_outcome_log_lines_carry_job_context(app: cloudq.App) -> None:
    """job.succeeded is logged once with job_id, task, queue, attempt, message_id and duration_ms."""

    @app.task(name="t")
    async def t() -> None: ...

    ref = t.delay()
    with capture_logs(processors=[merge_contextvars]) as logs:
        await burst(app)
    [line] = [entry for entry in logs if entry["event"] == "job.succeeded"]
    assert line["job_id"] == ref.id and line["task"] == "t" and line["queue"] == "default"
    assert line["attempt"] == 1 and line["message_id"] == ref.message_id and "duration_ms" in line


async def test_sync_and_async_tasks_share_the_concurrency_bound(app: cloudq.App) -> None:
    """-c 3 runs exactly 3 jobs at once, never more, sync (threads) and async (loop) together."""
    running = 0
    peak = 0
    mixes: set[tuple[str, ...]] = set()  # the kinds of the jobs running together whenever 3 ran
    kinds: list[str] = []
    lock = threading.Lock()
    full = threading.Event()  # three jobs ran at once: from then on nobody waits

    def enter(kind: str) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            kinds.append(kind)
            peak = max(peak, running)
            if running == 3:
                mixes.add(tuple(sorted(kinds)))
                full.set()

    def leave(kind: str) -> None:
        nonlocal running
        with lock:
            running -= 1
            kinds.remove(kind)

    # Each job holds its slot until three run at once (or 2 s pass, which fails the test below): a worker
    # that ran them one or two at a time could not pass by luck, nor one that ran four.
    @app.task(name="s")
    def s() -> None:
        enter("sync")
        full.wait(2)
        time.sleep(0.005)
        leave("sync")

    @app.task(name="a")
    async def a() -> None:
        enter("async")
        for _ in range(400):
            if full.is_set():
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.005)
        leave("async")

    s.map([()] * 10)
    a.map([()] * 10)
    worker = await burst(app, concurrency=3)
    assert worker.stats.succeeded == 20 and peak == 3
    assert any(0 < mix.count("sync") < 3 for mix in mixes), mixes  # the bound is shared, not one per kind


async def test_max_tasks_stops_the_worker(app: cloudq.App, broker: MemoryBroker) -> None:
    """--max-tasks N exits after N jobs and leaves the rest queued."""

    @app.task(name="t")
    def t() -> None: ...

    t.map([()] * 15)
    worker = Worker(app, max_tasks=5, concurrency=10)
    await asyncio.wait_for(worker.run(), 10)
    assert worker.stats.succeeded == 5 and len(broker.messages("default")) == 10


async def test_long_jobs_get_their_visibility_extended() -> None:
    """A job running past half the visibility timeout is extended (heartbeat) and not redelivered."""
    broker = MemoryBroker()
    app = cloudq.App("x", settings=cloudq.Settings(broker="memory", visibility_timeout_s=1), broker=broker)
    runs: list[int] = []

    @app.task(name="long")
    async def long() -> None:
        runs.append(1)
        await asyncio.sleep(1.6)

    long.delay()
    worker = Worker(app, concurrency=2)
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(1.3)
    assert broker.stats("default").in_flight == 1 and broker.receive_now("default", 10) == []
    await asyncio.sleep(0.6)
    worker.stop()
    await asyncio.wait_for(runner, 5)
    assert runs == [1] and broker.calls["change_visibility"] >= 1 and broker.messages("default") == []


async def test_stop_lets_running_jobs_finish_and_releases_the_rest(broker: MemoryBroker) -> None:
    """On stop, jobs finishing inside the grace period are acked; the rest are made visible at once."""
    app = cloudq.App("x", settings=cloudq.Settings(broker="memory", shutdown_grace_s=0.3), broker=broker)

    @app.task(name="quick")
    async def quick() -> None:
        await asyncio.sleep(0.1)

    @app.task(name="stuck")
    async def stuck() -> None:
        await asyncio.sleep(60)

    quick.delay()
    stuck.delay()
    worker = Worker(app, concurrency=5)
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    worker.stop("SIGTERM")
    await asyncio.wait_for(runner, 5)
    assert worker.stats.succeeded == 1
    assert broker.stats("default").visible == 1  # the stuck job is back at once, not after 30 s
    assert "stuck" in broker.messages("default")[0]


async def test_worker_survives_an_unavailable_broker(app: cloudq.App, broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Transient receive errors are logged and retried; the worker then processes the job."""
    real_receive = broker.receive
    failures = {"left": 2}

    async def flaky_receive(*args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise BrokerUnavailable("connection refused")
        return await real_receive(*args, **kwargs)

    monkeypatch.setattr(broker, "receive", flaky_receive)
    monkeypatch.setattr("cloudq.runtimes.worker._backoff_s", lambda failures: 0.01)
    done: list[int] = []

    @app.task(name="t")
    def t() -> None:
        done.append(1)

    t.delay()
    with capture_logs() as logs:
        await burst(app)
    assert done == [1]
    assert sum(1 for e in logs if e["event"] == "worker.broker_unavailable") == 2


_real_sleep = asyncio.sleep
_real_transient_retry = __import__("cloudq.transient", fromlist=["transient_retry"]).transient_retry


async def _fast_sleep(delay: float, *args: Any) -> Any:
    return await _real_sleep(min(delay, 0.01), *args)


class RecordingBroker(MemoryBroker):
    """Records the order in which receives and deletes start."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    async def receive(self, queue: str, **kwargs: Any) -> Any:
        self.order.append("receive")
        return await super().receive(queue, **kwargs)

    async def ack(self, queue: str, deliveries: Any) -> None:
        self.order.append(f"delete {len(deliveries)}")
        await super().ack(queue, deliveries)


async def test_a_held_full_delete_batch_waits_for_unhold_and_a_timer_bounds_the_wait() -> None:
    from cloudq.runtimes.acks import AckBatcher

    broker = RecordingBroker()
    broker.send("q", [OutgoingMessage(str(i)) for i in range(20)])
    deliveries = await broker.receive("q", max_messages=10, wait_s=0)
    acks = AckBatcher(broker, flush_s=0.05)
    acks.hold("q")
    for d in deliveries:
        acks.add("q", d)
    await asyncio.sleep(0)
    assert broker.order == ["receive"]  # full, but held
    acks.unhold("q")
    await acks.drain()
    assert broker.order == ["receive", "delete 10"]

    more = await broker.receive("q", max_messages=10, wait_s=0)
    acks.hold("q")  # never released: the flush timer sends them anyway
    for d in more:
        acks.add("q", d)
    await asyncio.sleep(0.2)
    assert broker.order[-1] == "delete 10"
    assert broker.stats("q").visible + broker.stats("q").in_flight == 0


async def test_the_next_receive_starts_before_the_previous_batchs_delete() -> None:
    """Deletes are off the critical path: each full batch's delete goes out after the receive that follows it."""
    broker = RecordingBroker()
    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory"), broker=broker)

    @app.task(name="noop")
    def noop() -> None: ...

    noop.map([()] * 30)
    await burst(app, concurrency=10)

    assert broker.order[:6] == ["receive", "receive", "delete 10", "receive", "delete 10", "receive"]
    assert broker.order.count("delete 10") == 3


async def test_with_several_pollers_per_queue_full_delete_batches_do_not_wait_for_the_timer() -> None:
    """Concurrency 30 runs three pollers on one queue; each one's receive releases the deletes held so far."""
    broker = RecordingBroker()
    settings = cloudq.Settings(broker="memory", delete_flush_s=30)  # a timer flush would stall the test
    app = cloudq.App("shop", settings=settings, broker=broker)

    @app.task(name="noop")
    def noop() -> None: ...

    noop.map([()] * 90)
    worker = Worker(app, concurrency=30, max_tasks=90)
    await asyncio.wait_for(worker.run(), 10)

    deleted = sum(int(op.split()[1]) for op in broker.order if op.startswith("delete"))
    assert deleted == 90 and broker.stats("default").in_flight == 0
    first_delete = broker.order.index(next(op for op in broker.order if op.startswith("delete")))
    assert first_delete < len(broker.order) - 1  # deletes went out between receives, not only at the final drain


class FlakyAckBroker(MemoryBroker):
    """Deletes fail with BrokerUnavailable ``failures`` times, then work."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def ack(self, queue: str, deliveries: Any) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise BrokerUnavailable("SQS endpoint unreachable")
        await super().ack(queue, deliveries)


@pytest.mark.parametrize(("failures", "deleted"), [(2, True), (9, False)])
async def test_deletes_retry_transient_errors_then_give_up_to_the_visibility_timeout(
    failures: int, deleted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudq.runtimes import acks as worker_module

    monkeypatch.setattr("cloudq.transient.transient_retry", lambda **kw: _no_wait(kw))
    monkeypatch.setattr("cloudq.transient._FIRST_PAUSE_S", 0)
    broker = FlakyAckBroker(failures)
    acks = worker_module.AckBatcher(broker, flush_s=0)
    broker.send("q", [OutgoingMessage("a")])
    (delivery,) = await broker.receive("q", max_messages=1, wait_s=0)
    with capture_logs() as logs:
        acks.add("q", delivery)
        await asyncio.sleep(0)
        await acks.drain()

    events = [e["event"] for e in logs]
    assert events.count("worker.ack_retrying") == min(failures, worker_module._ACK_ATTEMPTS - 1)
    assert ("worker.ack_failed" in events) is not deleted
    assert broker.stats("q").in_flight == (0 if deleted else 1)  # not deleted: it comes back after its visibility


def _no_wait(kwargs: dict[str, Any]) -> dict[str, Any]:
    import tenacity

    return {**_real_transient_retry(**kwargs), "wait": tenacity.wait_none()}


async def test_memory_broker_reports_the_send_time_through_receives_and_redrives(broker: MemoryBroker, clock: FakeClock) -> None:
    """Like SQS's SentTimestamp: the time of the send, not of the receive, kept when redriven to the DLQ."""
    from datetime import datetime, timezone

    from cloudq.brokers.base import QueueConfig

    broker.ensure_queue("q", QueueConfig(visibility_timeout_s=1, dead_letter_queue="q-dlq", max_receive_count=1))
    broker.send("q", [OutgoingMessage("a")])
    sent = datetime.fromtimestamp(clock.now, timezone.utc)
    clock.now += 60
    (first,) = await broker.receive("q", max_messages=1, wait_s=0)
    clock.now += 60
    assert await broker.receive("q", max_messages=1, wait_s=0) == []  # redriven to the DLQ by this receive
    (dead,) = await broker.receive("q-dlq", max_messages=1, wait_s=0)
    assert first.sent_at == dead.sent_at == sent

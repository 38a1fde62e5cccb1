"""The Lambda handler on the memory broker, driven by SQS and EventBridge events as AWS sends them.

The events in tests/events/ follow the examples in the AWS Lambda documentation; bodies are
cloudq envelopes. Tests are synchronous on purpose: Lambda calls the handler from plain code,
and the handler drives its own long-lived event loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars, merge_contextvars
from structlog.testing import capture_logs

import cloudq
from cloudq.runtimes import aws_lambda
from cloudq.runtimes.aws_lambda import EventFailed, LambdaHandler, delivery_from_record, event_kind
from cloudq.brokers.base import Delivery, OutgoingMessage
from cloudq.brokers.memory import MemoryBroker
from cloudq.envelope import Envelope, utcnow
from cloudq.errors import BrokerUnavailable, ConfigurationError, Reject
from cloudq.runtimes.lambda_local import EventSourceMapping, md5_of_attributes, sqs_record

pytestmark = pytest.mark.unit

EVENTS = Path(__file__).resolve().parents[1] / "events"
DLQ = "shop-default-dlq"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def record(body: str, *, message_id: str | None = None, receive_count: int = 1, queue: str = "shop-default") -> dict[str, Any]:
    """A record shaped like the AWS example (tests/events/sqs_batch.json) with this body."""
    rec = copy.deepcopy(load_event("sqs_batch.json")["Records"][1])
    rec["messageId"] = message_id or str(uuid.uuid4())
    rec["receiptHandle"] = f"receipt-{rec['messageId']}"
    rec["body"] = body
    rec["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    rec["eventSourceARN"] = f"arn:aws:sqs:us-east-2:123456789012:{queue}"
    return rec


def job(task: str, *args: Any, **kwargs: Any) -> str:
    return Envelope(task=task, args=args, kwargs=kwargs).encode()


def failures(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


@dataclass
class FakeContext:
    """The parts of the Lambda context the handler reads; a test moves ``remaining_ms`` by hand."""

    remaining_ms: int = 60_000
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class RecordingBroker(MemoryBroker):
    """The memory broker, recording visibility changes; ``fail_sends`` makes every send fail."""

    def __init__(self) -> None:
        super().__init__()
        self.visibility: list[tuple[str, list[str], int]] = []
        self.fail_sends = False

    async def change_visibility(self, queue: str, deliveries: Sequence[Delivery], timeout_s: int) -> None:
        self.visibility.append((queue, [d.message_id for d in deliveries], timeout_s))
        await super().change_visibility(queue, deliveries, timeout_s)

    async def asend(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        if self.fail_sends:
            raise BrokerUnavailable("SQS endpoint unreachable")
        return await super().asend(queue, messages)


@pytest.fixture(autouse=True)
def logging_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Handlers configure structlog once; here that is recorded instead, so other tests keep their logging."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(aws_lambda, "configure_logging", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def broker() -> RecordingBroker:
    return RecordingBroker()


@pytest.fixture
def calls() -> list[Any]:
    return []


def make_app(broker: MemoryBroker, calls: list[Any], **settings: Any) -> cloudq.App:
    options = {"broker": "memory", "queue_prefix": "shop-", "max_retries": 2, "retry_backoff_s": 1, "concurrency": 4, **settings}
    app = cloudq.App("shop", settings=cloudq.Settings(**options), broker=broker)

    @app.task(name="shop.ok")
    def ok(i: int) -> None:
        calls.append(i)

    @app.task(name="shop.flaky")
    def flaky() -> None:
        raise ValueError("card declined")

    @app.task(name="shop.reject")
    def reject() -> None:
        raise Reject("out of stock")

    @app.task(name="shop.step")
    async def step(name: str) -> None:
        calls.append(name)
        if name.endswith("fails"):
            raise ValueError(f"{name} failed")

    @app.task(name="shop.nightly_report")
    def nightly_report(region: str) -> None:
        calls.append(("report", region))

    return app


@pytest.fixture
def app(broker: RecordingBroker, calls: list[Any]) -> Iterator[cloudq.App]:
    built = make_app(broker, calls)
    yield built
    if "lambda_handler" in built.__dict__:
        built.lambda_handler.close()


# -- SQS: outcomes -----------------------------------------------------------------------------
def test_aws_example_batch_runs_every_record(app: cloudq.App, calls: list[Any]) -> None:
    """The AWS-documented SQS event shape runs each record's envelope and reports no failures."""
    response = app.lambda_handler(load_event("sqs_batch.json"), FakeContext())
    assert response == {"batchItemFailures": []}
    assert sorted(calls) == [1, 2]


def test_record_becomes_the_delivery_the_worker_would_see() -> None:
    """Physical queue from the ARN, receive count, string message attributes and FIFO group are kept."""
    delivery = delivery_from_record(load_event("sqs_batch.json")["Records"][0])
    assert (delivery.queue, delivery.message_id, delivery.receive_count) == ("shop-default", "059f36b4-87a3-44ab-83d2-661975830a7d", 1)
    assert delivery.attributes == {"myAttribute": "myValue"}
    assert delivery.sent_at is not None and delivery.sent_at.year == 2018
    assert delivery_from_record(load_event("sqs_fifo_batch.json")["Records"][0]).group_id == "g1"


def test_failure_is_reported_after_its_backoff_visibility(app: cloudq.App, broker: RecordingBroker) -> None:
    """A failing job gets ChangeMessageVisibility to its backoff and comes back in batchItemFailures."""
    rec = record(job("shop.flaky"))
    response = app.lambda_handler({"Records": [rec, record(job("shop.ok", 1))]}, FakeContext())
    assert failures(response) == [rec["messageId"]]
    assert broker.visibility == [("shop-default", [rec["messageId"]], 1)]
    assert broker.messages(DLQ) == []


def test_failure_after_max_retries_is_dead_lettered_and_not_reported(app: cloudq.App, broker: RecordingBroker) -> None:
    """Past max_retries (2) the job goes to the DLQ with its reason, and Lambda may delete the record."""
    body = job("shop.flaky")
    response = app.lambda_handler({"Records": [record(body, receive_count=3)]}, FakeContext())
    assert failures(response) == []
    assert broker.messages(DLQ) == [body]
    reason = broker.attributes(DLQ)[0]
    assert reason["cloudq-reason"] == "max_retries_exceeded"
    assert (reason["cloudq-attempts"], reason["cloudq-source-queue"]) == ("3", "default")
    assert broker.visibility == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (job("shop.reject"), "rejected"),
        (job("shop.nowhere"), "unknown_task"),
        ('{"task": "shop.ok", "args": [1', "invalid_envelope"),
        (job("shop.ok", 1, 2, 3), "bad_arguments"),
    ],
    ids=["reject", "unknown-task", "malformed-json", "unbindable-args"],
)
def test_poison_is_dead_lettered_and_not_reported(app: cloudq.App, broker: RecordingBroker, body: str, reason: str) -> None:
    """Poison never retries: straight to the DLQ, body byte for byte, reported as a success."""
    response = app.lambda_handler({"Records": [record(body)]}, FakeContext())
    assert failures(response) == []
    assert broker.messages(DLQ) == [body]
    assert broker.attributes(DLQ)[0]["cloudq-reason"] == reason


def test_dead_letter_that_cannot_be_sent_is_reported_failed(app: cloudq.App, broker: RecordingBroker) -> None:
    """When the DLQ send fails the record is reported failed, so SQS keeps it: nothing is lost."""
    broker.fail_sends = True
    rec = record(job("shop.reject"))
    ok = record(job("shop.ok", 1))
    assert failures(app.lambda_handler({"Records": [rec, ok]}, FakeContext())) == [rec["messageId"]]


def test_eta_beyond_sqs_delay_is_rescheduled_and_not_reported(app: cloudq.App, broker: RecordingBroker, calls: list[Any]) -> None:
    """A job due in an hour is re-sent with SQS's longest delay (900 s) instead of running now."""
    body = Envelope(task="shop.ok", args=(1,), eta=utcnow() + timedelta(hours=1)).encode()
    assert failures(app.lambda_handler({"Records": [record(body)]}, FakeContext())) == []
    assert broker.messages("shop-default") == [body] and broker.stats("shop-default").delayed == 1
    assert calls == []


def test_bad_record_fails_alone(app: cloudq.App, calls: list[Any]) -> None:
    """A record without a receipt handle is reported failed; the rest of the batch still runs."""
    broken = record(job("shop.ok", 1))
    del broken["receiptHandle"]
    response = app.lambda_handler({"Records": [broken, record(job("shop.ok", 2))]}, FakeContext())
    assert failures(response) == [broken["messageId"]]
    assert calls == [2]


# -- SQS: concurrency, FIFO, time --------------------------------------------------------------
def test_async_tasks_run_concurrently_up_to_the_setting(broker: RecordingBroker, calls: list[Any]) -> None:
    """Async jobs overlap on the loop, at most settings.concurrency (4) at once."""
    app = make_app(broker, calls, concurrency=4)
    running = {"now": 0, "peak": 0}

    @app.task(name="shop.slow")
    async def slow() -> None:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.05)
        running["now"] -= 1

    response = app.lambda_handler({"Records": [record(job("shop.slow")) for _ in range(9)]}, FakeContext())
    assert failures(response) == [] and running["peak"] == 4
    app.lambda_handler.close()


def test_sync_tasks_run_on_the_handlers_threads(app: cloudq.App) -> None:
    """Sync jobs run off the loop's thread, on the handler's bounded pool."""
    threads: list[str] = []

    @app.task(name="shop.where")
    def where() -> None:
        threads.append(threading.current_thread().name)

    app.lambda_handler({"Records": [record(job("shop.where"))]}, FakeContext())
    assert threads[0].startswith("cloudq-task")


def test_fifo_group_stops_at_its_first_failure(app: cloudq.App, broker: RecordingBroker, calls: list[Any]) -> None:
    """After g1's second record fails, g1's third is reported failed unrun and held as long; g2 runs."""
    event = load_event("sqs_fifo_batch.json")
    ids = [r["messageId"] for r in event["Records"]]
    response = app.lambda_handler(event, FakeContext())
    assert failures(response) == ids[1:3]
    assert sorted(calls) == ["g1-fails", "g1-first", "g2-only"]
    assert broker.visibility == [("shop-orders.fifo", [ids[1]], 1), ("shop-orders.fifo", [ids[2]], 1)]


def test_low_remaining_time_leaves_records_unstarted(broker: RecordingBroker, calls: list[Any]) -> None:
    """Once the remaining time drops under the margin, no record starts; the rest are reported failed."""
    app = make_app(broker, calls, concurrency=1)
    context = FakeContext(remaining_ms=10_000)

    @app.task(name="shop.long")
    def long(i: int) -> None:
        calls.append(i)
        context.remaining_ms = 1_500  # this job used up most of the invocation

    handler = LambdaHandler(app, min_remaining_ms=2_000)
    records = [record(job("shop.long", i)) for i in range(3)]
    with capture_logs() as logs:
        response = handler({"Records": records}, context)
    assert calls == [0]
    assert failures(response) == [r["messageId"] for r in records[1:]]
    assert broker.visibility == []
    late = [e for e in logs if e["event"] == "lambda.out_of_time"]
    assert [(e["unstarted"], e["remaining_ms"], e["margin_ms"]) for e in late] == [(2, 1_500, 2_000)]
    handler.close()


@dataclass
class ClockContext:
    """A context whose remaining time runs down with the wall clock."""

    remaining_at_start_ms: int
    aws_request_id: str = "req-1"
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_at_start_ms - (time.monotonic() - self.started) * 1000)


def test_records_still_running_near_the_timeout_are_reported_and_the_rest_kept(broker: RecordingBroker, calls: list[Any]) -> None:
    """With a quarter of the margin left, the handler answers: finished records count, running ones come back.

    A Lambda timeout would fail the whole batch and re-run the record that succeeded. The async task is
    cancelled; the sync task's thread cannot be and finishes in the background.
    """
    app = make_app(broker, calls, concurrency=4)
    release = threading.Event()
    cancelled: list[str] = []

    @app.task(name="shop.stuck_sync")
    def stuck_sync() -> None:
        release.wait(5)
        calls.append("sync finished late")

    @app.task(name="shop.stuck_async")
    async def stuck_async() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("async")
            raise

    handler = LambdaHandler(app, min_remaining_ms=1_000)  # cut-off with 250 ms left
    records = [record(job("shop.ok", 1)), record(job("shop.stuck_sync")), record(job("shop.stuck_async"))]
    with capture_logs() as logs:
        response = handler({"Records": records}, ClockContext(remaining_at_start_ms=1_300))
    still_running = "sync finished late" not in calls  # the handler answered without waiting for it
    release.set()

    assert failures(response) == [records[1]["messageId"], records[2]["messageId"]]
    assert calls[:1] == [1] and cancelled == ["async"]
    assert still_running
    cut = [e for e in logs if e["event"] == "lambda.cut_off"]
    assert [(sorted(e["running"]), e["cutoff_ms"]) for e in cut] == [(sorted(r["messageId"] for r in records[1:]), 250)]
    handler.close()


def test_default_margin_starts_nothing_with_under_two_seconds_left(app: cloudq.App, calls: list[Any]) -> None:
    """By default at least 2 s must remain to start a record; with 1.5 s left the whole batch comes back."""
    records = [record(job("shop.ok", i)) for i in range(2)]
    response = app.lambda_handler({"Records": records}, FakeContext(remaining_ms=1_500))
    assert failures(response) == [r["messageId"] for r in records] and calls == []


def test_no_context_means_no_time_limit(app: cloudq.App, calls: list[Any]) -> None:
    """Called without a context (a local test), every record runs."""
    assert failures(app.lambda_handler({"Records": [record(job("shop.ok", 7))]}, None)) == []
    assert calls == [7]


# -- loop, logging -----------------------------------------------------------------------------
def test_warm_invocations_reuse_one_open_loop(app: cloudq.App) -> None:
    """The handler is built once per app and every invocation runs on the same, still open, loop."""
    loops: list[asyncio.AbstractEventLoop] = []

    @app.task(name="shop.loop")
    async def which_loop() -> None:
        loops.append(asyncio.get_running_loop())

    handler = app.lambda_handler
    for _ in range(3):
        app.lambda_handler({"Records": [record(job("shop.loop"))]}, FakeContext())
    assert app.lambda_handler is handler
    assert loops == [handler.loop] * 3 and not handler.loop.is_closed()


def test_logging_is_configured_once_as_json(app: cloudq.App, logging_calls: list[tuple[Any, ...]]) -> None:
    """Building the handler configures JSON logs once; invocations do not reconfigure."""
    for _ in range(2):
        app.lambda_handler({"Records": []}, FakeContext())
    assert logging_calls == [("json", "INFO")]


def test_aws_request_id_is_bound_per_invocation(app: cloudq.App) -> None:
    """Each invocation's log lines carry its own aws_request_id; the caller's context is left as it was."""
    first, second = FakeContext(), FakeContext()
    bind_contextvars(caller="test")
    with capture_logs(processors=[merge_contextvars]) as logs:
        app.lambda_handler({"Records": [record(job("shop.ok", 1))]}, first)
        app.lambda_handler({"Records": [record(job("shop.ok", 2))]}, second)
    succeeded = [e for e in logs if e["event"] == "job.succeeded"]
    assert [e["aws_request_id"] for e in succeeded] == [first.aws_request_id, second.aws_request_id]
    assert all("caller" not in e for e in logs)
    assert get_contextvars() == {"caller": "test"}
    clear_contextvars()


# -- EventBridge -------------------------------------------------------------------------------
def test_scheduled_rule_envelope_runs_the_job(app: cloudq.App, calls: list[Any]) -> None:
    """A scheduled rule's constant Input that is an envelope runs that job; no batch in the answer."""
    response = app.lambda_handler(load_event("eventbridge_scheduled_envelope.json"), FakeContext())
    assert response == {"ok": True, "results": [{"task": "shop.nightly_report", "outcome": "ack"}]}
    assert calls == [("report", "eu")]


def test_pattern_event_runs_the_tasks_registered_for_it(app: cloudq.App) -> None:
    """A pattern-rule event goes to tasks of its source and detail-type, called with the event."""
    seen: list[tuple[str, Any]] = []

    @app.on_event("aws.s3", "Object Created")
    def on_upload(event: dict[str, Any]) -> None:
        seen.append(("created", event["detail"]["object"]["key"]))

    @app.on_event("aws.s3")
    def on_any_s3(event: dict[str, Any]) -> None:
        seen.append(("any", event["id"]))

    @app.on_event("aws.s3", "Object Deleted")
    def on_delete(event: dict[str, Any]) -> None:
        seen.append(("deleted", event))

    response = app.lambda_handler(load_event("eventbridge_s3_object_created.json"), FakeContext())
    assert response["ok"] is True and len(response["results"]) == 2
    assert seen == [("created", "example-key"), ("any", "17793124-05d4-b198-2fde-7ededc63b103")]


def test_scheduled_event_without_input_is_routed_too(app: cloudq.App) -> None:
    """A scheduled rule without Input sends aws.events / Scheduled Event, routed like any pattern event."""
    fired: list[str] = []

    @app.on_event("aws.events", "Scheduled Event")
    def tick(event: dict[str, Any]) -> None:
        fired.append(event["resources"][0])

    assert app.lambda_handler(load_event("eventbridge_scheduled_event.json"), FakeContext())["ok"] is True
    assert fired == ["arn:aws:events:us-east-1:123456789012:rule/ExampleRule"]


def test_failing_event_task_raises_so_lambda_retries(app: cloudq.App) -> None:
    """A retryable failure of a directly invoked job raises: Lambda's async retry and DLQ take over."""

    @app.on_event("aws.s3")
    def broken(event: dict[str, Any]) -> None:
        raise ConnectionError("database down")

    with pytest.raises(EventFailed, match="broken failed"):
        app.lambda_handler(load_event("eventbridge_s3_object_created.json"), FakeContext())


def test_poisoned_event_answers_not_ok_without_raising(app: cloudq.App) -> None:
    """Reject or an unknown task in a direct invocation is answered, not raised: a retry cannot help."""

    @app.on_event("aws.s3")
    def refuse(event: dict[str, Any]) -> None:
        raise Reject("not our bucket")

    rejected = app.lambda_handler(load_event("eventbridge_s3_object_created.json"), FakeContext())
    assert rejected["ok"] is False and rejected["results"][0]["reason"]["cloudq-reason"] == "rejected"
    unknown = app.lambda_handler({"task": "shop.nowhere"}, FakeContext())
    assert unknown["ok"] is False and unknown["results"][0]["reason"]["cloudq-reason"] == "unknown_task"


@pytest.mark.parametrize(
    "event",
    [load_event("sns_notification.json"), load_event("eventbridge_scheduled_event.json"), "hello", {"Records": "x"}],
    ids=["sns", "unrouted-eventbridge", "string", "records-not-a-list"],
)
def test_unknown_or_unrouted_events_get_an_error_answer(app: cloudq.App, event: Any) -> None:
    """Events the handler cannot place are answered with an error, never an exception."""
    response = app.lambda_handler(event, FakeContext())
    assert response["ok"] is False and response["error"]


def test_event_kind_tells_the_shapes_apart() -> None:
    """Each kind of event in tests/events is recognised for what it is."""
    kinds = {name: event_kind(load_event(name)) for name in sorted(p.name for p in EVENTS.glob("*.json"))}
    assert kinds == {
        "eventbridge_s3_object_created.json": "eventbridge",
        "eventbridge_scheduled_envelope.json": "envelope",
        "eventbridge_scheduled_event.json": "eventbridge",
        "sns_notification.json": "unknown",
        "sqs_batch.json": "sqs",
        "sqs_fifo_batch.json": "sqs",
    }


def test_event_task_must_take_one_argument(app: cloudq.App) -> None:
    """Registering an event task that cannot take the event fails at import, not at the first event."""
    with pytest.raises(ConfigurationError, match="one argument"):

        @app.on_event("aws.s3")
        def no_args() -> None: ...

    assert not any(name.endswith("no_args") for name in app.registry)


# -- lambda-local on the memory broker ---------------------------------------------------------
def test_lambda_local_event_matches_the_aws_shape() -> None:
    """The records lambda-local builds have the keys and attribute names of the AWS example."""
    delivery = Delivery("shop-default", "m-1", "r-1", "{}", 2, {"myAttribute": "myValue"}, utcnow())
    built = sqs_record(delivery, region="us-east-2")
    example = load_event("sqs_batch.json")["Records"][0]
    assert list(built) == [*list(example)[:-3], "md5OfMessageAttributes", *list(example)[-3:]]
    assert built["attributes"].keys() == example["attributes"].keys()
    assert built["messageAttributes"] == example["messageAttributes"]
    assert delivery_from_record(built) == Delivery("shop-default", "m-1", "r-1", "{}", 2, {"myAttribute": "myValue"}, delivery.sent_at)
    assert md5_of_attributes({}) == "d41d8cd98f00b204e9800998ecf8427e"


def test_lambda_local_deletes_all_but_the_failures(app: cloudq.App, broker: RecordingBroker, calls: list[Any]) -> None:
    """Through the emulated mapping: successes and dead letters are deleted, the retried job stays."""
    app.registry["shop.ok"].map([(1,), (2,)])
    app.send_task("shop.flaky")
    app.send_task("shop.reject")
    stats = EventSourceMapping(app, burst=True, max_batches=1).run()
    assert (stats.invocations, stats.records, stats.deleted, len(stats.failed)) == (1, 4, 3, 1)
    assert sorted(calls) == [1, 2] and len(broker.messages(DLQ)) == 1
    assert broker.stats("shop-default").in_flight == 1


def test_lambda_local_keeps_the_whole_batch_when_the_handler_times_out(broker: RecordingBroker, calls: list[Any]) -> None:
    """A handler that runs past the function timeout fails its whole batch, as on AWS."""
    app = make_app(broker, calls)

    @app.task(name="shop.sleepy")
    def sleepy() -> None:
        time.sleep(0.3)

    app.send_task("shop.sleepy")
    stats = EventSourceMapping(app, burst=True, max_batches=1, timeout_s=0.2).run()
    assert (stats.deleted, len(stats.failed)) == (0, 1)
    app.lambda_handler.close()


def test_lambda_local_checks_its_options(app: cloudq.App) -> None:
    """Options Lambda would refuse are refused here too."""
    with pytest.raises(ConfigurationError):
        EventSourceMapping(app, ["orders.fifo"], batch_size=11)
    with pytest.raises(ConfigurationError):
        EventSourceMapping(app, batching_window_s=301)

"""What the README promises about cloudq's SQS calls, checked call by call on LocalStack.

The calls are counted with botocore's event hooks on the clients cloudq builds (tests/aws_calls.py), so
each check is on what SQS was asked: how many calls, and with which delay, visibility or ids.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq.envelope import Envelope, parse_time, utcnow

from ..aws_calls import AwsCall, AwsCalls, entries, received
from .conftest import ensure_queues, run_worker_until

SQS_MAX_DELAY_S = 900


def entries_of(call: AwsCall) -> list[dict[str, Any]]:
    """A batch call's entries, or a single call's parameters as one entry."""
    return list(call.params.get("Entries", [call.params]))


# -- 0.2 SQS calls per processed task when the queue is busy -------------------------------------------
async def test_a_busy_queue_costs_one_receive_and_one_delete_per_ten_jobs(make_settings: Any, aws_calls: AwsCalls) -> None:
    """Draining 100 waiting jobs with -c 10: 10 receives of 10 and 10 DeleteMessageBatch of 10, nothing else
    but the empty polls once the queue is empty (0.2 calls per task while it is busy)."""
    app = cloudq.App("shop", settings=make_settings(wait_time_s=1, concurrency=10))

    @app.task(name="t")
    async def t(i: int) -> None:  # on the loop: ten jobs end together, so slots free up as a batch
        return None

    ensure_queues(app)
    app.registry["t"].map([(i,) for i in range(100)])
    aws_calls.clear()

    await run_worker_until(app, lambda w: w.stats.succeeded == 100)

    receives = aws_calls.of("ReceiveMessage")
    busy = [c for c in receives if received(c)]
    deletes = aws_calls.of("DeleteMessageBatch")
    assert [received(c) for c in busy] == [10] * 10
    assert [len(entries_of(c)) for c in deletes] == [10] * 10
    assert set(aws_calls.counts()) <= {"ReceiveMessage", "DeleteMessageBatch", "GetQueueUrl"}
    assert aws_calls.counts()["GetQueueUrl"] <= 1  # resolved once at start, never per poll
    assert all(c.params["MaxNumberOfMessages"] == 10 for c in busy)


# -- ETA beyond SQS's 15 minutes on the worker path --------------------------------------------------
async def test_a_job_due_in_an_hour_is_re_sent_with_the_maximum_delay_and_not_run(app_and_queue: Any, aws_calls: AwsCalls, sqs_client: Any) -> None:
    """An envelope whose ETA is an hour away, received now: re-sent (same body) with DelaySeconds=900, the
    received copy deleted, the task not run."""
    app, url, ran = app_and_queue
    envelope = Envelope("t", (1,), {}, eta=utcnow() + timedelta(hours=1))
    sqs_client.send_message(QueueUrl=url, MessageBody=envelope.encode())

    worker = await run_worker_until(app, lambda w: w.stats.rescheduled == 1)

    assert ran == [] and worker.stats.succeeded == 0
    [resend] = [e for c in aws_calls.of("SendMessage", "SendMessageBatch") for e in entries_of(c)]
    assert resend["DelaySeconds"] == SQS_MAX_DELAY_S and json.loads(resend["MessageBody"]) == json.loads(envelope.encode())
    assert entries(aws_calls.of("DeleteMessageBatch")) == 1
    stats = app.broker.stats(app.settings.queue_name("default"))
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 1)


async def test_a_job_with_an_eta_runs_once_it_is_due(app_and_queue: Any, aws_calls: AwsCalls, sqs_client: Any) -> None:
    """An ETA 4 s away, received at once: re-sent with the rest of its delay (not 0, not 900), then run once,
    not before the ETA's last second (the consumer runs what is due within a second)."""
    app, url, ran = app_and_queue
    eta = utcnow() + timedelta(seconds=4)
    sqs_client.send_message(QueueUrl=url, MessageBody=Envelope("t", (1,), {}, eta=eta).encode())

    worker = await run_worker_until(app, lambda w: w.stats.succeeded == 1)

    assert len(ran) == 1 and ran[0] >= eta - timedelta(seconds=1)
    resends = [e for c in aws_calls.of("SendMessage", "SendMessageBatch") for e in entries_of(c)]
    assert len(resends) == worker.stats.rescheduled >= 1
    first_delay = resends[0]["DelaySeconds"]
    assert 2 <= first_delay <= 4  # the ~4 s left at its first receive, rounded
    assert all(parse_time(json.loads(e["MessageBody"])["eta"], field_name="eta") == eta for e in resends)


@pytest.fixture
def app_and_queue(make_settings: Any, sqs_client: Any, aws_calls: AwsCalls) -> Any:
    """An app with task "t" (recording when it ran) and the URL of its default queue; its clients are watched."""
    app = cloudq.App("shop", settings=make_settings())
    ran: list[Any] = []
    app.task(name="t")(lambda i: ran.append(utcnow()))
    ensure_queues(app)
    url = sqs_client.get_queue_url(QueueName=app.settings.queue_name("default"))["QueueUrl"]
    aws_calls.clear()
    yield app, url, ran
    app.close()


# -- visibility extended while a task runs -------------------------------------------------------------
def watch_queue(sqs_client: Any, url: str, start: threading.Event, stop: threading.Event) -> list[dict[str, Any]]:
    """Another consumer polling the queue from ``start`` (the task started) until ``stop``: every message it
    manages to receive (and then keeps for 30 s)."""
    seen: list[dict[str, Any]] = []
    start.wait(30)
    deadline = time.monotonic() + 40  # never forever: a thread left polling would hang the run at its exit
    while not stop.is_set() and time.monotonic() < deadline:
        seen += sqs_client.receive_message(
            QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=30, MessageSystemAttributeNames=["ApproximateReceiveCount"]
        ).get("Messages", [])  # fmt: skip
        if seen:
            stop.set()
    return seen


def extensions(aws_calls: AwsCalls) -> list[AwsCall]:
    return aws_calls.of("ChangeMessageVisibilityBatch", "ChangeMessageVisibility")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_task_longer_than_its_visibility_keeps_its_message_hidden_and_runs_once(
    kind: str, make_settings: Any, sqs_client: Any, aws_calls: AwsCalls
) -> None:
    """Visibility 2 s, a 5 s task: heartbeats extend it by 2 s at a time, another consumer never sees the
    message meanwhile, the task runs once and its message is deleted."""
    app = cloudq.App("shop", settings=make_settings(visibility_timeout_s=2))
    started, finished = threading.Event(), threading.Event()
    runs: list[int] = []

    if kind == "async":

        @app.task(name="long", timeout=30)
        async def long_async() -> None:
            runs.append(1)
            started.set()
            await asyncio.sleep(5)
            finished.set()

    else:

        @app.task(name="long", timeout=30)
        def long_sync() -> None:
            runs.append(1)
            started.set()
            finished.wait(5)
            finished.set()

    ensure_queues(app)
    url = sqs_client.get_queue_url(QueueName=app.settings.queue_name("default"))["QueueUrl"]
    app.registry["long"].delay()
    watcher = asyncio.ensure_future(asyncio.to_thread(watch_queue, sqs_client, url, started, finished))

    worker = await run_worker_until(app, lambda w: w.stats.succeeded == 1)

    assert await watcher == [] and runs == [1]
    assert len(extensions(aws_calls)) >= 2  # 5 s of work under a 2 s visibility
    assert {e["VisibilityTimeout"] for c in extensions(aws_calls) for e in entries_of(c)} == {2}
    stats = app.broker.stats(app.settings.queue_name("default"))
    assert (stats.visible, stats.in_flight) == (0, 0) and worker.stats.retried == 0


async def test_the_extension_stops_at_the_tasks_timeout(make_settings: Any, sqs_client: Any, aws_calls: AwsCalls) -> None:
    """A sync task past its 3 s timeout cannot be interrupted: its visibility is no longer extended after
    job.timeout, so the message comes back (receive count 2) to another consumer while the task still runs.

    One slot, held by the stuck task: the worker cannot receive the message back itself (with a free slot it
    raced the other consumer for it, ran it again and extended that second delivery)."""
    app = cloudq.App("shop", settings=make_settings(visibility_timeout_s=2, concurrency=1))
    started, taken = threading.Event(), threading.Event()

    @app.task(name="stuck", timeout=3)
    def stuck() -> None:
        started.set()
        taken.wait(30)  # until the other consumer has the message

    ensure_queues(app)
    url = sqs_client.get_queue_url(QueueName=app.settings.queue_name("default"))["QueueUrl"]
    app.registry["stuck"].delay()
    stamp = lambda _logger, _name, event: {**event, "at": time.monotonic()}  # noqa: E731
    with capture_logs(processors=[stamp]) as logs:
        watcher = asyncio.ensure_future(asyncio.to_thread(watch_queue, sqs_client, url, started, taken))
        await run_worker_until(app, lambda w: taken.is_set() and w.stats.processed == 1)
        [back] = await watcher

    [timed_out] = [e for e in logs if e["event"] == "job.timeout"]
    assert back["Attributes"]["ApproximateReceiveCount"] == "2"
    assert extensions(aws_calls), "the visibility was never extended before the timeout"
    assert all(c.at < timed_out["at"] for c in extensions(aws_calls))


# -- what the producer and the worker never call at run time ---------------------------------------------
async def test_cloudq_queue_urls_skips_get_queue_url(make_settings: Any, sqs_client: Any, aws_calls: AwsCalls, monkeypatch: pytest.MonkeyPatch) -> None:
    """With CLOUDQ_QUEUE_URLS naming the queue and its DLQ, neither .delay(), .adelay() nor the worker (running,
    retrying and dead-lettering) calls GetQueueUrl."""
    settings = make_settings(max_retries=0)
    setup = cloudq.App("shop", settings=settings)
    setup.task(name="ok")(lambda: None)
    ensure_queues(setup)
    setup.close()
    urls = {q: sqs_client.get_queue_url(QueueName=name)["QueueUrl"] for q, name in (("default", settings.queue_name("default")), ("default-dlq", settings.dlq_name("default")))}
    environment = {"BROKER": "sqs", "ENDPOINT_URL": settings.endpoint_url, "REGION": "us-east-1", "QUEUE_PREFIX": settings.queue_prefix, "WAIT_TIME_S": "1", "QUEUE_URLS": json.dumps(urls), "MAX_RETRIES": "0"}
    for key, value in environment.items():
        monkeypatch.setenv(f"CLOUDQ_{key}", str(value))
    app = cloudq.App("shop")  # from the environment, as a deployed worker reads it
    app.task(name="ok")(lambda: None)

    @app.task(name="failing")
    def failing() -> None:
        raise RuntimeError("boom")

    aws_calls.clear()
    app.registry["ok"].delay()
    await app.registry["ok"].adelay()
    app.registry["failing"].delay()
    await run_worker_until(app, lambda w: w.stats.succeeded == 2 and w.stats.dead_lettered == 1)
    app.close()

    assert aws_calls.counts()["GetQueueUrl"] == 0, aws_calls.counts()
    assert {c.params["QueueUrl"] for c in aws_calls.of()} == set(urls.values())


async def test_producer_and_worker_never_create_or_list_queues(make_settings: Any, sqs_client: Any, aws_calls: AwsCalls) -> None:
    """A producer and a worker through success, retry, dead letter and ETA re-send make only data-plane calls
    (plus one GetQueueUrl per queue): no CreateQueue, ListQueues or queue attribute writes at run time."""
    settings = make_settings(max_retries=1, retry_backoff_s=1)
    setup = cloudq.App("shop", settings=settings)
    setup.task(name="ok")(lambda: None)
    ensure_queues(setup)  # as infrastructure code would, beforehand
    setup.close()
    url = sqs_client.get_queue_url(QueueName=settings.queue_name("default"))["QueueUrl"]
    sqs_client.send_message(QueueUrl=url, MessageBody=Envelope("ok", (), {}, eta=utcnow() + timedelta(hours=1)).encode())
    app = cloudq.App("shop", settings=settings)
    attempts: list[int] = []
    app.task(name="ok")(lambda: None)

    @app.task(name="flaky")
    def flaky() -> None:
        attempts.append(1)
        raise RuntimeError("boom")

    aws_calls.clear()
    app.registry["ok"].delay()
    app.registry["ok"].map([()] * 3)
    await app.registry["ok"].adelay()
    app.registry["flaky"].delay()
    await run_worker_until(app, lambda w: w.stats.succeeded == 5 and w.stats.dead_lettered == 1 and w.stats.rescheduled == 1)
    with pytest.raises(cloudq.QueueNotFound):
        app.registry["ok"].with_options(queue="nowhere").delay()
    app.close()

    data_plane = {"GetQueueUrl", "SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"}
    assert set(aws_calls.counts()) <= data_plane, aws_calls.counts()
    assert aws_calls.counts()["GetQueueUrl"] == 3  # the queue, its DLQ (at the first dead letter), the missing one
    assert len(attempts) == 2


async def test_fifo_jobs_default_to_group_default_and_their_job_id_as_dedup_id(make_settings: Any, sqs_client: Any, aws_calls: AwsCalls) -> None:
    """On a FIFO queue a job sent without options has MessageGroupId "default" and MessageDeduplicationId its
    job id, as SQS stores them (delay, map and adelay alike)."""
    app = cloudq.App("shop", settings=make_settings())
    app.task(name="step", queue="orders.fifo")(lambda i: None)
    ensure_queues(app)
    refs = [app.registry["step"].delay(0), *app.registry["step"].map([(1,), (2,)]), await app.registry["step"].adelay(3)]
    url = sqs_client.get_queue_url(QueueName=app.settings.queue_name("orders.fifo"))["QueueUrl"]
    got: list[dict[str, Any]] = []
    while len(got) < 4:
        batch = sqs_client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"]
        ).get("Messages", [])  # fmt: skip
        assert batch, f"only {len(got)} of 4 FIFO messages came back"
        got += batch
        sqs_client.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    by_id = {m["MessageId"]: m["Attributes"] for m in got}
    assert [(by_id[r.message_id]["MessageGroupId"], by_id[r.message_id]["MessageDeduplicationId"]) for r in refs] == [("default", r.id) for r in refs]
    await app.aclose()
    app.close()

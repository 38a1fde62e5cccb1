"""The core end to end on LocalStack SQS: producer, worker, retries, dead letters, FIFO."""

from __future__ import annotations

import json
from typing import Any

import pytest

import cloudq
from cloudq.cli import main as cli_main

from ..aws_calls import AwsCalls, entries
from .conftest import ensure_queues, receive_all, run_worker_until


@pytest.fixture
def app(make_settings: Any) -> Any:
    app = cloudq.App("shop", settings=make_settings())
    yield app
    app.close()


async def test_delay_runs_on_a_worker_and_deletes_in_batches(app: cloudq.App, sqs_client: Any, aws_calls: AwsCalls) -> None:
    """delay()/map() post envelopes; the worker runs them and deletes every one with DeleteMessageBatch."""
    done: list[int] = []

    @app.task(name="t")
    def t(i: int) -> None:
        done.append(i)

    ensure_queues(app)
    aws_calls.clear()
    t.delay(0)
    refs = t.map([(i,) for i in range(1, 25)])
    assert len(refs) == 24 and [entries([c]) for c in aws_calls.of("SendMessageBatch")] == [10, 10, 4]
    worker = await run_worker_until(app, lambda w: w.stats.succeeded == 25)
    assert sorted(done) == list(range(25))
    deletes = aws_calls.of("DeleteMessageBatch")
    assert entries(deletes) == 25 and 3 <= len(deletes) <= 6  # about 3 batches of 10; never one per job
    assert not aws_calls.of("DeleteMessage")
    stats = app.broker.stats(app.settings.queue_name("default"))
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)  # deleted, not merely in flight
    assert worker.stats.dead_lettered == 0


async def test_adelay_on_aioboto3(app: cloudq.App) -> None:
    """adelay() enqueues through aioboto3 and returns a JobRef with a message id."""

    @app.task(name="billing.charge", queue="billing")
    async def charge(customer_id: str, cents: int) -> dict:
        return {"ok": True}

    ensure_queues(app)
    ref = await charge.adelay("c1", 100)
    assert ref.queue == "billing" and ref.message_id
    worker = await run_worker_until(app, lambda w: w.stats.succeeded == 1, queues=["billing"])
    assert worker.stats.succeeded == 1
    await app.aclose()


async def test_plain_boto3_minimal_envelope_runs(app: cloudq.App, sqs_client: Any) -> None:
    """A message sent by a plain boto3 program with only task/args/kwargs runs."""
    got: list[Any] = []

    @app.task(name="reports.build")
    def build(year: int, fmt: str = "pdf") -> None:
        got.append((year, fmt))

    ensure_queues(app)
    url = sqs_client.get_queue_url(QueueName=app.settings.queue_name("default"))["QueueUrl"]
    sqs_client.send_message(QueueUrl=url, MessageBody=json.dumps({"task": "reports.build", "args": [2026], "kwargs": {"fmt": "csv"}}))
    await run_worker_until(app, lambda w: w.stats.succeeded == 1)
    assert got == [(2026, "csv")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not json", "invalid_envelope"),
        ('{"kwargs": {}}', "invalid_envelope"),
        ('{"task": "no.such.task"}', "unknown_task"),
        ('{"task": "t", "args": [1, 2, 3]}', "bad_arguments"),
        ('{"task": "rejecting"}', "rejected"),
    ],
)
async def test_poison_lands_in_the_dlq_with_its_reason(app: cloudq.App, sqs_client: Any, body: str, reason: str) -> None:
    """Each poison case goes to the DLQ on its first attempt, reason attached, source emptied."""

    @app.task(name="t")
    def t(a: int) -> None: ...

    @app.task(name="rejecting")
    def rejecting() -> None:
        raise cloudq.Reject("refund window closed")

    ensure_queues(app)
    url = sqs_client.get_queue_url(QueueName=app.settings.queue_name("default"))["QueueUrl"]
    sqs_client.send_message(QueueUrl=url, MessageBody=body)
    await run_worker_until(app, lambda w: w.stats.dead_lettered == 1)
    dlq_url = sqs_client.get_queue_url(QueueName=app.settings.dlq_name("default"))["QueueUrl"]
    [dead] = receive_all(sqs_client, dlq_url, 1)
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert dead["Body"] == body
    assert attributes["cloudq-reason"] == reason and attributes["cloudq-attempts"] == "1"
    assert attributes["cloudq-source-queue"] == "default" and attributes["cloudq-error-type"]
    stats = app.broker.stats(app.settings.queue_name("default"))
    assert (stats.visible, stats.in_flight) == (0, 0)  # deleted from the source, not left in flight


async def test_failures_retry_with_backoff_then_dead_letter(make_settings: Any, sqs_client: Any, aws_calls: AwsCalls) -> None:
    """A failing task is retried by visibility change (same message, receive count 2), then dead-lettered."""
    app = cloudq.App("shop", settings=make_settings(max_retries=1, retry_backoff_s=1))
    attempts: list[tuple[str, int]] = []

    @app.task(name="flaky")
    def flaky() -> None:
        job = cloudq.current_job()
        assert job is not None
        attempts.append((job.message_id, job.attempt))
        raise RuntimeError("upstream 503")

    ensure_queues(app)
    ref = flaky.delay()
    worker = await run_worker_until(app, lambda w: w.stats.dead_lettered == 1)
    assert attempts == [(ref.message_id, 1), (ref.message_id, 2)] and worker.stats.retried == 1
    # The backoff SQS was given: the first attempt's visibility set to retry_backoff_s (1 s at attempt 1), not 0.
    [change] = aws_calls.of("ChangeMessageVisibilityBatch", "ChangeMessageVisibility")
    assert [e["VisibilityTimeout"] for e in change.params.get("Entries", [change.params])] == [1]
    dlq_url = sqs_client.get_queue_url(QueueName=app.settings.dlq_name("default"))["QueueUrl"]
    [dead] = receive_all(sqs_client, dlq_url, 1)
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["cloudq-reason"] == "max_retries_exceeded" and attributes["cloudq-attempts"] == "2"
    assert attributes["cloudq-error"] == "upstream 503" and "RuntimeError" in attributes["cloudq-traceback"]


async def test_fifo_queue_keeps_group_order(make_settings: Any) -> None:
    """Jobs in one FIFO group run in the order they were sent."""
    app = cloudq.App("shop", settings=make_settings())
    order: list[int] = []

    @app.task(name="step", queue="orders.fifo")
    def step(i: int) -> None:
        order.append(i)

    ensure_queues(app)
    step.with_options(group_id="order-1").map([(i,) for i in range(12)])
    await run_worker_until(app, lambda w: w.stats.succeeded == 12, concurrency=10)
    assert order == list(range(12))


async def test_delayed_job_waits(app: cloudq.App, aws_calls: AwsCalls) -> None:
    """with_options(delay=2) sends the job with SQS's DelaySeconds=2: it is delayed, not visible, until it runs."""
    ran: list[int] = []

    @app.task(name="t")
    def t() -> None:
        ran.append(1)

    ensure_queues(app)
    t.with_options(delay=2).delay()
    [send] = aws_calls.of("SendMessage", "SendMessageBatch")
    assert [e.get("DelaySeconds") for e in send.params.get("Entries", [send.params])] == [2]
    stats = app.broker.stats(app.settings.queue_name("default"))
    assert (stats.visible, stats.delayed) == (0, 1)
    await run_worker_until(app, lambda w: w.stats.succeeded == 1)
    assert ran == [1]


def test_queues_ensure_creates_queue_and_dlq_with_redrive_policy(make_settings: Any, sqs_client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: Any) -> None:
    """`cloudq queues ensure APP` creates each registry queue and its DLQ with a RedrivePolicy."""
    settings = make_settings()
    (tmp_path / "ensure_app.py").write_text(
        "import cloudq\napp = cloudq.App('shop')\n"
        "@app.task(name='billing.charge', queue='billing', max_retries=5)\ndef charge(c: str) -> None: ...\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for key, value in {"BROKER": "sqs", "ENDPOINT_URL": settings.endpoint_url, "QUEUE_PREFIX": settings.queue_prefix}.items():
        monkeypatch.setenv(f"CLOUDQ_{key}", str(value))
    assert cli_main(["queues", "ensure", "ensure_app:app"]) == 0
    assert cli_main(["queues", "ensure", "ensure_app:app"]) == 0  # idempotent
    url = sqs_client.get_queue_url(QueueName=f"{settings.queue_prefix}billing")["QueueUrl"]
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    policy = json.loads(attributes["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(f"{settings.queue_prefix}billing-dlq")
    assert policy["maxReceiveCount"] == 8
    assert "billing" in capsys.readouterr().out


def test_missing_queue_is_a_clear_error(app: cloudq.App) -> None:
    """Producing to a queue that does not exist raises QueueNotFound naming it (never creates it)."""

    @app.task(name="t", queue="nowhere")
    def t() -> None: ...

    with pytest.raises(cloudq.QueueNotFound, match="nowhere"):
        t.delay()

"""The Lambda handler end to end on LocalStack, driven by `cloudq lambda-local` (the emulated event source mapping).

LocalStack cannot run Lambda functions here (no Docker), so lambda-local plays the mapping: it receives
from real SQS queues, builds the events Lambda would send, and deletes what the handler did not report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from structlog.contextvars import get_contextvars

import cloudq
from cloudq.runtimes import aws_lambda
from cloudq.errors import Reject
from cloudq.runtimes.lambda_local import EventSourceMapping, LocalStats, md5_of_attributes, sqs_record
from cloudq.queues import plan_queues

from ..aws_calls import AwsCalls

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sqs(localstack_endpoint: str) -> Iterator[Any]:
    client = boto3.client("sqs", endpoint_url=localstack_endpoint, region_name="us-east-1")
    yield client
    client.close()


def make_settings(endpoint: str, prefix: str) -> cloudq.Settings:
    return cloudq.Settings(
        broker="sqs", endpoint_url=endpoint, region="us-east-1", queue_prefix=prefix,
        retry_backoff_s=1, max_retries=3, visibility_timeout_s=30, wait_time_s=1,
    )  # fmt: skip


@pytest.fixture
def app(localstack_endpoint: str, prefix: str, monkeypatch: pytest.MonkeyPatch, aws_calls: AwsCalls) -> Iterator[cloudq.App]:
    """The shop app on its own queues; every client it builds is watched (``aws_calls``)."""
    monkeypatch.setattr(aws_lambda, "configure_logging", lambda *args: None)  # keep the session's logging as it is
    built = cloudq.App("shop", settings=make_settings(localstack_endpoint, prefix))
    for plan in plan_queues(built):
        built.broker.ensure_queue(plan.physical, plan.config)
    yield built
    if "lambda_handler" in built.__dict__:
        built.lambda_handler.close()
    built.close()


def url_of(sqs: Any, name: str) -> str:
    return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every visible message of a queue (for checking a DLQ), left in flight."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]).get("Messages"):
        messages += batch
    return messages


def run_until_invoked(app: cloudq.App, within_s: float) -> LocalStats:
    """lambda-local in burst mode, repeated until one invocation happened (or the time is up)."""
    deadline = time.monotonic() + within_s
    while True:
        stats = EventSourceMapping(app, burst=True, max_batches=1).run()
        if stats.invocations or time.monotonic() > deadline:
            return stats


def test_mixed_batch_only_the_failure_comes_back_and_nothing_is_lost(app: cloudq.App, sqs: Any, prefix: str, aws_calls: AwsCalls) -> None:
    """Successes are deleted, the failure gets its 1 s backoff then succeeds on receive 2, poison lands in the DLQ with reasons."""
    done: list[int] = []
    attempts: list[int] = []

    @app.task(name="shop.ok")
    def ok(i: int) -> None:
        done.append(i)

    @app.task(name="shop.flaky")
    def flaky() -> None:
        attempts.append(get_contextvars()["attempt"])  # ApproximateReceiveCount, as the event carried it
        if len(attempts) == 1:
            raise ValueError("card declined")

    @app.task(name="shop.reject")
    def reject() -> None:
        raise Reject("out of stock")

    url, dlq_url = url_of(sqs, f"{prefix}default"), url_of(sqs, f"{prefix}default-dlq")
    app.registry["shop.ok"].map([(1,), (2,)])
    flaky_id = app.send_task("shop.flaky").message_id
    reject_body = json.dumps({"task": "shop.reject"})
    raw = {reject_body: "rejected", '{"task": "shop.nowhere", "args": []}': "unknown_task", '{"task": "shop.ok", "args": [': "invalid_envelope"}
    for body in raw:
        sqs.send_message(QueueUrl=url, MessageBody=body)

    first = EventSourceMapping(app, batch_size=10, batching_window_s=2, burst=True, max_batches=1).run()
    assert (first.invocations, first.records, first.deleted, first.failed) == (1, 6, 5, [flaky_id])
    assert sorted(done) == [1, 2] and attempts == [1]
    # The failure's visibility was set to its backoff (1 s at attempt 1), not left at the queue's 30 s.
    [backoff] = [e for c in aws_calls.of("ChangeMessageVisibility", "ChangeMessageVisibilityBatch") for e in c.params.get("Entries", [c.params])]
    assert backoff["VisibilityTimeout"] == 1
    stats = app.broker.stats(f"{prefix}default")
    assert (stats.visible, stats.in_flight) == (0, 1)  # the failure is hidden for its backoff, not visible at once

    dead = drain(sqs, dlq_url)
    assert {m["Body"]: m["MessageAttributes"]["cloudq-reason"]["StringValue"] for m in dead} == raw
    assert {m["MessageAttributes"]["cloudq-source-queue"]["StringValue"] for m in dead} == {"default"}

    second = run_until_invoked(app, within_s=20)
    assert (second.records, second.deleted, second.failed) == (1, 1, [])
    assert attempts == [1, 2]
    stats = app.broker.stats(f"{prefix}default")
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)


def test_lambda_local_events_carry_sqs_own_checksums(app: cloudq.App, sqs: Any, prefix: str) -> None:
    """The records lambda-local builds carry the MD5s SQS computed for body and message attributes."""
    url = url_of(sqs, f"{prefix}default")
    attributes = {"tenant": "acme", "cloudq-reason": "x"}
    sent = sqs.send_message(
        QueueUrl=url, MessageBody='{"task":"t"}', MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}
    )
    delivery = app.lambda_handler.run(app.broker.receive(f"{prefix}default", max_messages=1, wait_s=1))[0]
    record = sqs_record(delivery, region="us-east-1")
    assert record["md5OfBody"] == sent["MD5OfMessageBody"]
    assert record["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"] == md5_of_attributes(attributes)
    assert record["eventSourceARN"] == f"arn:aws:sqs:us-east-1:000000000000:{prefix}default"


def test_cli_lambda_local_drains_the_queue(localstack_endpoint: str, prefix: str, tmp_path: Path) -> None:
    """`cloudq lambda-local APP --burst` in its own process runs every job and exits with a summary."""
    (tmp_path / "llapp.py").write_text(
        textwrap.dedent(
            """
            import cloudq

            app = cloudq.App("cli")

            @app.task(name="cli.touch")
            def touch(path: str, n: int) -> None:
                with open(path, "a") as f:
                    f.write(f"{n}\\n")
            """
        )
    )
    env = {
        **os.environ, "CLOUDQ_BROKER": "sqs", "CLOUDQ_ENDPOINT_URL": localstack_endpoint, "CLOUDQ_QUEUE_PREFIX": prefix,
        "CLOUDQ_REGION": "us-east-1", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
    }  # fmt: skip
    producer = cloudq.App("cli", settings=make_settings(localstack_endpoint, prefix))
    for plan in plan_queues(producer):
        producer.broker.ensure_queue(plan.physical, plan.config)
    out = tmp_path / "out.txt"
    producer.send_task("cli.touch", (str(out), 1))
    producer.send_task("cli.touch", (str(out), 2))
    producer.close()
    result = subprocess.run(
        [sys.executable, "-m", "cloudq", "lambda-local", "llapp:app", "--burst", "--batching-window", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"invocations": 1, "records": 2, "deleted": 2, "failed": 0}
    assert sorted(out.read_text().split()) == ["1", "2"]

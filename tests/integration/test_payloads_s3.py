"""Large payloads on LocalStack's SQS and S3, and with AWS's own extended client (amazon-sqs-extended-client).

The extended client runs in a child process: importing it replaces ``boto3.session.Session`` for the
whole interpreter, which would change cloudq's own clients in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

import cloudq
from cloudq.brokers.base import admin_of
from cloudq.cli.ops import dead_letter_record, resolved_letter
from cloudq.payloads import SIZE_ATTRIBUTE, parse_pointer
from cloudq.runtimes.lambda_local import sqs_record
from tests.integration.conftest import ensure_queues, run_worker_until

pytestmark = pytest.mark.integration

MIB = 1024 * 1024

EXTENDED_CLIENT = textwrap.dedent(
    """
    import json, sys
    import boto3
    from sqs_extended_client import SQSExtendedClientSession

    endpoint, mode, queue_url, bucket = sys.argv[1:5]
    session = SQSExtendedClientSession(region_name="us-east-1")
    sqs = session.client("sqs", endpoint_url=endpoint)
    sqs.s3_client = session.client("s3", endpoint_url=endpoint)  # the package builds one without the endpoint
    sqs.large_payload_support = bucket
    sqs.delete_payload_from_s3 = True
    if mode == "send":
        sqs.send_message(QueueUrl=queue_url, MessageBody=sys.stdin.read())
        print(json.dumps({"sent": 1}))
    else:
        got = sqs.receive_message(QueueUrl=queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=5).get("Messages", [])
        for message in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        print(json.dumps({"bodies": [m["Body"] for m in got]}))
    """
)


def extended_client(endpoint: str, mode: str, queue_url: str, bucket: str, stdin: str = "") -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", EXTENDED_CLIENT, endpoint, mode, queue_url, bucket],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture
def s3(localstack_endpoint: str) -> Iterator[Any]:
    client = boto3.client("s3", endpoint_url=localstack_endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def bucket(s3: Any, unique_name: Callable[..., str]) -> Iterator[str]:
    name = unique_name("payloads")
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def app(make_settings: Callable[..., cloudq.Settings], bucket: str) -> Iterator[cloudq.App]:
    built = cloudq.App("big", settings=make_settings(payload_bucket=bucket, max_retries=0))
    built.ran = []  # type: ignore[attr-defined]

    @built.task(name="digest")
    def digest(blob: str) -> None:
        if blob.startswith("fail"):
            raise RuntimeError("cannot digest")
        built.ran.append(len(blob))  # type: ignore[attr-defined]

    ensure_queues(built)
    yield built
    built.close()


async def test_a_2_mib_job_runs_through_the_worker_and_its_object_is_deleted(app: cloudq.App, s3: Any, bucket: str) -> None:
    """One object per job under the prefix while queued; none once the worker has run and deleted it."""
    app.get_task("digest").delay("x" * (2 * MIB))
    [key] = keys(s3, bucket)
    assert key.startswith("cloudq/")
    await run_worker_until(app, lambda w: w.stats.succeeded == 1)
    assert app.ran == [2 * MIB] and keys(s3, bucket) == []  # type: ignore[attr-defined]


async def test_a_dead_letter_keeps_its_object_and_dlq_peek_shows_the_job(app: cloudq.App, s3: Any, bucket: str) -> None:
    """A failed offloaded job goes to the DLQ as its pointer; the object stays and peek resolves it."""
    app.get_task("digest").delay("fail" + "x" * (300 * 1024))
    await run_worker_until(app, lambda w: w.stats.dead_lettered == 1)
    assert len(keys(s3, bucket)) == 1
    admin = admin_of(app.broker)
    [letter] = admin.peek(app.settings.dlq_name("default"), 1)
    assert parse_pointer(letter.body) is not None
    record = dead_letter_record(resolved_letter(letter, app.wire.payloads.resolve))
    assert record["task"] == "digest" and record["reason"] == "max_retries_exceeded" and len(record["args"][0]) == 300 * 1024 + 4


async def test_cloudq_runs_what_the_aws_extended_client_sends(app: cloudq.App, s3: Any, bucket: str, localstack_endpoint: str) -> None:
    """A 2 MiB envelope sent by amazon-sqs-extended-client (its own key, no prefix) runs; its object goes after."""
    url = app.broker.queue_url(app.settings.queue_name("default"))  # type: ignore[attr-defined]
    body = cloudq.Envelope("digest", ("y" * (2 * MIB),)).encode()
    extended_client(localstack_endpoint, "send", url, bucket, body)
    assert len(keys(s3, bucket)) == 1
    await run_worker_until(app, lambda w: w.stats.succeeded == 1)
    assert app.ran == [2 * MIB] and keys(s3, bucket) == []  # type: ignore[attr-defined]


def test_the_aws_extended_client_reads_what_cloudq_sends(app: cloudq.App, s3: Any, bucket: str, localstack_endpoint: str, sqs_client: Any) -> None:
    """cloudq's pointer and ExtendedPayloadSize (Number) are what the extended client resolves and deletes."""
    app.get_task("digest").delay("z" * (2 * MIB))
    url = app.broker.queue_url(app.settings.queue_name("default"))  # type: ignore[attr-defined]
    [raw] = sqs_client.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0).get("Messages", [])
    assert raw["MessageAttributes"][SIZE_ATTRIBUTE]["DataType"] == "Number"
    report = extended_client(localstack_endpoint, "receive", url, bucket)
    [body] = report["bodies"]
    envelope = cloudq.Envelope.decode(body)
    assert envelope.task == "digest" and envelope.args == ("z" * (2 * MIB),)
    assert keys(s3, bucket) == []


def test_a_2_mib_job_through_the_lambda_handler_with_real_records(app: cloudq.App, s3: Any, bucket: str, sqs_client: Any) -> None:
    """In-process handler, records received from LocalStack: the job runs, then its message and its object
    are gone; a record whose object was deleted behind its back is dead-lettered as payload_missing."""
    task = app.get_task("digest")
    task.delay("x" * (2 * MIB))
    task.delay("x" * (400 * 1024))
    handler = app.lambda_handler
    physical = app.settings.queue_name("default")
    try:
        deliveries = handler.run(app.broker.receive(physical, max_messages=10, wait_s=2))
        while len(deliveries) < 2:
            deliveries += handler.run(app.broker.receive(physical, max_messages=10, wait_s=2))
        small = next(d for d in deliveries if int(d.attributes[SIZE_ATTRIBUTE]) < MIB)
        gone = parse_pointer(small.body)
        assert gone is not None
        s3.delete_object(Bucket=gone.bucket, Key=gone.key)
        response = handler({"Records": [sqs_record(d, region="us-east-1") for d in deliveries]}, None)
    finally:
        handler.close()
    assert response == {"batchItemFailures": []} and app.ran == [2 * MIB]  # type: ignore[attr-defined]
    assert keys(s3, bucket) == []
    url = sqs_client.get_queue_url(QueueName=physical)["QueueUrl"]
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    # The succeeded record's message was deleted by the handler (before its object); the dead-lettered
    # one is left for Lambda to delete after the answer, which no Lambda does here.
    assert attributes["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "1"}
    dlq = sqs_client.get_queue_url(QueueName=app.settings.dlq_name("default"))["QueueUrl"]
    [letter] = sqs_client.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"], WaitTimeSeconds=2)["Messages"]
    assert letter["MessageAttributes"]["cloudq-reason"]["StringValue"] == "payload_missing"


def test_without_a_bucket_a_2_mib_job_is_payload_too_large_before_any_call(make_settings: Callable[..., cloudq.Settings]) -> None:
    """No botocore traceback and no SQS call: the producer refuses at enqueue."""
    app = cloudq.App("big", settings=make_settings())

    @app.task(name="digest")
    def digest(blob: str) -> None: ...

    with pytest.raises(cloudq.PayloadTooLarge, match="CLOUDQ_PAYLOAD_BUCKET"):
        digest.delay("x" * (2 * MIB))
    assert app.broker.calls == {}  # type: ignore[attr-defined]
    app.close()

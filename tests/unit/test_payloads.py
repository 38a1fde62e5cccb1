"""Large payloads on the memory broker with the memory payload store: offload, resolve, delete after success."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import cloudq
from cloudq.brokers import sqs_requests as rq
from cloudq.brokers.base import Delivery, OutgoingMessage
from cloudq.brokers.memory import MemoryBroker
from cloudq.cli.ops import dead_letter_record, resolved_letter
from cloudq.payloads import (
    POINTER_CLASS,
    SIZE_ATTRIBUTE,
    SQS_MAX_MESSAGE_BYTES,
    MemoryPayloadStore,
    Payloads,
    Pointer,
    message_size,
    parse_pointer,
    pointer_body,
    resolve_body,
)
from cloudq.runtimes.worker import Worker

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


@pytest.fixture
def store() -> MemoryPayloadStore:
    return MemoryPayloadStore()


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


def make_app(broker: MemoryBroker, store: MemoryPayloadStore, **settings: Any) -> cloudq.App:
    settings = {"broker": "memory", "max_retries": 0, "payload_bucket": "jobs-bucket", **settings}
    app = cloudq.App("big", settings=cloudq.Settings(**settings), broker=broker, payload_store=store)
    app.ran = []  # type: ignore[attr-defined]

    @app.task(name="digest")
    def digest(blob: str) -> int:
        if blob.startswith("fail"):
            raise RuntimeError("cannot digest")
        app.ran.append(len(blob))  # type: ignore[attr-defined]
        return len(blob)

    return app


async def burst(app: cloudq.App) -> Worker:
    worker = Worker(app, burst=True, burst_wait_s=0, burst_retry_wait_s=0)
    await asyncio.wait_for(worker.run(), 10)
    return worker


def test_pointer_body_is_the_extended_clients_format() -> None:
    """The body is the two-element JSON array the AWS extended clients write and read."""
    body = pointer_body(Pointer("b", "cloudq/k"))
    assert json.loads(body) == [POINTER_CLASS, {"s3BucketName": "b", "s3Key": "cloudq/k"}]
    assert parse_pointer(body) == Pointer("b", "cloudq/k")


@pytest.mark.parametrize(
    "body",
    ['{"task": "t"}', "[1, 2]", '["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": ""}]', "[not json PayloadS3Pointer"],
)
def test_other_bodies_are_no_pointers(body: str) -> None:
    """Envelopes, other arrays and malformed pointers are left alone."""
    assert parse_pointer(body) is None


def test_the_legacy_java_pointer_class_is_read() -> None:
    """Messages of the old Java extended client (MessageS3Pointer) resolve too."""
    body = json.dumps(["com.amazon.sqs.javamessaging.MessageS3Pointer", {"s3BucketName": "b", "s3Key": "k"}])
    assert parse_pointer(body) == Pointer("b", "k")


def test_size_counts_the_body_and_each_attributes_name_type_and_value() -> None:
    """As SQS counts against its limit: UTF-8 bytes of the body, plus name + "String" + value per attribute."""
    assert message_size("é", {"ab": "cd"}) == 2 + 2 + 6 + 2


def test_threshold_counts_attributes(store: MemoryPayloadStore) -> None:
    """A body just under the threshold is offloaded when its attributes push it over."""
    payloads = Payloads(cloudq.Settings(payload_bucket="b", payload_threshold_bytes=100), store=store)
    inline = OutgoingMessage("x" * 100)
    over = OutgoingMessage("x" * 95, attributes={"k": "v"})
    out = payloads.offload([inline, over])
    assert out[0] is inline
    assert parse_pointer(out[1].body) is not None and out[1].attributes == {"k": "v", SIZE_ATTRIBUTE: "95"}
    assert len(store.objects) == 1


async def test_a_2_mib_job_runs_through_the_worker_and_its_object_goes_after_its_message(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """2 MiB of arguments: one PUT at enqueue, one GET to run, one DELETE after the message's delete."""
    app = make_app(broker, store)
    order: list[str] = []
    real_ack, real_delete = broker.ack, store.delete

    async def ack(queue: str, deliveries: Any) -> None:
        order.append("message")
        await real_ack(queue, deliveries)

    def delete(pointers: Any) -> None:
        order.append("object")
        real_delete(pointers)

    broker.ack, store.delete = ack, delete  # type: ignore[method-assign]
    app.get_task("digest").delay("x" * (2 * MIB))
    [queued] = broker.peek("default")
    assert len(queued.body) < 300 and queued.attributes[SIZE_ATTRIBUTE] == str(len(store.objects[parse_pointer(queued.body)]))  # type: ignore[index]

    worker = await burst(app)

    assert app.ran == [2 * MIB] and worker.stats.succeeded == 1  # type: ignore[attr-defined]
    assert store.calls == {"put": 1, "get": 1, "delete": 1} and store.objects == {}
    assert order == ["message", "object"] and broker.messages("default") == []


async def test_a_dead_letter_keeps_its_object_and_its_pointer_body(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """The DLQ copy is the pointer body byte for byte, and the object stays for a redrive."""
    app = make_app(broker, store, payload_threshold_bytes=1024)  # small: failures log tracebacks with locals
    app.get_task("digest").delay("fail" + "x" * 2000)
    [sent] = broker.messages("default")
    await burst(app)

    [letter] = broker.peek("default-dlq")
    assert letter.body == sent and len(store.objects) == 1 and "delete" not in store.calls
    assert letter.attributes["cloudq-reason"] == "max_retries_exceeded"


async def test_a_retry_keeps_the_object(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """A job that fails with retries left stays in its queue, and so does its object."""
    app = make_app(broker, store, max_retries=3, payload_threshold_bytes=1024)  # small: failures log tracebacks with locals
    app.get_task("digest").delay("fail" + "x" * 2000)
    worker = await burst(app)
    assert worker.stats.retried == 1 and len(store.objects) == 1 and "delete" not in store.calls


async def test_a_pointer_whose_object_is_gone_is_dead_lettered_as_payload_missing(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """No retry can bring the object back: reason payload_missing, the task never runs."""
    app = make_app(broker, store, max_retries=3)
    broker.send("default", [OutgoingMessage(pointer_body(Pointer("jobs-bucket", "cloudq/gone")), attributes={SIZE_ATTRIBUTE: "9"})])
    await burst(app)
    [letter] = broker.peek("default-dlq")
    assert letter.attributes["cloudq-reason"] == "payload_missing" and app.ran == []  # type: ignore[attr-defined]
    assert "cloudq/gone" in letter.attributes["cloudq-error"]


def test_without_a_bucket_a_job_over_sqs_limit_is_payload_too_large(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """The error names the size, the limit and the setting; nothing is sent."""
    app = make_app(broker, store, payload_bucket=None)
    with pytest.raises(cloudq.PayloadTooLarge) as caught:
        app.get_task("digest").delay("x" * (2 * MIB))
    assert caught.value.limit_bytes == SQS_MAX_MESSAGE_BYTES and caught.value.size_bytes > 2 * MIB
    assert "CLOUDQ_PAYLOAD_BUCKET" in str(caught.value) and str(SQS_MAX_MESSAGE_BYTES) in str(caught.value)
    assert broker.messages("default") == [] and store.objects == {}


def test_without_a_bucket_a_job_under_sqs_limit_goes_inline(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """Above the offload threshold but under SQS's own limit, there is nothing to offload to: sent as is."""
    app = make_app(broker, store, payload_bucket=None)
    app.get_task("digest").delay("x" * (512 * 1024))
    [queued] = broker.peek("default")
    assert parse_pointer(queued.body) is None and store.objects == {}


async def test_map_offloads_the_entries_over_the_threshold_and_batches_stay_under_the_limit(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """.map(): big entries become pointers; SendMessageBatch requests of the rest stay within 256 KiB."""
    app = make_app(broker, store)
    sizes = [100 * 1024, 2 * MIB, 200 * 1024, 10, 300 * 1024, 150 * 1024]
    app.get_task("digest").map([("x" * n,) for n in sizes])
    sent = broker.peek("default", 100)
    assert [parse_pointer(m.body) is not None for m in sent] == [False, True, False, False, True, False]
    messages = [OutgoingMessage(m.body, attributes=m.attributes) for m in sent]
    for _, params in rq.send_requests("default", "url", messages):
        total = sum(message_size(e["MessageBody"], {k: v["StringValue"] for k, v in e.get("MessageAttributes", {}).items()}) for e in params["Entries"])
        assert total <= 262_144
    await burst(app)
    assert sorted(app.ran) == sorted(sizes) and store.objects == {}  # type: ignore[attr-defined]


async def test_async_enqueue_offloads_too(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """adelay writes the object off the event loop, then sends the pointer."""
    app = make_app(broker, store)
    await app.get_task("digest").adelay("x" * MIB)
    [queued] = broker.peek("default")
    assert parse_pointer(queued.body) in store.objects


def test_dlq_peek_shows_the_job_a_pointer_points_to(store: MemoryPayloadStore) -> None:
    """A dead letter's pointer is resolved for display; a missing object leaves the pointer shown."""
    payloads = Payloads(cloudq.Settings(payload_bucket="b"), store=store)
    [message] = payloads.offload([OutgoingMessage(cloudq.Envelope("digest", ("x" * 300_000,)).encode())])
    letter = Delivery("q-dlq", "m1", "", message.body, 1, dict(message.attributes))
    record = dead_letter_record(resolved_letter(letter, payloads.resolve))
    assert record["task"] == "digest" and len(record["args"][0]) == 300_000
    gone = Delivery("q-dlq", "m2", "", pointer_body(Pointer("b", "gone")), 1)
    assert resolved_letter(gone, payloads.resolve) is gone


def test_resolve_body_for_tools(store: MemoryPayloadStore) -> None:
    """The dashboard's entry point: a plain body back as is, a pointer as its object's text."""
    store.put(Pointer("b", "k"), b'{"task": "t"}')
    assert resolve_body('{"task": "u"}') == '{"task": "u"}'
    assert resolve_body(pointer_body(Pointer("b", "k")), store=store) == '{"task": "t"}'
    with pytest.raises(cloudq.PayloadMissing):
        resolve_body(pointer_body(Pointer("b", "nope")), store=store)


def test_sqs_requests_send_the_size_attribute_as_a_number() -> None:
    """ExtendedPayloadSize goes out with DataType Number, as the extended clients send it."""
    [(_, params)] = rq.send_requests("q", "url", [OutgoingMessage("b", attributes={SIZE_ATTRIBUTE: "5", "x": "y"})])
    assert params["MessageAttributes"] == {SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": "5"}, "x": {"DataType": "String", "StringValue": "y"}}


def lambda_record(body: str, attributes: dict[str, str], queue: str = "default") -> dict[str, Any]:
    message_id = f"m-{len(body)}-{id(attributes)}"
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        "messageAttributes": {k: {"stringValue": v, "dataType": "Number"} for k, v in attributes.items()},
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:000000000000:{queue}",
    }


def test_the_lambda_handler_deletes_a_succeeded_message_then_its_object(broker: MemoryBroker, store: MemoryPayloadStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2 MiB job as an SQS record: it runs; the handler deletes the message itself, then the object;
    a failing offloaded record in the same batch keeps its object and is reported."""
    from cloudq.runtimes import aws_lambda

    monkeypatch.setattr(aws_lambda, "configure_logging", lambda *args: None)
    app = make_app(broker, store, max_retries=3, payload_threshold_bytes=1024)
    task = app.get_task("digest")
    task.delay("x" * (2 * MIB))
    task.delay("fail" + "x" * 2000)
    records = [lambda_record(d.body, d.attributes) for d in broker.receive_now("default", 10)]
    handler = app.lambda_handler
    try:
        response = handler({"Records": records}, None)
    finally:
        handler.close()
    assert app.ran == [2 * MIB]  # type: ignore[attr-defined]
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [records[1]["messageId"]]
    assert broker.calls["ack"] == 1 and store.calls.get("delete") == 1 and len(store.objects) == 1
    assert parse_pointer(records[1]["body"]) in store.objects


def test_the_cli_prints_payload_too_large_in_one_line(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`cloudq enqueue` of a 2 MiB argument without a bucket: exit 1 and one line naming the setting, no traceback."""
    from cloudq.cli import main

    monkeypatch.setenv("CLOUDQ_BROKER", "local")
    monkeypatch.setenv("CLOUDQ_LOCAL_PATH", str(tmp_path / "q.db"))
    monkeypatch.delenv("CLOUDQ_PAYLOAD_BUCKET", raising=False)
    code = main(["enqueue", "cloudq.examples.shop:app", "search.update_index", "--args", json.dumps(["x" * (2 * MIB)])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("cloudq: PayloadTooLarge: message of ") and "set CLOUDQ_PAYLOAD_BUCKET" in err[0]


async def test_a_failed_message_delete_keeps_the_objects_of_its_batch(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """The worker's batched delete is refused: the messages come back, so their objects must stay."""
    from cloudq.errors import BrokerError
    from cloudq.runtimes.acks import AckBatcher

    app = make_app(broker, store)
    app.get_task("digest").delay("x" * (300 * 1024))
    [delivery] = broker.receive_now("default", 1)
    pointer = parse_pointer(delivery.body)

    async def refuse(queue: str, deliveries: Any) -> None:
        raise BrokerError("AccessDenied")

    broker.ack = refuse  # type: ignore[method-assign]
    acks = AckBatcher(broker, 0, app.wire.adelete)
    acks.add("default", delivery, pointer)
    await acks.drain()
    assert pointer in store.objects and "delete" not in store.calls


def test_the_dashboard_shows_the_job_a_dead_letters_pointer_points_to(broker: MemoryBroker, store: MemoryPayloadStore) -> None:
    """By default the dashboard resolves S3 pointers through the app's payloads (no resolve_body given)."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from cloudq.dashboard import create_app

    app = make_app(broker, store)
    payloads = Payloads(app.settings, store=store)
    [message] = payloads.offload([OutgoingMessage(cloudq.Envelope("digest", ("from-s3-" + "x" * 300_000,)).encode())])
    broker.send("default-dlq", [message])
    page = TestClient(create_app(app), raise_server_exceptions=False).get("/queues/default/dead-letters")
    assert page.status_code == 200 and "digest" in page.text and "from-s3-" in page.text

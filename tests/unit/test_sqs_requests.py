"""Pure SQS request building and response parsing (no network, no boto3 stubs)."""

from __future__ import annotations

import pytest

from cloudq.brokers import sqs_requests as rq
from cloudq.brokers.base import Delivery, OutgoingMessage, QueueConfig
from cloudq.errors import BrokerError, BrokerUnavailable, ConfigurationError

pytestmark = pytest.mark.unit


def test_one_message_is_one_send_message_call() -> None:
    """A single job costs one SendMessage, like a raw producer."""
    [(op, params)] = rq.send_requests("q", "url", [OutgoingMessage("b", delay_s=5, attributes={"a": "1"})])
    assert op == "send_message" and params["DelaySeconds"] == 5 and params["MessageBody"] == "b"
    assert params["MessageAttributes"] == {"a": {"DataType": "String", "StringValue": "1"}}


def test_many_messages_are_batched_by_ten_and_by_size() -> None:
    """25 small messages make 3 batches; large bodies split batches by the 256 KiB limit."""
    small = rq.send_requests("q", "url", [OutgoingMessage("x")] * 25)
    assert [len(p["Entries"]) for _, p in small] == [10, 10, 5]
    big = rq.send_requests("q", "url", [OutgoingMessage("x" * 100_000)] * 5)
    assert [len(p["Entries"]) for _, p in big] == [2, 2, 1]


def test_fifo_entries_carry_group_and_dedup_and_refuse_delay() -> None:
    """FIFO entries get MessageGroupId/MessageDeduplicationId; a delay is refused."""
    [(_, params)] = rq.send_requests("q.fifo", "url", [OutgoingMessage("b", group_id="g", dedup_id="d")] * 2)
    assert params["Entries"][0]["MessageGroupId"] == "g" and params["Entries"][0]["MessageDeduplicationId"] == "d"
    with pytest.raises(ConfigurationError):
        rq.send_requests("q.fifo", "url", [OutgoingMessage("b", delay_s=1)])
    with pytest.raises(ConfigurationError):
        rq.send_requests("q", "url", [OutgoingMessage("b", group_id="g")])


def test_parse_send_orders_ids_and_raises_on_failed_entries() -> None:
    """Batch results come back in send order; sender faults are errors, others transient."""
    ok = {"Successful": [{"Id": "1", "MessageId": "b"}, {"Id": "0", "MessageId": "a"}]}
    assert rq.parse_send(ok) == ["a", "b"]
    with pytest.raises(BrokerUnavailable):
        rq.parse_send({"Failed": [{"Id": "0", "Code": "InternalError", "SenderFault": False}]})
    with pytest.raises(BrokerError):
        rq.parse_send({"Failed": [{"Id": "0", "Code": "InvalidMessageContents", "SenderFault": True}]})


def test_receive_request_and_parse_messages() -> None:
    """Receive asks for the receive count and all attributes; messages become Deliveries."""
    _, params = rq.receive_request("url", 50, 25, 30)
    assert params["MaxNumberOfMessages"] == 10 and params["WaitTimeSeconds"] == 20 and params["VisibilityTimeout"] == 30
    response = {"Messages": [{
        "MessageId": "m", "ReceiptHandle": "r", "Body": "{}",
        "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1700000000000", "MessageGroupId": "g"},
        "MessageAttributes": {"k": {"StringValue": "v", "DataType": "String"}},
    }]}  # fmt: skip
    [d] = rq.parse_messages("q", response)
    assert (d.message_id, d.receipt, d.receive_count, d.attributes, d.group_id) == ("m", "r", 3, {"k": "v"}, "g")


def test_delete_and_visibility_batches() -> None:
    """Deletes and visibility changes go 10 entries per call."""
    deliveries = [Delivery("q", str(i), f"r{i}", "", 1) for i in range(12)]
    assert [len(p["Entries"]) for _, p in rq.delete_requests("url", deliveries)] == [10, 2]
    [(op, params), _] = rq.change_visibility_requests("url", deliveries, 7)
    assert op == "change_message_visibility_batch" and params["Entries"][0]["VisibilityTimeout"] == 7


def test_queue_attributes_include_redrive_and_encryption() -> None:
    """ensure_queue sets the RedrivePolicy to the DLQ and SSE."""
    attributes = rq.ensure_queue_attributes("q.fifo", QueueConfig(dead_letter_queue="d", max_receive_count=4), "arn:d")
    assert '"maxReceiveCount": 4' in attributes["RedrivePolicy"] and attributes["FifoQueue"] == "true"
    assert attributes["ContentBasedDeduplication"] == "true"  # EventBridge rule targets need it
    assert attributes["SqsManagedSseEnabled"] == "true"

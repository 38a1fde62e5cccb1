"""Pure SQS request builders and response parsers, shared by the boto3 and aioboto3 paths.

Every SQS operation cloudq makes is described here as ``(operation, params)``
pairs plus a parser, so the sync and async transports in :mod:`cloudq.brokers.sqs`
are each a loop of a few lines, and all the logic is unit-testable without I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cloudq.brokers.base import (
    SQS_MAX_BATCH,
    SQS_MAX_DELAY_S,
    Delivery,
    OutgoingMessage,
    QueueConfig,
    QueueStats,
    chunked,
    is_fifo,
)
from cloudq.errors import BrokerError, BrokerUnavailable, ConfigurationError

__all__ = [
    "MoveTask",
    "Request",
    "change_visibility_requests",
    "delete_requests",
    "ensure_queue_attributes",
    "list_move_tasks_request",
    "list_queues_request",
    "parse_batch_result",
    "parse_list_queues",
    "parse_messages",
    "parse_move_task",
    "parse_send",
    "parse_stats",
    "purge_request",
    "queue_arn_request",
    "receive_request",
    "redrive_messages",
    "send_requests",
    "start_move_task_request",
]

Request = tuple[str, dict[str, Any]]

_MAX_BATCH_BYTES = 262_144  # a conservative batch payload limit that every SQS region accepts
# The extended client's payload size attribute is a Number (its readers check the name only); see cloudq.payloads.
_NUMBER_ATTRIBUTES = frozenset({"ExtendedPayloadSize", "SQSLargePayloadSize"})
_DATA_TYPE_BYTES = len("String")
_RECEIVE_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId", "AWSTraceHeader"]


def _entry(index: int, message: OutgoingMessage, fifo: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": message.body}
    if fifo:
        if message.delay_s:
            raise ConfigurationError("FIFO queues take no per-message delay; set DelaySeconds on the queue")
        entry["MessageGroupId"] = message.group_id or "default"
        if message.dedup_id:
            entry["MessageDeduplicationId"] = message.dedup_id
    else:
        if message.group_id or message.dedup_id:
            raise ConfigurationError("group_id and dedup_id apply only to FIFO queues (names ending .fifo)")
        if not 0 <= message.delay_s <= SQS_MAX_DELAY_S:
            raise ConfigurationError(f"SQS delay must be 0..{SQS_MAX_DELAY_S} s, got {message.delay_s}")
        if message.delay_s:
            entry["DelaySeconds"] = int(message.delay_s)
    if message.attributes:
        entry["MessageAttributes"] = {
            key: {"DataType": "Number" if key in _NUMBER_ATTRIBUTES else "String", "StringValue": value}
            for key, value in message.attributes.items()
        }
    return entry


def _batches(messages: Sequence[OutgoingMessage]) -> list[list[tuple[int, OutgoingMessage]]]:
    """Group messages into batches of at most 10 entries and 256 KiB, keeping order."""
    batches: list[list[tuple[int, OutgoingMessage]]] = [[]]
    size = 0
    for index, message in enumerate(messages):
        # as SQS counts a message against the batch limit: body, and each attribute's name, type and value
        weight = len(message.body.encode()) + sum(len(k.encode()) + len(v.encode()) + _DATA_TYPE_BYTES for k, v in message.attributes.items())
        if batches[-1] and (len(batches[-1]) == SQS_MAX_BATCH or size + weight > _MAX_BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append((index, message))
        size += weight
    return [b for b in batches if b]


def send_requests(queue: str, url: str, messages: Sequence[OutgoingMessage]) -> list[Request]:
    """One SendMessage for a single message (what a raw producer would do), batches otherwise."""
    fifo = is_fifo(queue)
    if len(messages) == 1:
        entry = _entry(0, messages[0], fifo)
        entry.pop("Id")
        return [("send_message", {"QueueUrl": url, **entry})]
    return [
        ("send_message_batch", {"QueueUrl": url, "Entries": [_entry(i, m, fifo) for i, m in batch]})
        for batch in _batches(messages)
    ]


def parse_send(response: dict[str, Any]) -> list[str]:
    """Message ids in the order sent; any failed entry raises (transient ones as BrokerUnavailable)."""
    if "MessageId" in response:
        return [response["MessageId"]]
    failed = response.get("Failed") or []
    if failed:
        sender_fault = any(f.get("SenderFault") for f in failed)
        detail = "; ".join(f"{f.get('Code')}: {f.get('Message', '')}" for f in failed)
        raise (BrokerError if sender_fault else BrokerUnavailable)(f"SendMessageBatch failed for {len(failed)} entries: {detail}")
    ok = sorted(response.get("Successful") or [], key=lambda e: int(e["Id"]))
    return [e["MessageId"] for e in ok]


def receive_request(url: str, max_messages: int, wait_s: float, visibility_timeout_s: int | None) -> Request:
    params: dict[str, Any] = {
        "QueueUrl": url,
        "MaxNumberOfMessages": max(1, min(SQS_MAX_BATCH, max_messages)),
        "WaitTimeSeconds": max(0, min(20, int(wait_s))),
        "MessageSystemAttributeNames": _RECEIVE_SYSTEM_ATTRIBUTES,
        "MessageAttributeNames": ["All"],
    }
    if visibility_timeout_s is not None:
        params["VisibilityTimeout"] = visibility_timeout_s
    return ("receive_message", params)


def parse_messages(queue: str, response: dict[str, Any]) -> list[Delivery]:
    deliveries = []
    for message in response.get("Messages") or []:
        system = message.get("Attributes") or {}
        sent_ms = system.get("SentTimestamp")
        deliveries.append(
            Delivery(
                queue=queue,
                message_id=message["MessageId"],
                receipt=message["ReceiptHandle"],
                body=message.get("Body", ""),
                receive_count=int(system.get("ApproximateReceiveCount", 1)),
                attributes={
                    key: value.get("StringValue", "")
                    for key, value in (message.get("MessageAttributes") or {}).items()
                },
                sent_at=datetime.fromtimestamp(int(sent_ms) / 1000, timezone.utc) if sent_ms else None,
                group_id=system.get("MessageGroupId"),
                aws_trace_header=system.get("AWSTraceHeader"),
            )
        )
    return deliveries


def delete_requests(url: str, deliveries: Sequence[Delivery]) -> list[Request]:
    return [
        (
            "delete_message_batch",
            {"QueueUrl": url, "Entries": [{"Id": str(i), "ReceiptHandle": d.receipt} for i, d in enumerate(batch)]},
        )
        for batch in chunked(deliveries)
    ]


def change_visibility_requests(url: str, deliveries: Sequence[Delivery], timeout_s: int) -> list[Request]:
    return [
        (
            "change_message_visibility_batch",
            {
                "QueueUrl": url,
                "Entries": [
                    {"Id": str(i), "ReceiptHandle": d.receipt, "VisibilityTimeout": int(timeout_s)}
                    for i, d in enumerate(batch)
                ],
            },
        )
        for batch in chunked(deliveries)
    ]


def parse_batch_result(response: dict[str, Any]) -> list[str]:
    """Failures of a delete/visibility batch, as readable strings (the caller logs them)."""
    return [f"{f.get('Code')}: {f.get('Message', '')}" for f in response.get("Failed") or []]


def ensure_queue_attributes(queue: str, config: QueueConfig, dlq_arn: str | None) -> dict[str, str]:
    import json

    attributes = {
        "VisibilityTimeout": str(config.visibility_timeout_s),
        "MessageRetentionPeriod": str(config.retention_s),
        "SqsManagedSseEnabled": "true",
    }
    if is_fifo(queue):
        attributes["FifoQueue"] = "true"
        # EventBridge targets (periodic tasks) send without a dedup id and need content-based dedup;
        # cloudq's own sends always carry an explicit MessageDeduplicationId, which takes precedence.
        attributes["ContentBasedDeduplication"] = "true"
    if dlq_arn:
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": config.max_receive_count}
        )
    return attributes


def parse_stats(queue: str, attributes: dict[str, str]) -> QueueStats:
    return QueueStats(
        queue,
        True,
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


# -- admin: DLQ redrive, peek and purge (the ops CLI) --------------------------------------------
@dataclass(frozen=True, slots=True)
class MoveTask:
    """One message move task as ListMessageMoveTasks reports it."""

    status: str  # RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED
    moved: int
    to_move: int | None
    failure: str | None = None

    @property
    def finished(self) -> bool:
        return self.status not in ("RUNNING", "CANCELLING")


def queue_arn_request(url: str) -> Request:
    return ("get_queue_attributes", {"QueueUrl": url, "AttributeNames": ["QueueArn"]})


def start_move_task_request(source_arn: str, destination_arn: str) -> Request:
    """A DLQ redrive: SQS moves every message of ``source_arn`` (a DLQ), at its own pace
    (no MaxNumberOfMessagesPerSecond), with no count limit."""
    return ("start_message_move_task", {"SourceArn": source_arn, "DestinationArn": destination_arn})


def list_move_tasks_request(source_arn: str) -> Request:
    return ("list_message_move_tasks", {"SourceArn": source_arn, "MaxResults": 10})


def parse_move_task(response: dict[str, Any], handle: str) -> MoveTask | None:
    """Our task among the source's most recent ones (newest first).

    SQS drops the TaskHandle once a task has finished, and a source has one task at a time,
    so a result without our handle is taken to be ours only when it is the newest.
    """
    results = response.get("Results") or []
    ours = next((r for r in results if r.get("TaskHandle") == handle), None)
    if ours is None and results and "TaskHandle" not in results[0]:
        ours = results[0]
    if ours is None:
        return None
    to_move = ours.get("ApproximateNumberOfMessagesToMove")
    return MoveTask(
        status=str(ours.get("Status", "RUNNING")),
        moved=int(ours.get("ApproximateNumberOfMessagesMoved", 0)),
        to_move=int(to_move) if to_move is not None else None,
        failure=ours.get("FailureReason"),
    )


def redrive_messages(destination: str, deliveries: Sequence[Delivery]) -> list[OutgoingMessage]:
    """Copies of dead letters for ``destination``: same body and attributes (the recorded reason).

    On FIFO the group is kept, and the dedup id is derived from the receipt, so a copy is never
    mistaken for an earlier redrive of the same message id (SQS's own DLQ move keeps the id).
    """
    fifo = is_fifo(destination)
    return [
        OutgoingMessage(
            d.body,
            group_id=(d.group_id or "default") if fifo else None,
            dedup_id=hashlib.sha256(d.receipt.encode()).hexdigest() if fifo else None,
            attributes=dict(d.attributes),
        )
        for d in deliveries
    ]


def list_queues_request(prefix: str, token: str | None) -> Request:
    """One page of ListQueues (1000 names, the most SQS returns); an empty prefix lists every queue."""
    params: dict[str, Any] = {"MaxResults": 1000}
    if prefix:
        params["QueueNamePrefix"] = prefix
    if token:
        params["NextToken"] = token
    return ("list_queues", params)


def parse_list_queues(response: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """Queue name -> URL of one ListQueues page (the name is the URL's last segment), and the next token."""
    urls = response.get("QueueUrls", [])
    return {url.rstrip("/").rsplit("/", 1)[-1]: url for url in urls}, response.get("NextToken") or None


def purge_request(url: str) -> Request:
    return ("purge_queue", {"QueueUrl": url})

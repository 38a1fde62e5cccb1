"""``cloudq lambda-local``: the SQS event source mapping, emulated on a developer machine.

LocalStack cannot run Lambda functions without Docker, and a handler tested only with hand-made
events can still disagree with what AWS sends. So this module plays the part of the mapping: it
polls the app's queues through the app's broker (SQS, LocalStack, the local or the memory broker),
gathers a batch as the mapping does (``batch_size``, ``batching_window_s``), builds the event in
exactly the shape Lambda sends, calls ``app.lambda_handler`` with a context object that has the
runtime's attributes and methods, and then deletes the records the answer does not list in
``batchItemFailures``. Failed records are left alone: the handler already set their visibility
(a retry's backoff), or they come back when the visibility timeout ends.

As on AWS, an invocation that raises, answers something that is not a valid partial-batch
response, or runs past ``timeout_s`` fails as a whole: nothing of its batch is deleted.

Polling runs on the handler's own event loop, so the aioboto3 client the handler uses to change
visibility is the same one that received the messages.

``burst`` ends at the first round of polls that finds no visible message, once no failed record is
still expected back within ``burst_retry_wait_s`` (60 s; a retry's backoff): those are waited for
and run. Records still out then are made visible again, so a burst never strands a job. A run cut
short by ``max_batches`` leaves a retry's backoff alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import struct
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cloudq.brokers.base import SQS_MAX_BATCH, Delivery, is_fifo
from cloudq.errors import BrokerError, ConfigurationError
from cloudq.logs import get_logger

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.runtimes.aws_lambda import LambdaHandler

__all__ = ["EventSourceMapping", "LocalContext", "LocalStats", "sqs_event", "sqs_record"]

logger = get_logger("cloudq.lambda_local")

LOCAL_ACCOUNT_ID = "000000000000"  # LocalStack's account; ARNs only need to parse like AWS's
LOCAL_SENDER_ID = "AIDAIENQZJOLO23YVJ4VO"  # the IAM user id in AWS's example SQS event
MAX_BATCH_SIZE = 10_000
MAX_FIFO_BATCH_SIZE = 10
MAX_BATCHING_WINDOW_S = 300


@dataclass
class LocalContext:
    """The attributes and methods of the Python runtime's context object, with a real clock."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float  # time.monotonic() at which the invocation times out
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def make_context(function_name: str, region: str, timeout_s: float, memory_mb: int = 128) -> LocalContext:
    """A fresh context per invocation, as the runtime gives one."""
    today = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    return LocalContext(
        function_name=function_name,
        invoked_function_arn=f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{function_name}",
        memory_limit_in_mb=memory_mb,
        aws_request_id=str(uuid.uuid4()),
        log_group_name=f"/aws/lambda/{function_name}",
        log_stream_name=f"{today}/[$LATEST]{uuid.uuid4().hex}",
        deadline=time.monotonic() + timeout_s,
    )


# -- the event, as Lambda builds it ------------------------------------------------------------
def md5_of_attributes(attributes: Mapping[str, str]) -> str:
    """SQS's MD5OfMessageAttributes: length-prefixed name, type, transport 1 (string) and value, sorted."""
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        for part in (name.encode(), b"String"):
            digest.update(struct.pack(">I", len(part)) + part)
        value = attributes[name].encode()
        digest.update(b"\x01" + struct.pack(">I", len(value)) + value)
    return digest.hexdigest()


def _ms(moment: datetime | None) -> str:
    return str(int((moment or datetime.now(timezone.utc)).timestamp() * 1000))


def sqs_record(delivery: Delivery, *, region: str, account_id: str = LOCAL_ACCOUNT_ID) -> dict[str, Any]:
    """One record of an SQS event, in the shape (and key order) Lambda sends."""
    attributes = {
        "ApproximateReceiveCount": str(delivery.receive_count),
        "SentTimestamp": _ms(delivery.sent_at),
        "SenderId": LOCAL_SENDER_ID,
        "ApproximateFirstReceiveTimestamp": _ms(None),
    }
    if delivery.aws_trace_header:
        attributes["AWSTraceHeader"] = delivery.aws_trace_header
    if is_fifo(delivery.queue):
        attributes["MessageGroupId"] = delivery.group_id or "default"
    record: dict[str, Any] = {
        "messageId": delivery.message_id,
        "receiptHandle": delivery.receipt,
        "body": delivery.body,
        "attributes": attributes,
        "messageAttributes": {
            name: {"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}
            for name, value in delivery.attributes.items()
        },
        "md5OfBody": hashlib.md5(delivery.body.encode(), usedforsecurity=False).hexdigest(),
    }
    if delivery.attributes:
        record["md5OfMessageAttributes"] = md5_of_attributes(delivery.attributes)
    record |= {
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{region}:{account_id}:{delivery.queue}",
        "awsRegion": region,
    }
    return record


def sqs_event(deliveries: Sequence[Delivery], *, region: str) -> dict[str, Any]:
    return {"Records": [sqs_record(d, region=region) for d in deliveries]}


def failed_ids(response: Any, deliveries: Sequence[Delivery]) -> set[str] | None:
    """The message ids to keep; None when the answer is invalid, which fails the whole batch on AWS."""
    if not isinstance(response, Mapping):
        return None
    failures = response.get("batchItemFailures") or []
    known = {d.message_id for d in deliveries}
    if not isinstance(failures, list):
        return None
    ids = {f.get("itemIdentifier") if isinstance(f, Mapping) else None for f in failures}
    return {str(i) for i in ids} if ids <= known else None


def _on_signal(loop: asyncio.AbstractEventLoop, sig: signal.Signals, callback: Any) -> bool:
    """Run ``callback`` on ``sig`` (the loop's handler); False where that is impossible (not the main thread)."""
    try:
        loop.add_signal_handler(sig, callback)
    except (ValueError, RuntimeError, NotImplementedError):
        return False
    return True


# -- the mapping -------------------------------------------------------------------------------
@dataclass
class LocalStats:
    invocations: int = 0
    records: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"invocations": self.invocations, "records": self.records, "deleted": self.deleted, "failed": len(self.failed)}


class EventSourceMapping:
    """Poll ``queues`` (logical; default: every registry queue) and invoke the app's handler.

    ``burst``: stop at the first round of polls that finds no visible message. ``max_batches``:
    stop after that many invocations. ``timeout_s`` is the function timeout the context counts down.
    """

    def __init__(
        self,
        app: App,
        queues: Sequence[str] | None = None,
        *,
        batch_size: int = 10,
        batching_window_s: float = 0,
        timeout_s: float = 30,
        burst: bool = False,
        max_batches: int | None = None,
        function_name: str | None = None,
        burst_retry_wait_s: float = 60.0,
    ) -> None:
        self.app = app
        self.queues = list(queues or app.queues())
        self.batch_size = batch_size
        self.batching_window_s = batching_window_s
        self.timeout_s = timeout_s
        self.burst = burst
        self.max_batches = max_batches
        self.function_name = function_name or f"{app.name}-cloudq"
        self.region = app.settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.burst_retry_wait_s = burst_retry_wait_s
        self.stats = LocalStats()
        # Records the handler failed and that have not come back yet: message id -> (delivery, failed at).
        self._out: dict[str, tuple[Delivery, float]] = {}
        self._stopping = False
        self._polling: asyncio.Task[list[Delivery]] | None = None
        self._validate()

    def _validate(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigurationError(f"batch size must be 1..{MAX_BATCH_SIZE}, got {self.batch_size}")
        if any(is_fifo(q) for q in self.queues) and self.batch_size > MAX_FIFO_BATCH_SIZE:
            raise ConfigurationError(f"Lambda takes at most {MAX_FIFO_BATCH_SIZE} records per batch from a FIFO queue")
        if not 0 <= self.batching_window_s <= MAX_BATCHING_WINDOW_S:
            raise ConfigurationError(f"batching window must be 0..{MAX_BATCHING_WINDOW_S} s, got {self.batching_window_s}")
        if self.timeout_s <= 0 or (self.max_batches is not None and self.max_batches < 1):
            raise ConfigurationError("timeout must be > 0 seconds and max batches >= 1")

    def run(self) -> LocalStats:
        """Poll and invoke until burst finds nothing, ``max_batches`` is reached, SIGTERM, or Ctrl-C."""
        handler = self.app.lambda_handler
        wait_s = 1.0 if self.burst or len(self.queues) > 1 else float(self.app.settings.wait_time_s)
        logger.info("lambda_local.started", queues=self.queues, batch_size=self.batch_size, burst=self.burst)
        sigterm = _on_signal(handler.loop, signal.SIGTERM, self.stop)
        try:
            while not self._done():
                found = False
                for queue in self.queues:
                    if self._done():
                        break
                    physical = self.app.settings.queue_name(queue)
                    deliveries = self._poll(handler, physical, wait_s)
                    if deliveries:
                        found = True
                        for delivery in deliveries:
                            self._out.pop(delivery.message_id, None)
                        self._invoke(handler, physical, deliveries)
                if self.burst and not found and not self._expecting():
                    handler.run(self._release_out())
                    break
        finally:
            if sigterm:
                handler.loop.remove_signal_handler(signal.SIGTERM)
            # clients are rebuilt on next use; the loop stays for the handler. A receive cancelled by a
            # stop gives back what it took while the broker closes (see SqsBroker.receive).
            handler.run(self.app.aclose())
            logger.info("lambda_local.stopped", **self.stats.as_dict())
        return self.stats

    def _expecting(self) -> bool:
        """Whether a failed record may still come back within the burst's bound."""
        horizon = time.monotonic() - self.burst_retry_wait_s
        return any(failed_at > horizon for _, failed_at in self._out.values())

    async def _release_out(self) -> None:
        """Make the failed records not yet back visible again, so that the burst leaves none in flight."""
        by_queue: dict[str, list[Delivery]] = {}
        for delivery, _ in self._out.values():
            by_queue.setdefault(delivery.queue, []).append(delivery)
        self._out.clear()
        for queue, deliveries in by_queue.items():
            try:
                await self.app.broker.change_visibility(queue, deliveries, 0)
                logger.info("lambda_local.retries_released", queue=queue, count=len(deliveries))
            except BrokerError as exc:
                logger.warning("lambda_local.release_failed", queue=queue, count=len(deliveries), error=str(exc))

    def stop(self) -> None:
        """End the run (SIGTERM): a poll in flight is cancelled, and what its receives took is given back."""
        self._stopping = True
        if self._polling is not None:
            self._polling.cancel()

    def _done(self) -> bool:
        return self._stopping or (self.max_batches is not None and self.stats.invocations >= self.max_batches)

    def _poll(self, handler: LambdaHandler, physical: str, wait_s: float) -> list[Delivery]:
        self._polling = handler.loop.create_task(self._collect(physical, wait_s))
        try:
            return handler.run(self._polling)
        except asyncio.CancelledError:
            return []
        finally:
            self._polling = None

    async def _collect(self, physical: str, wait_s: float) -> list[Delivery]:
        """One long poll; with messages, keep polling until the batch is full or the window closes."""
        broker = self.app.broker
        got = await broker.receive(physical, max_messages=min(SQS_MAX_BATCH, self.batch_size), wait_s=wait_s)
        window_ends = time.monotonic() + self.batching_window_s
        try:
            while got and len(got) < self.batch_size and (left := window_ends - time.monotonic()) > 0:
                wanted = min(SQS_MAX_BATCH, self.batch_size - len(got))
                got += await broker.receive(physical, max_messages=wanted, wait_s=min(20.0, max(1.0, left)))
        except asyncio.CancelledError:
            if got:  # stopped while the batching window was open: what it gathered becomes visible now
                await asyncio.shield(broker.change_visibility(physical, got, 0))
            raise
        return got

    def _invoke(self, handler: LambdaHandler, physical: str, deliveries: list[Delivery]) -> None:
        """One invocation, then the mapping's part: delete what did not fail."""
        context = make_context(self.function_name, self.region, self.timeout_s)
        self.stats.invocations += 1
        self.stats.records += len(deliveries)
        try:
            response = handler(sqs_event(deliveries, region=self.region), context)
            failed = failed_ids(response, deliveries)
        except Exception as exc:  # noqa: BLE001 - Lambda records the error and keeps the whole batch
            logger.error("lambda_local.invocation_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            failed = None
        if failed is not None and context.get_remaining_time_in_millis() <= 0:
            logger.error("lambda_local.timed_out", timeout_s=self.timeout_s, aws_request_id=context.aws_request_id)
            failed = None
        keep = {d.message_id for d in deliveries} if failed is None else failed
        self.stats.failed += [d.message_id for d in deliveries if d.message_id in keep]
        now = time.monotonic()
        self._out.update((d.message_id, (d, now)) for d in deliveries if d.message_id in keep)
        done = [d for d in deliveries if d.message_id not in keep]
        try:
            handler.run(self.app.broker.ack(physical, done))
            self.stats.deleted += len(done)
        except BrokerError as exc:
            logger.error("lambda_local.delete_failed", queue=physical, count=len(done), error=str(exc))

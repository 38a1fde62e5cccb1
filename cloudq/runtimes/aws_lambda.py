"""The AWS Lambda consumer: ``handler = app.lambda_handler`` runs the same tasks as the worker.

Two ways in:

* **SQS event source mapping** (``Records`` with ``eventSource: aws:sqs``). Every record becomes the
  :class:`~cloudq.brokers.base.Delivery` the worker would have received and goes through the same
  consumer core (:meth:`cloudq.consumer.Consumer.process`): run, then its fate carried out. The answer is the partial-batch contract (the mapping needs ``ReportBatchItemFailures``):
  ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}`` lists the records SQS must keep.

  ========== ========================================================= =========================
  outcome    what the handler does                                     reported as
  ========== ========================================================= =========================
  ack        nothing (offloaded: delete message, then S3 object)      success (Lambda deletes)
  retry      ChangeMessageVisibility to the backoff                    failure (SQS redelivers)
  dead_letter send the body to the DLQ with the reason attributes      success
  reschedule re-send with the rest of the ETA delay                    success
  ========== ========================================================= =========================

  A settle call that fails turns the record into a failure, so SQS keeps it (never lost): the
  consumer core's one policy, the worker's too. Records of a
  FIFO message group run one after another; once one fails, the rest of its group is reported failed
  without running (and kept out of sight as long as the failed one), so the group keeps its order.
  Other records run concurrently, up to ``settings.concurrency``: async tasks on the loop, sync ones
  on a thread pool of that size.

* **EventBridge invoking the function directly** (no queue). A scheduled rule whose constant Input
  is an envelope (the event has a ``"task"`` key) runs that job. A pattern-rule event (``source``,
  ``detail-type``, ``detail``) runs every task registered for it with ``app.on_event``; such a task
  is called with one argument, the whole event dict. There is no batch here, so the answer is
  ``{"ok": true, "results": [...]}``. A task that fails with a retryable error makes the handler
  raise :class:`EventFailed`, so that Lambda's own retry for asynchronous invocations (up to 2 more
  attempts) and its on-failure destination or DLQ apply; the task's ``max_retries`` does not. Poison
  (Reject, unknown task, bad envelope or arguments) is not raised, because a retry cannot help: the
  answer says ``"ok": false`` with the reason. An event of any other shape gets an error answer.

Time: before starting each record, the handler asks ``context.get_remaining_time_in_millis()``;
below ``min_remaining_ms`` it starts nothing more and reports the unstarted records as failures (they
come back after the mapping's visibility timeout) rather than being cut off half-done by the timeout.
Records still running when only a quarter of that margin is left are reported as failures too, and
the handler answers: a timeout would fail the whole batch, re-running the records that succeeded.

Inside the Lambda runtime (``AWS_LAMBDA_FUNCTION_NAME`` set) the app's SQS broker settles records
through boto3 in threads (:class:`~cloudq.brokers.sqs.SqsBroker` ``async_io="threads"``, chosen by
the App): the first failed record of a cold start then pays no aioboto3/aiohttp import.
``lambda-local`` keeps aioboto3, since it long-polls through the same broker.

One event loop per process, kept on the handler and reused by warm invocations: ``asyncio.run`` per
invocation would close the loop and with it every aioboto3 client bound to it. Logging is configured
once, when the handler is built (JSON unless ``CLOUDQ_LOG_FORMAT`` says otherwise); each invocation
starts from a clear log context (:func:`cloudq.logs.clear_context`) and binds ``aws_request_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cloudq.brokers.base import Delivery, is_fifo
from cloudq.brokers.blocking import DaemonThreads
from cloudq.errors import CloudQError
from cloudq.logs import bind_context, clear_context, configure_logging, get_logger

if TYPE_CHECKING:
    from cloudq.consumer import Consumer
    from cloudq.payloads import Pointer
    from cloudq.settings import Settings
    from cloudq.settings_env import EnvSettings
    from cloudq.tasks import Registry

__all__ = ["EventFailed", "HandlerApp", "LambdaContext", "LambdaHandler", "delivery_from_record", "event_kind"]

logger = get_logger("cloudq.lambda")

T = TypeVar("T")

EVENTBRIDGE_QUEUE = "eventbridge"  # the `queue` of direct invocations in logs and dead-letter reasons
MIN_REMAINING_FLOOR_MS = 2000


class EventFailed(CloudQError):
    """A directly invoked (EventBridge) job failed and may be retried: raised so Lambda retries it."""


class LambdaContext(Protocol):
    """What the handler reads from the Lambda runtime's context object."""

    aws_request_id: str

    def get_remaining_time_in_millis(self) -> int: ...


class HandlerApp(Protocol):
    """What the handler needs of a :class:`cloudq.App` (typed here so this module never imports it)."""

    registry: Registry

    @property
    def settings(self) -> Settings | EnvSettings: ...

    @property
    def consumer(self) -> Consumer: ...

    async def aclose(self) -> None: ...


# -- pure helpers ------------------------------------------------------------------------------
def event_kind(event: Any) -> str:
    """``sqs``, ``envelope`` (a scheduled rule's constant Input), ``eventbridge`` or ``unknown``."""
    if not isinstance(event, Mapping):
        return "unknown"
    records = event.get("Records")
    if isinstance(records, list):
        sqs = all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)
        return "sqs" if sqs else "unknown"
    if "task" in event:
        return "envelope"
    if {"source", "detail-type", "detail"} <= event.keys():
        return "eventbridge"
    return "unknown"


def delivery_from_record(record: Mapping[str, Any]) -> Delivery:
    """The Delivery the worker would have received, so that execute() cannot tell Lambda from ECS.

    ``queue`` is the physical queue name, the last segment of ``eventSourceARN``.
    """
    system = record.get("attributes") or {}
    sent_ms = system.get("SentTimestamp")
    return Delivery(
        queue=str(record["eventSourceARN"]).rsplit(":", 1)[-1],
        message_id=str(record["messageId"]),
        receipt=str(record["receiptHandle"]),
        body=str(record.get("body") or ""),
        receive_count=int(system.get("ApproximateReceiveCount", 1)),
        attributes={
            name: str(value["stringValue"])
            for name, value in (record.get("messageAttributes") or {}).items()
            if isinstance(value, Mapping) and value.get("stringValue") is not None
        },
        sent_at=datetime.fromtimestamp(int(sent_ms) / 1000, timezone.utc) if sent_ms else None,
        group_id=system.get("MessageGroupId"),
        aws_trace_header=system.get("AWSTraceHeader"),
    )


def logical_queue(physical: str, prefix: str) -> str:
    """Undo ``settings.queue_prefix``; a queue outside the prefix keeps its own name."""
    return physical[len(prefix) :] if prefix and physical.startswith(prefix) else physical


def fifo_chains(records: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Records that must run in order: each FIFO message group in event order; any other record alone."""
    chains: dict[object, list[Mapping[str, Any]]] = {}
    for index, record in enumerate(records):
        arn = str(record.get("eventSourceARN", ""))
        group = (record.get("attributes") or {}).get("MessageGroupId")
        key: object = (arn, group) if is_fifo(arn) and group is not None else index
        chains.setdefault(key, []).append(record)
    return list(chains.values())


@dataclass(frozen=True, slots=True)
class RecordResult:
    """How one record ended; ``delay_s`` is the visibility a retried record was given, ``skipped``
    why a record did not run (``out_of_time``, ``fifo_group_failed``)."""

    message_id: str
    ok: bool
    delay_s: int | None = None
    skipped: str | None = None
    payload: Pointer | None = None


def _skipped(record: Mapping[str, Any], why: str) -> RecordResult:
    return RecordResult(str(record.get("messageId", "")), ok=False, skipped=why)


class _Deadline:
    """Whether there is still time to start a record (remaining time above ``margin_ms``), and how
    long running records may still take (until ``cutoff_ms`` remain, a quarter of the margin)."""

    def __init__(self, context: LambdaContext | None, min_remaining_ms: int | None) -> None:
        self._remaining = getattr(context, "get_remaining_time_in_millis", None)
        self.margin_ms = self.cutoff_ms = 0
        if self._remaining is not None:
            self.margin_ms = min_remaining_ms if min_remaining_ms is not None else max(MIN_REMAINING_FLOOR_MS, self._remaining() // 10)
            self.cutoff_ms = self.margin_ms // 4

    def remaining_ms(self) -> int | None:
        return None if self._remaining is None else int(self._remaining())

    def passed(self) -> bool:
        remaining = self.remaining_ms()
        return remaining is not None and remaining < self.margin_ms

    def wait_s(self) -> float | None:
        """Seconds running records may still take; None without a context (no limit)."""
        remaining = self.remaining_ms()
        return None if remaining is None else max(0.0, (remaining - self.cutoff_ms) / 1000)


# -- the handler -------------------------------------------------------------------------------
class LambdaHandler:
    """``(event, context) -> dict`` for AWS Lambda; ``app.lambda_handler`` builds one per process.

    ``min_remaining_ms``: no record starts with less time than this left. The default is 10% of the
    time left when the invocation begins (about the function timeout), at least 2 s: a record
    started later would likely be killed half-done by the timeout, taking the whole batch with it.
    ``configure_logs=False`` leaves structlog as the caller set it up.
    """

    def __init__(self, app: HandlerApp, *, min_remaining_ms: int | None = None, configure_logs: bool = True) -> None:
        self.app = app
        self.min_remaining_ms = min_remaining_ms
        self.concurrency = app.settings.concurrency
        self.loop = asyncio.new_event_loop()
        self._threads = DaemonThreads(self.concurrency, "cloudq-task", skip_cancelled=True)
        if configure_logs:
            fmt = "json" if app.settings.log_format == "auto" else app.settings.log_format
            configure_logging(fmt, app.settings.log_level)

    def __call__(self, event: Any, context: LambdaContext | None = None) -> dict[str, Any]:
        # A fresh contextvars context per invocation: no log context of the last invocation leaks
        # in, and none of this one leaks out into the caller (lambda-local, a user's test).
        try:
            return contextvars.Context().run(self._invoke, event, context)
        finally:
            metrics = getattr(self.app, "metrics", None)
            if metrics is not None:
                metrics.flush()  # EMF: once per invocation, before the answer (a frozen sandbox writes nothing later)

    def _invoke(self, event: Any, context: LambdaContext | None) -> dict[str, Any]:
        clear_context()
        request_id = getattr(context, "aws_request_id", None)
        if request_id:
            bind_context(aws_request_id=request_id)
        kind = event_kind(event)
        if kind == "sqs":
            return self.run(self._handle_sqs(event["Records"], context))
        if kind == "unknown":
            keys = sorted(map(str, event))[:20] if isinstance(event, Mapping) else type(event).__name__
            logger.error("lambda.unknown_event", keys=keys)
            return {"ok": False, "error": "unrecognised event: expected SQS Records, a cloudq envelope or an EventBridge event"}
        return self.run(self._handle_direct(event, kind, request_id or uuid.uuid4().hex))

    def run(self, awaitable: Awaitable[T]) -> T:
        """Drive ``awaitable`` on the handler's long-lived loop (lambda-local polls through it too)."""
        return self.loop.run_until_complete(awaitable)

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def close(self) -> None:
        """Release the broker's clients, the threads and the loop (tests, lambda-local; Lambda never
        calls it). The next ``app.lambda_handler`` builds a new handler."""
        if self.loop.is_closed():
            return
        self.run(self.app.aclose())
        self._threads.close()
        self.loop.close()

    # -- SQS ------------------------------------------------------------------------------------
    async def _handle_sqs(self, records: Sequence[Mapping[str, Any]], context: LambdaContext | None) -> dict[str, Any]:
        started = self.loop.time()
        deadline = _Deadline(context, self.min_remaining_ms)
        slots = asyncio.Semaphore(self.concurrency)
        results: dict[str, RecordResult] = {}  # filled as records end, so a cut-off keeps what finished
        chains = asyncio.gather(*(self._run_chain(chain, slots, deadline, results) for chain in fifo_chains(records)))
        finished, _ = await asyncio.wait({chains}, timeout=deadline.wait_s())
        ids = list(dict.fromkeys(str(r.get("messageId", "")) for r in records))
        if not finished:
            await self._cut_off(chains, [mid for mid in ids if mid not in results], deadline)
        failed = [mid for mid in ids if mid not in results or not results[mid].ok]
        await self._delete_payloads(records, results)
        late = sum(1 for r in results.values() if r.skipped == "out_of_time")
        if late:
            logger.warning("lambda.out_of_time", unstarted=late, remaining_ms=deadline.remaining_ms(), margin_ms=deadline.margin_ms)
        duration_ms = round((self.loop.time() - started) * 1000, 3)
        logger.info("lambda.batch_done", records=len(records), failed=len(failed), unstarted=late, duration_ms=duration_ms)
        return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failed]}

    async def _delete_payloads(self, records: Sequence[Mapping[str, Any]], results: Mapping[str, RecordResult]) -> None:
        """Succeeded records with an offloaded body: their messages are deleted here, not by Lambda
        after the answer, so that their S3 objects can go after them (never before: a message that
        stays would point to nothing). A failed delete keeps the objects; Lambda still deletes the
        messages, and the bucket's lifecycle rule expires what is left."""
        done: dict[str, list[tuple[Delivery, Pointer]]] = {}
        for record in records:
            result = results.get(str(record.get("messageId", "")))
            if result is not None and result.ok and result.payload is not None:
                delivery = delivery_from_record(record)
                done.setdefault(delivery.queue, []).append((delivery, result.payload))
        for queue, pairs in done.items():
            try:
                await self.app.consumer.broker.ack(queue, [d for d, _ in pairs])
            except Exception as exc:  # noqa: BLE001 - Lambda deletes them after the answer anyway
                logger.warning("lambda.payload_delete_skipped", queue=queue, count=len(pairs), error=f"{type(exc).__name__}: {exc}")
                continue
            await self.app.consumer.wire.adelete(p for _, p in pairs)

    async def _cut_off(self, chains: asyncio.Future[Any], running: list[str], deadline: _Deadline) -> None:
        """The records still running near the timeout are reported as failures, so the batch answer
        (and with it every record that did finish) still reaches Lambda. Async tasks are cancelled;
        a sync task's thread cannot be, and runs on in the background."""
        chains.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chains
        logger.error("lambda.cut_off", running=running, remaining_ms=deadline.remaining_ms(), cutoff_ms=deadline.cutoff_ms)

    async def _run_chain(
        self, chain: list[Mapping[str, Any]], slots: asyncio.Semaphore, deadline: _Deadline, results: dict[str, RecordResult]
    ) -> None:
        """Run a chain's records in order into ``results``; after a failure the rest of a FIFO group fails unrun."""
        for position, record in enumerate(chain):
            async with slots:
                if deadline.passed():
                    results.update((r.message_id, r) for r in (_skipped(r, "out_of_time") for r in chain[position:]))
                    return
                # its own task, so one record's contextvars (job_id, task...) never leak into the next
                result = await asyncio.create_task(self._run_record(record))
            results[result.message_id] = result
            if not result.ok and position + 1 < len(chain):
                held = await self._hold_back(chain[position + 1 :], result.delay_s)
                results.update((r.message_id, r) for r in held)
                return

    async def _run_record(self, record: Mapping[str, Any]) -> RecordResult:
        message_id = str(record.get("messageId", ""))
        try:
            delivery = delivery_from_record(record)
            queue = logical_queue(delivery.queue, self.app.settings.queue_prefix)
            settled = await self.app.consumer.process(delivery, queue, run_sync=self._threads.run)
            return RecordResult(delivery.message_id, ok=settled.done, delay_s=settled.delay_s, payload=settled.payload)
        except Exception as exc:  # noqa: BLE001 - a bad record must never fail the others
            logger.error("lambda.record_failed", message_id=message_id, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            return RecordResult(message_id, ok=False)

    async def _hold_back(self, records: Sequence[Mapping[str, Any]], delay_s: int | None) -> list[RecordResult]:
        """Fail the rest of a FIFO group unrun; keep them out of sight as long as the failed record,
        so that the group comes back together and in order."""
        logger.warning("lambda.fifo_group_held", held=[str(r.get("messageId", "")) for r in records], delay_s=delay_s)
        if delay_s is not None:
            try:
                deliveries = [delivery_from_record(r) for r in records]
                await self.app.consumer.broker.change_visibility(deliveries[0].queue, deliveries, delay_s)
            except Exception as exc:  # noqa: BLE001 - they come back after the visibility timeout anyway
                logger.warning("lambda.hold_back_failed", error=f"{type(exc).__name__}: {exc}")
        return [_skipped(r, "fifo_group_failed") for r in records]

    # -- EventBridge, invoking the function directly --------------------------------------------
    async def _handle_direct(self, event: Mapping[str, Any], kind: str, request_id: str) -> dict[str, Any]:
        if kind == "envelope":
            body, task = json.dumps(event), str(event.get("task"))
            results = [await self._run_direct(body, task, request_id)]
        else:
            tasks = self.app.registry.routed(event)
            if not tasks:
                logger.error("lambda.event_unrouted", source=event.get("source"), detail_type=event.get("detail-type"))
                return {"ok": False, "error": f"no task registered for source={event.get('source')!r} detail-type={event.get('detail-type')!r}"}
            event_id = str(event.get("id") or request_id)
            # One job per routed task, each with an id of its own that Lambda's retry of the same event repeats:
            # with a job store, a retry re-runs only the tasks that failed (the others are idempotent duplicates).
            results = [await self._run_direct(self._routed_body(f"{event_id}:{t}", t, event), t, event_id) for t in tasks]
        retried = [r["task"] for r in results if r["outcome"] == "retry"]
        if retried:
            raise EventFailed(f"task(s) {', '.join(retried)} failed; Lambda's retry for asynchronous invocations applies")
        return {"ok": all(r["outcome"] != "dead_letter" for r in results), "results": results}

    def _routed_body(self, job_id: str, task: str, event: Mapping[str, Any]) -> str:
        """The job of a routed event, signed here when the app signs: it came in through Lambda's
        invoke permission, not through a queue, and names a task registered for its source."""
        data: dict[str, Any] = {"id": job_id, "task": task, "args": [event]}
        signer = self.app.consumer.wire.signer
        return json.dumps(signer.sign_dict(data) if signer is not None else data)

    async def _run_direct(self, body: str, task: str, message_id: str) -> dict[str, Any]:
        """Run one job of a direct invocation through the consumer core, like any delivery of attempt 1.

        No receipt: there is no queue message, so the core only reports a retry or a dead letter, and
        hands an ETA beyond 15 minutes to the task's queue."""
        delivery = Delivery(queue=EVENTBRIDGE_QUEUE, message_id=message_id, receipt="", body=body, receive_count=1)
        settled = await asyncio.create_task(self.app.consumer.process(delivery, EVENTBRIDGE_QUEUE, run_sync=self._threads.run))
        outcome = settled.outcome
        if outcome.kind == "reschedule" and not settled.done:
            raise EventFailed(f"task {task} could not be handed to its queue; Lambda's retry for asynchronous invocations applies")
        result: dict[str, Any] = {"task": task, "outcome": outcome.kind}
        if outcome.kind == "dead_letter":
            result["reason"] = outcome.reason
        elif outcome.kind == "reschedule":
            result["delay_s"] = outcome.delay_s
        return result

"""The consumer core: run one delivery and carry out its whole fate, for every runtime.

The worker, the Lambda handler (SQS records and EventBridge direct events) and ``lambda-local``
all hand each delivery to :meth:`Consumer.process`; what stays in a runtime is only its own:
polling, slots, delete batching and the heartbeat in the worker; event shapes, deadlines, FIFO
chains and ``batchItemFailures`` in Lambda. A delivery flows::

    decode envelope -> ETA due? -> look up the task -> middleware on_job -> call the task
      -> RetryPolicy.decide (pure) -> one outcome log line -> settle -> middleware on_outcome

Settling carries out the outcome:

=========== ============================================================ ===========
outcome     what the consumer does                                       ``done``
=========== ============================================================ ===========
ack         nothing (the runtime deletes: worker batch, Lambda success)  True
retry       ChangeMessageVisibility to the backoff                       False
dead_letter send the body to the queue's DLQ with the reason attributes  True
reschedule  re-send with the rest of the ETA delay                       True
cancelled   nothing: the job was cancelled (job store)                   True
duplicate   nothing: the job store saw this job succeed already          True
=========== ============================================================ ===========

``done`` tells the runtime it may delete the message. One policy for a settle call that fails,
on every runtime: it is logged (``job.settle_failed``) and the delivery is *not* done, so the
message stays in its queue and comes back after its visibility timeout: nothing is lost, and
nothing is settled twice (a message is deleted only after its DLQ copy or re-send succeeded).

With a job store, :class:`~cloudq.jobs.tracker.JobTracker` claims a tracked job before it runs and
records how it ended after the settle (see that module).

A delivery without a receipt handle is a direct invocation (EventBridge calling Lambda, no
queue): a retry and a dead letter are only reported, and an ETA re-send goes to the task's queue.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudq.brokers.base import SQS_MAX_DELAY_S, SQS_MAX_VISIBILITY_S, Delivery, OutgoingMessage, is_fifo
from cloudq.envelope import Envelope, format_time, utcnow
from cloudq.errors import TaskSignal
from cloudq.job import Job, _current
from cloudq.logs import bind_context, get_logger
from cloudq.retry import Outcome

if TYPE_CHECKING:
    from cloudq.brokers.base import Broker
    from cloudq.jobs.tracker import JobControl, JobTracker
    from cloudq.middleware import MiddlewareChain
    from cloudq.retry import RetryPolicy
    from cloudq.naming import QueueNaming
    from cloudq.payloads import Pointer
    from cloudq.tasks import Registry, Task
    from cloudq.wire import Wire

__all__ = ["Consumer", "JobTimeout", "RunSync", "Settled"]

logger = get_logger("cloudq.job")

RunSync = Callable[[Callable[[], Any]], Awaitable[Any]]
_MAX_ATTRIBUTES = 10  # SQS's limit of message attributes per message
_BODY_LIVES_ON = frozenset({"dead_letter", "reschedule"})  # their copies keep an offloaded body's pointer


async def _to_thread(call: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(call)


class JobTimeout(TimeoutError):
    """An async task ran past its ``timeout`` and was cancelled."""


@dataclass(frozen=True, slots=True)
class Settled:
    """How a delivery ended, for its runtime: ``done`` means the message may be deleted; otherwise it
    stays in its queue, and ``delay_s`` is the visibility a retry gave it. ``recorded`` (with
    ``defer_record``) completes once the job store has the end state: delete the message only after it."""

    outcome: Outcome
    done: bool
    delay_s: int | None = None
    recorded: asyncio.Future[None] | None = field(default=None, compare=False)
    payload: Pointer | None = None
    """The S3 object of an offloaded body, to delete once the message is deleted; None when a copy
    still points to it (a dead letter, an ETA re-send) or the body was not offloaded."""


async def call_task(task: Task[Any, Any], envelope: Envelope, run_sync: RunSync, control: JobControl | None = None) -> Any:
    """Bind arguments (ArgumentsError is poison) and run the task, async on the loop, sync in a thread.

    A tracked async job runs in a task of its own, which a cancel request cancels (``control``)."""
    args, kwargs = envelope.args, envelope.kwargs
    task.check(args, kwargs)
    if task.is_async:
        coro = task.fn(*args, **kwargs)
        if task.timeout is not None:
            coro = _timed(coro, task)
        if control is None:
            return await coro
        return await _cancellable(coro, control)
    ctx = contextvars.copy_context()  # log context and current_job() follow the call into its thread
    return await run_sync(lambda: ctx.run(task.fn, *args, **kwargs))


async def _timed(coro: Awaitable[Any], task: Task[Any, Any]) -> Any:
    try:
        return await asyncio.wait_for(coro, task.timeout)
    except asyncio.TimeoutError:
        raise JobTimeout(f"task {task.name!r} exceeded its timeout of {task.timeout:g}s") from None


class JobCancelledSignal(TaskSignal):
    """A tracked async job was cancelled by ``ref.cancel()`` while it ran."""


async def _cancellable(coro: Awaitable[Any], control: JobControl) -> Any:
    inner = asyncio.ensure_future(coro)
    control.run_cancellable(inner)
    try:
        await asyncio.wait((inner,))
    except asyncio.CancelledError:  # the runtime is stopping: the job stops with it
        inner.cancel()
        raise
    if inner.cancelled():
        raise JobCancelledSignal("cancelled while running")
    return inner.result()


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


class Consumer:
    """Runs deliveries of an app's tasks; built by :class:`cloudq.App`, which hands in its parts."""

    def __init__(
        self,
        *,
        registry: Registry,
        naming: QueueNaming,
        broker: Callable[[], Broker],
        policy: RetryPolicy,
        max_retries: int,
        default_queue: str,
        middleware: MiddlewareChain,
        tracker: JobTracker | None = None,
        wire: Callable[[], Wire] | None = None,
    ) -> None:
        self.tracker = tracker
        self.registry = registry
        self.naming = naming
        self._broker = broker
        self.policy = policy
        self.max_retries = max_retries
        self.default_queue = default_queue
        self.middleware = middleware
        self._wire = wire if wire is not None else _plain_wire

    @property
    def broker(self) -> Broker:
        return self._broker()

    @property
    def wire(self) -> Wire:
        return self._wire()

    async def process(
        self,
        delivery: Delivery,
        queue: str,
        *,
        run_sync: RunSync = _to_thread,
        on_start: Callable[[Task[Any, Any]], None] | None = None,
        defer_record: bool = False,
    ) -> Settled:
        """Run one delivery of logical ``queue`` and carry out its fate; never raises (but for cancellation).

        ``on_start`` learns the task before it runs (the worker uses its timeout for the heartbeat).
        ``defer_record``: the job store's end-state write runs on in ``Settled.recorded`` instead of being
        awaited here, so the worker's slot is free for the next job while it is written (the worker then
        deletes the message once it is recorded: the order idempotency needs).
        Context (job_id, task, queue, attempt, message_id) is bound with :func:`cloudq.logs.bind_context` in
        the caller's asyncio task: run each delivery in a task of its own.
        """
        job, outcome, result = await self.execute(delivery, queue, run_sync=run_sync, on_start=on_start)
        tracker = self.tracker
        if tracker is not None and job.control is not None:
            outcome = tracker.adjust(job, outcome)
        settled = await self.settle(delivery, queue, outcome)
        if tracker is not None and job.control is not None:
            if defer_record:
                recorded = tracker.finish(job, outcome, settled, result, direct=not delivery.receipt, delivery=delivery)
                if recorded is not None:
                    settled = Settled(settled.outcome, settled.done, settled.delay_s, recorded)
            else:
                await tracker.afinish(job, outcome, settled, result, direct=not delivery.receipt)
        self.middleware.outcome(job, outcome)
        return settled

    async def execute(
        self, delivery: Delivery, queue: str, *, run_sync: RunSync = _to_thread, on_start: Callable[[Task[Any, Any]], None] | None = None
    ) -> tuple[Job, Outcome, Any]:
        """Run the task and decide the outcome (nothing settled yet); writes the one outcome log line.

        Returns the job, its outcome and the task's result (None unless it succeeded)."""
        attempt = delivery.receive_count
        bind_context(message_id=delivery.message_id, attempt=attempt, queue=queue)
        # One logger per delivery: each call on the module's lazy proxy would assemble a new one.
        log = logger.bind()
        log.debug("job.received")
        started = time.perf_counter()
        job: Job | None = None
        task: Task[Any, Any] | None = None
        tracker = self.tracker
        try:
            # Resolve an S3 pointer, verify the signature, decode; a broker that claimed the job inside its
            # receive (local broker, local store) decoded it already.
            claimed = delivery.claimed
            envelope = claimed[1] if claimed is not None else await self.wire.open(delivery)
            bind_context(job_id=envelope.id, task=envelope.task)
            tracked = tracker is not None and getattr(self.registry.get(envelope.task), "track", True)
            control = tracker.control(envelope.id) if tracked and tracker is not None else None
            job = Job(envelope.id, envelope.task, queue, attempt, delivery.message_id, envelope.headers, envelope.enqueued_at, control, delivery.aws_trace_header)
            if envelope.eta is not None and (waiting := _eta_outcome(envelope, queue)) is not None:
                if control is not None and await control.tracker.was_cancelled(job.id):
                    return job, _skipped(log, Outcome("cancelled")), None
                log.info("job.rescheduled", delay_s=waiting.delay_s)
                return job, waiting, None
            task = self.registry.lookup(envelope.task)
            if control is not None and (skip := await control.tracker.claim(job, attempt=attempt, claimed=claimed and claimed[0])) is not None:
                return job, _skipped(log, skip), None
            log.debug("job.started")
            if on_start is not None:
                on_start(task)
            token = _current.set(job)
            try:
                result = await self.middleware.run(job, lambda: call_task(task, envelope, run_sync, control))
            finally:
                _current.reset(token)
        except asyncio.CancelledError:
            raise
        except JobCancelledSignal as exc:
            log.warning("job.cancelled", duration_ms=_ms_since(started))
            assert job is not None
            return job, Outcome("cancelled", error=exc), None
        except (Exception, TaskSignal) as exc:  # noqa: BLE001 - a job's failure must never crash the runtime
            max_retries = task.max_retries if task is not None else self.max_retries
            outcome = self.policy.decide(exc, attempt=attempt, max_retries=max_retries, source_queue=queue)
            _log_failure(log, exc, outcome, _ms_since(started))
            if job is None:  # the body is not a valid envelope: on_outcome still hears of it, named by the message
                job = Job(delivery.message_id, "", queue, attempt, delivery.message_id, enqueued_at=delivery.sent_at)
            return job, outcome, None
        log.info("job.succeeded", duration_ms=_ms_since(started))
        return job, Outcome.ack(), result

    async def settle(self, delivery: Delivery, queue: str, outcome: Outcome) -> Settled:
        """Carry out ``outcome`` (see the module docstring); a failing call leaves the message in its queue."""
        from_queue = bool(delivery.receipt)
        try:
            if outcome.kind == "retry":
                if from_queue:
                    await self.broker.change_visibility(delivery.queue, [delivery], outcome.delay_s)
                return Settled(outcome, done=False, delay_s=outcome.delay_s)
            if outcome.kind == "dead_letter" and from_queue:
                await self._dead_letter(queue, delivery, outcome.reason)
            elif outcome.kind == "reschedule":
                await self._reschedule(delivery, outcome.delay_s, from_queue=from_queue)
        except Exception as exc:  # noqa: BLE001 - the message stays in its queue: it comes back, never lost
            logger.error("job.settle_failed", outcome=outcome.kind, error=f"{type(exc).__name__}: {exc}", message_id=delivery.message_id)
            return Settled(outcome, done=False)
        return Settled(outcome, done=True, payload=self.wire.pointer(delivery) if outcome.kind not in _BODY_LIVES_ON else None)

    async def _dead_letter(self, queue: str, delivery: Delivery, reason: dict[str, str]) -> None:
        """Send the original body to ``queue``'s DLQ with the reason as message attributes.

        The body is kept byte for byte so that a redrive re-runs exactly the same job.
        """
        attributes = {**delivery.attributes, **reason, "cloudq-dead-lettered-at": format_time(utcnow())}
        attributes = dict(list(attributes.items())[-_MAX_ATTRIBUTES:])  # newest reasons win over inherited ones
        dlq = self.naming.dlq_name(queue)
        fifo = is_fifo(dlq)
        message = OutgoingMessage(
            delivery.body,
            group_id=(delivery.group_id or "default") if fifo else None,
            dedup_id=f"{delivery.message_id}-dlq" if fifo else None,
            attributes=attributes,
        )
        await self.broker.asend(dlq, [message])

    async def _reschedule(self, delivery: Delivery, delay_s: int, *, from_queue: bool) -> None:
        """Re-send a job whose ETA is further away than SQS can delay (the runtime acks the old copy):
        to the queue it came from, or for a direct invocation to its task's queue."""
        physical = delivery.queue
        if not from_queue:
            task = self.registry.get(Envelope.decode(delivery.body).task)
            physical = self.naming.queue_name(task.queue if task is not None else self.default_queue)
        await self.broker.asend(physical, [OutgoingMessage(delivery.body, delay_s=delay_s, attributes=delivery.attributes)])


def _skipped(log: Any, outcome: Outcome) -> Outcome:
    """A delivery the job store says not to run: acked, with one log line saying why."""
    log.info("job.cancelled" if outcome.kind == "cancelled" else "job.duplicate_skipped")
    return outcome


@functools.cache
def _plain_wire() -> Wire:
    """A consumer built without the App's wire: no signing, no bucket; pointers still resolve."""
    from cloudq.wire import Wire

    return Wire.from_settings(None)


def _eta_outcome(envelope: Envelope, queue: str) -> Outcome | None:
    """A job whose ETA is more than a second away waits: re-sent with the rest of the delay, or on a
    FIFO queue (which takes no per-message delay) kept invisible in place."""
    assert envelope.eta is not None
    remaining = (envelope.eta - utcnow()).total_seconds()
    if remaining <= 1:
        return None
    if is_fifo(queue):
        return Outcome("retry", delay_s=min(SQS_MAX_VISIBILITY_S, round(remaining)))
    return Outcome("reschedule", delay_s=min(SQS_MAX_DELAY_S, round(remaining)))


def _log_failure(log: Any, exc: BaseException, outcome: Outcome, duration_ms: float) -> None:
    error = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, TaskSignal) and outcome.reason.get("cloudq-reason") in (None, "max_retries_exceeded"):
        log.warning("job.failed", error=error, duration_ms=duration_ms, exc_info=exc)
    if outcome.kind == "retry":
        log.warning("job.retrying", error=error, delay_s=outcome.delay_s, duration_ms=duration_ms)
    else:
        log.error("job.dead_lettered", error=error, reason=outcome.reason.get("cloudq-reason"), duration_ms=duration_ms)

"""Run one delivery and decide its fate: the code shared by the worker and the Lambda handler.

:func:`execute` never raises (but for cancellation): every problem becomes an
:class:`~cloudq.retry.Outcome`, and it writes the one outcome log line per delivery.
Context (job_id, task, queue, attempt, message_id) is bound with structlog's
contextvars inside the caller's asyncio task, so every log line the task itself
writes carries it too.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from structlog.contextvars import bind_contextvars

from cloudq.brokers.base import SQS_MAX_DELAY_S, SQS_MAX_VISIBILITY_S, Delivery, is_fifo
from cloudq.envelope import Envelope, utcnow
from cloudq.errors import TaskSignal
from cloudq.retry import Outcome, RetryPolicy

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.tasks import Task

__all__ = ["RunSync", "execute"]

logger = structlog.get_logger("cloudq.job")

RunSync = Callable[[Callable[[], Any]], Awaitable[Any]]


async def _to_thread(call: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(call)


class JobTimeout(TimeoutError):
    """An async task ran past its ``timeout`` and was cancelled."""


async def call_task(task: Task[Any, Any], envelope: Envelope, run_sync: RunSync) -> Any:
    """Bind arguments (ArgumentsError is poison) and run the task, async on the loop, sync in a thread."""
    bound = task.bind(envelope.args, envelope.kwargs)
    if task.is_async:
        coro = task.fn(*bound.args, **bound.kwargs)
        if task.timeout is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, task.timeout)
        except asyncio.TimeoutError:
            raise JobTimeout(f"task {task.name!r} exceeded its timeout of {task.timeout:g}s") from None
    ctx = contextvars.copy_context()
    return await run_sync(lambda: ctx.run(task.fn, *bound.args, **bound.kwargs))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def execute(
    delivery: Delivery,
    app: App,
    queue: str,
    *,
    run_sync: RunSync = _to_thread,
    on_start: Callable[[Task[Any, Any]], None] | None = None,
) -> Outcome:
    """Run one delivery of logical ``queue``; return what to do with the message.

    ``on_start`` learns the task before it runs (the worker uses its timeout for the heartbeat).
    """
    attempt = delivery.receive_count
    bind_contextvars(message_id=delivery.message_id, attempt=attempt, queue=queue)
    # One logger per delivery: each call on the module's lazy proxy would assemble a new one, and
    # levels below the configured one are no-ops on the assembled logger.
    log = logger.bind()
    log.debug("job.received")
    started = time.perf_counter()
    task: Task[Any, Any] | None = None
    try:
        envelope = Envelope.decode(delivery.body, default_id=delivery.message_id)
        bind_contextvars(job_id=envelope.id, task=envelope.task)
        if envelope.eta is not None:
            remaining = (envelope.eta - utcnow()).total_seconds()
            if remaining > 1:
                log.info("job.rescheduled", delay_s=round(remaining))
                if is_fifo(queue):  # FIFO queues take no per-message delay: wait in place instead
                    return Outcome("retry", delay_s=min(SQS_MAX_VISIBILITY_S, round(remaining)))
                return Outcome("reschedule", delay_s=min(SQS_MAX_DELAY_S, round(remaining)))
        task = app.get_task(envelope.task)
        log.debug("job.started")
        if on_start is not None:
            on_start(task)
        await call_task(task, envelope, run_sync)
    except asyncio.CancelledError:
        raise
    except (Exception, TaskSignal) as exc:  # noqa: BLE001 - a job's failure must never crash the worker
        settings = app.settings
        policy = RetryPolicy(settings.retry_backoff_s, settings.retry_backoff_max_s)
        max_retries = task.max_retries if task is not None else settings.max_retries
        outcome = policy.decide(exc, attempt=attempt, max_retries=max_retries, source_queue=queue)
        _log_failure(log, exc, outcome, _ms_since(started))
        return outcome
    log.info("job.succeeded", duration_ms=_ms_since(started))
    return Outcome.ack()


def _log_failure(log: Any, exc: BaseException, outcome: Outcome, duration_ms: float) -> None:
    error = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, TaskSignal) and outcome.reason.get("cloudq-reason") in (None, "max_retries_exceeded"):
        log.warning("job.failed", error=error, duration_ms=duration_ms, exc_info=exc)
    if outcome.kind == "retry":
        log.warning("job.retrying", error=error, delay_s=outcome.delay_s, duration_ms=duration_ms)
    else:
        log.error("job.dead_lettered", error=error, reason=outcome.reason.get("cloudq-reason"), duration_ms=duration_ms)

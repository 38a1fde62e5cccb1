"""Pure decisions about a job's fate: acknowledge, retry after a backoff, or dead-letter.

No I/O here: the executor hands in what happened and gets back an :class:`Outcome`,
which the worker and the Lambda handler carry out with their broker. Keeping the
policy pure keeps the worker and Lambda paths identical and makes it testable.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field
from typing import Literal

from cloudq.brokers.base import SQS_MAX_VISIBILITY_S
from cloudq.errors import ArgumentsError, EnvelopeError, Reject, Retry, TaskNotFound

__all__ = ["Outcome", "RetryPolicy", "dead_letter_reason"]

_TRACEBACK_CHARS = 2000
_ERROR_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a delivery: ``ack`` (the job succeeded), ``retry`` after ``delay_s``,
    ``dead_letter`` (``reason`` holds the attributes that travel with it), or ``reschedule`` (an ETA
    beyond SQS's 15-minute delay: re-send with the rest of the delay). With a job store, also
    ``cancelled`` (the job was cancelled: acked without running, or stopped while it ran) and
    ``duplicate`` (the store saw this job succeed: acked without running again). ``error`` is what the
    task raised, for middleware that reports errors (``on_outcome``)."""

    kind: Literal["ack", "retry", "dead_letter", "reschedule", "cancelled", "duplicate"]
    delay_s: int = 0
    reason: dict[str, str] = field(default_factory=dict)
    error: BaseException | None = field(default=None, compare=False)

    @classmethod
    def ack(cls) -> Outcome:
        return cls("ack")

    @property
    def succeeded(self) -> bool:
        return self.kind == "ack"


def dead_letter_reason(category: str, exc: BaseException | None, attempt: int, source_queue: str) -> dict[str, str]:
    """Message attributes that travel with a dead letter, so on-call can see why without logs."""
    reason = {
        "cloudq-reason": category,
        "cloudq-attempts": str(attempt),
        "cloudq-source-queue": source_queue,
    }
    if exc is not None:
        reason["cloudq-error-type"] = type(exc).__name__
        reason["cloudq-error"] = (str(exc) or type(exc).__name__)[:_ERROR_CHARS]
        if category == "max_retries_exceeded" and exc.__traceback__ is not None:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            reason["cloudq-traceback"] = text[-_TRACEBACK_CHARS:]
    return reason


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped; ``attempt`` is SQS's ApproximateReceiveCount."""

    backoff_s: float = 2.0
    backoff_max_s: float = 900.0

    def backoff(self, attempt: int) -> int:
        """Delay before attempt ``attempt + 1``: half fixed, half random, so retries spread out."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempt - 1), SQS_MAX_VISIBILITY_S)
        return max(1, round(ceiling / 2 + random.uniform(0, ceiling / 2)))

    def decide(self, exc: BaseException, *, attempt: int, max_retries: int, source_queue: str) -> Outcome:
        """Turn a task's exception into an outcome; poison never retries."""
        poison = _poison_category(exc)
        if poison:
            return Outcome("dead_letter", reason=dead_letter_reason(poison, exc, attempt, source_queue), error=exc)
        if attempt > max_retries:
            return Outcome("dead_letter", reason=dead_letter_reason("max_retries_exceeded", exc, attempt, source_queue), error=exc)
        delay = exc.delay_s if isinstance(exc, Retry) and exc.delay_s is not None else None
        delay_s = min(SQS_MAX_VISIBILITY_S, round(delay)) if delay is not None else self.backoff(attempt)
        return Outcome("retry", delay_s=delay_s, error=exc)


def _poison_category(exc: BaseException) -> str | None:
    if isinstance(exc, Reject):
        return "rejected"
    if isinstance(exc, TaskNotFound):
        return "unknown_task"
    if isinstance(exc, ArgumentsError):
        return "bad_arguments"
    if isinstance(exc, EnvelopeError):
        return "invalid_envelope"
    return None

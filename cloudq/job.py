"""The running job as task code and middleware see it: :class:`Job` and :func:`current_job`.

A :class:`Job` is built by the consumer core once a delivery's envelope is decoded, before the
task runs, and set in a context variable for the duration of the call: async tasks see it on
the loop, sync tasks in their thread (the call runs in a copy of the context), in the worker,
in Lambda and in ``lambda-local`` alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Job", "current_job"]


@dataclass(frozen=True, slots=True)
class Job:
    """One run of a job: which job (``id``, ``task``), where from (``queue``, ``message_id``), which
    try (``attempt``, SQS's ApproximateReceiveCount: it grows with every retry), the envelope's
    ``headers`` and ``enqueued_at``; ``aws_trace_header`` is SQS's X-Ray ``AWSTraceHeader``, if the message had one.

    ``task`` is ``""`` when the message body is not a valid envelope (``on_outcome`` still hears of it).
    """

    id: str
    task: str
    queue: str
    attempt: int
    message_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    enqueued_at: datetime | None = None
    aws_trace_header: str | None = None


_current: ContextVar[Job | None] = ContextVar("cloudq_current_job", default=None)


def current_job() -> Job | None:
    """The job the calling task is running for, or None outside a task run by a worker or Lambda."""
    return _current.get()

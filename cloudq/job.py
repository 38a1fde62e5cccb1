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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudq.jobs.tracker import JobControl

__all__ = ["Job", "current_job"]


@dataclass(frozen=True, slots=True)
class Job:
    """One run of a job: which job (``id``, ``task``), where from (``queue``, ``message_id``), which
    try (``attempt``, SQS's ApproximateReceiveCount: it grows with every retry), the envelope's
    ``headers`` and ``enqueued_at``; ``aws_trace_header`` is SQS's X-Ray ``AWSTraceHeader``, if the message had one.

    ``task`` is ``""`` when the message body is not a valid envelope (``on_outcome`` still hears of it).
    With a job store (``CLOUDQ_JOB_STORE``), :meth:`progress` is stored and :attr:`cancelled` tells a
    sync task that ``ref.cancel()`` asked it to stop; without one, both do nothing.
    """

    id: str
    task: str
    queue: str
    attempt: int
    message_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    enqueued_at: datetime | None = None
    control: JobControl | None = field(default=None, compare=False, repr=False)
    aws_trace_header: str | None = None

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the job is (0..1, and a short message): ``ref.status().progress`` shows it.

        From a sync task the write happens at once; from an async task it goes in the background."""
        if self.control is not None:
            self.control.progress(fraction, message)

    @property
    def cancelled(self) -> bool:
        """True once the job was asked to stop (``ref.cancel()``); checked every CLOUDQ_JOB_CANCEL_CHECK_S."""
        return self.control is not None and self.control.cancelled


_current: ContextVar[Job | None] = ContextVar("cloudq_current_job", default=None)


def current_job() -> Job | None:
    """The job the calling task is running for, or None outside a task run by a worker or Lambda."""
    return _current.get()

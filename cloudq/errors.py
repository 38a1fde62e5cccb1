"""cloudq exceptions.

The tree, so that callers can catch exactly what they mean::

    * CloudQError                   everything cloudq raises on purpose
      + ConfigurationError          bad settings, bad task options, bad CLI input
        - ScheduleError             an invalid schedule expression (names the task)
      + TaskNotFound                a task name that is not in the registry (poison: never retried)
      + EnvelopeError               a body that is not JSON or not a valid envelope (poison: never retried)
        - ArgumentsError            args/kwargs that do not bind to the task's signature (poison)
      + JobNotFound                 the job store has no job with that id
      + JobFailed                   ``ref.result()`` of a job that failed: reason, error type, message
      + JobCancelled                ``ref.result()`` of a job that was cancelled
      + ResultUnavailable           the job succeeded but its result could not be stored (``result_error``)
      + BrokerError                 the broker refused or could not serve a call
        - QueueNotFound             the queue does not exist (platform teams own queues)
        - ResourceNotFound          another AWS resource does not exist (a schedule group, a rule)
        - BrokerUnavailable         transient: throttling, 5xx, endpoint down; the call may be retried
    * TaskSignal                    raised by task code on purpose; not an error
      + Retry(delay=None)           run this job again later
      + Reject(reason)              never retry; straight to the dead-letter queue

Signals live outside the error root so that ``except CloudQError`` (or even a bare
``except Exception`` that re-raises CloudQError) in task code cannot swallow them by accident.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "ArgumentsError",
    "BrokerError",
    "BrokerUnavailable",
    "CloudQError",
    "ConfigurationError",
    "EnvelopeError",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "QueueNotFound",
    "Reject",
    "ResourceNotFound",
    "ResultUnavailable",
    "Retry",
    "ScheduleError",
    "TaskNotFound",
    "TaskSignal",
]


class CloudQError(Exception):
    """Base of every error cloudq raises on purpose."""


class ConfigurationError(CloudQError):
    """Settings, task options or command-line input that cannot work."""


class ScheduleError(ConfigurationError):
    """A schedule expression that AWS would reject."""


class TaskNotFound(CloudQError):
    """The envelope names a task that is not in the registry."""


class EnvelopeError(CloudQError):
    """A message body that is not a valid cloudq envelope."""


class ArgumentsError(EnvelopeError):
    """The envelope's args/kwargs do not bind to the task's signature."""


class JobNotFound(CloudQError):
    """The job store has no job with this id (never enqueued with tracking, expired, or a typo)."""


class JobFailed(CloudQError):
    """The job ended without success: dead-lettered (``reason`` is the DLQ reason) or failed."""

    def __init__(self, job_id: str, status: str, reason: str | None, error_type: str | None, error_message: str | None) -> None:
        self.job_id = job_id
        self.status = status
        self.reason = reason
        self.error_type = error_type
        self.error_message = error_message
        what = f"{error_type}: {error_message}" if error_type else (error_message or "no error recorded")
        super().__init__(f"job {job_id} {status.replace('_', ' ')}" + (f" ({reason})" if reason else "") + f": {what}")


class JobCancelled(CloudQError):
    """The job was cancelled (``ref.cancel()``, ``cloudq cancel``) before it could finish."""


class ResultUnavailable(CloudQError):
    """The job succeeded, but its result could not be stored (not JSON, or over the store's item limit)."""


class BrokerError(CloudQError):
    """The broker refused a call, or could not be reached."""


class QueueNotFound(BrokerError):
    """The queue does not exist; cloudq never creates queues at run time."""


class ResourceNotFound(BrokerError):
    """An AWS resource other than a queue (a schedule group, a rule) does not exist."""


class BrokerUnavailable(BrokerError):
    """A transient failure (throttling, 5xx, connection refused): the call may be retried."""


class TaskSignal(Exception):
    """Raised by task code to steer what happens to the job; not an error."""


class Retry(TaskSignal):
    """Run this job again after ``delay`` (seconds or timedelta); None means the policy's backoff."""

    def __init__(self, delay: float | timedelta | None = None, reason: str = "retry requested") -> None:
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if delay is not None and delay < 0:
            raise ConfigurationError(f"Retry delay must be >= 0 seconds, got {delay}")
        self.delay_s = delay
        self.reason = reason
        super().__init__(reason if delay is None else f"{reason} (in {delay:g}s)")


class Reject(TaskSignal):
    """Give up on this job now: it goes straight to the dead-letter queue with ``reason``."""

    def __init__(self, reason: str = "rejected") -> None:
        self.reason = reason
        super().__init__(reason)

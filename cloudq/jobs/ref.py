""":class:`JobRef`: what ``delay`` returns and ``app.job(id)`` finds: a job's id, and its state in the store.

``status``/``result``/``cancel`` read the app's job store (``CLOUDQ_JOB_STORE``); without one they
raise a ConfigurationError that says how to turn one on. ``result`` polls the store with a pause that
grows from 50 ms to 1 s, so a web request waiting a few seconds costs a handful of reads, and a job id
the store has never heard of raises :class:`~cloudq.errors.JobNotFound` at the first read, not after
the timeout. Sync and async share the decision (:func:`_settled_result`); only the waiting differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudq.errors import ConfigurationError, JobCancelled, JobFailed, JobNotFound, ResultUnavailable

if TYPE_CHECKING:
    from cloudq.jobs.state import JobState
    from cloudq.jobs.store import JobStore

__all__ = ["JobRef"]

_NO_STORE = "no job store is configured: set CLOUDQ_JOB_STORE=local (the local broker's file), dynamodb, or memory"
_NOT_YET = object()


@dataclass(frozen=True, slots=True)
class JobRef:
    """A job: ``id``, its ``task`` and ``queue``, and the SQS ``message_id`` of the send (empty when the
    ref was looked up by id, or when a unique job was already queued and nothing was sent)."""

    id: str
    task: str
    queue: str
    message_id: str
    store: Callable[[], JobStore | None] | None = field(default=None, compare=False, repr=False)

    def _store(self) -> JobStore:
        store = self.store() if self.store is not None else None
        if store is None:
            raise ConfigurationError(_NO_STORE)
        return store

    def status(self) -> JobState:
        """The job's state now; JobNotFound if the store has no such job."""
        state = self._store().get(self.id)
        if state is None:
            raise JobNotFound(f"no job {self.id!r} in the job store (never tracked, or expired after CLOUDQ_JOB_TTL_S)")
        return state

    async def astatus(self) -> JobState:
        import asyncio  # not at the top: producers import this module, and most never wait

        return await asyncio.to_thread(self.status)

    def result(self, timeout: float | None = 30) -> Any:
        """Wait for the job to end and return its result; raises JobFailed, JobCancelled,
        ResultUnavailable, JobNotFound, or TimeoutError after ``timeout`` seconds (None: no limit)."""
        for pause in _pauses(self.id, timeout):
            value = _settled_result(self.status())
            if value is not _NOT_YET:
                return value
            time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aresult(self, timeout: float | None = 30) -> Any:
        """``result`` without blocking the event loop."""
        for pause in _pauses(self.id, timeout):
            value = _settled_result(await self.astatus())
            if value is not _NOT_YET:
                return value
            await _sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def cancel(self) -> bool:
        """True if the job will not run (it was waiting: queued, delayed, ETA, between retries), or it is
        running and was asked to stop; False if it has already ended. JobNotFound for an unknown id."""
        answer = self._store().request_cancel(self.id)
        if answer is None:
            raise JobNotFound(f"no job {self.id!r} in the job store")
        return answer


def _pauses(job_id: str, timeout: float | None) -> Iterator[float]:
    """Pauses between reads (50 ms growing to 1 s), ending in TimeoutError when ``timeout`` is spent."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause, last = 0.05, False
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            if last:
                raise TimeoutError(f"job {job_id} did not finish within {timeout:g}s")
            last, left = True, 0.0  # one more read at the deadline
        yield pause if left is None else min(pause, left)
        pause = min(pause * 1.5, 1.0)


def _settled_result(state: JobState) -> Any:
    """The result of an ended job (or raise why there is none); ``_NOT_YET`` while it is not done."""
    if state.status == "succeeded":
        if state.result_error:
            raise ResultUnavailable(f"job {state.id} succeeded, but its result was not stored: {state.result_error}")
        return state.result
    if state.status == "cancelled":
        raise JobCancelled(f"job {state.id} was cancelled")
    if state.status in ("failed", "dead_lettered"):
        error = state.error
        raise JobFailed(state.id, state.status, error.reason if error else None, error.type if error else None, error.message if error else None)
    return _NOT_YET


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)

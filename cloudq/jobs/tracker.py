"""The consumer's side of job state: claim a delivery, record how it ended, watch for cancel requests.

The consumer core (:mod:`cloudq.consumer`) calls a :class:`JobTracker` at three points of every tracked
delivery, so the worker, the Lambda handler and ``lambda-local`` share one behaviour:

1. ``claim`` before the task runs: a job the store saw succeed is acked without running (idempotency:
   the duplicate after a SIGKILL, a redrive of a job that did succeed); a cancelled one too;
   otherwise it is ``running`` (or, with ``CLOUDQ_JOB_TRACK=final``, only read).
2. ``adjust`` after the run, before the message is settled: a job asked to stop while it ran ends
   ``cancelled`` (its message acked) instead of retrying.
3. ``finish`` after the settle, with the fate that was carried out: ``succeeded`` (and the result),
   ``retrying``, ``dead_lettered`` / ``failed`` (and the error), ``cancelled``. Nothing is written when
   the settle failed: the message comes back and its next delivery decides.

The message stays the source of truth: a store call that fails is retried with the shared transient
policy (:func:`cloudq.transient.call_retrying`) and then dropped with a warning, and the job runs (or is
settled) as it would without a store. Store calls run on daemon threads (never the event loop); running
jobs are checked for cancel requests every ``CLOUDQ_JOB_CANCEL_CHECK_S`` with one batched read, and an
async task asked to stop is cancelled there; a sync task reads ``current_job().cancelled``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from cloudq.brokers.blocking import DaemonThreads
from cloudq.errors import CloudQError, ConfigurationError
from cloudq.jobs.group_commit import GroupCommit
from cloudq.jobs.state import Finish, JobError, Status, encode_result
from cloudq.logs import get_logger
from cloudq.retry import Outcome
from cloudq.transient import call_retrying

if TYPE_CHECKING:
    from cloudq.brokers.base import Delivery
    from cloudq.consumer import Settled
    from cloudq.job import Job
    from cloudq.jobs.store import JobStore

__all__ = ["JobControl", "JobTracker", "UNIQUE_HEADER"]

T = TypeVar("T")
logger = get_logger("cloudq.jobs")
UNIQUE_HEADER = "cloudq-unique"
"""The envelope header that carries a unique job's key, so that its end releases the key."""
_RETRY_S = 10.0
_DROPPED: Any = object()
_ERROR_CHARS = 1000


def epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class JobControl:
    """A running job's link to its store: progress writes, and the cancel request the watch found."""

    __slots__ = ("_inner", "tracker", "cancelled", "job_id", "pending")

    def __init__(self, tracker: JobTracker, job_id: str) -> None:
        self.tracker = tracker
        self.job_id = job_id
        self.cancelled = False
        self._inner: asyncio.Future[Any] | None = None
        self.pending: set[asyncio.Future[Any]] = set()

    def run_cancellable(self, inner: asyncio.Future[Any]) -> None:
        """The asyncio task an async job runs in: cancelled when the job is asked to stop."""
        self._inner = inner
        if self.cancelled:
            inner.cancel()

    def cancel(self) -> None:
        self.cancelled = True
        if self._inner is not None and not self._inner.done():
            self._inner.cancel()

    def progress(self, fraction: float, message: str | None) -> None:
        """Store progress: from a sync task's thread at once; from the event loop in the background."""
        if not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ConfigurationError(f"progress must be a number from 0 to 1, got {fraction!r}")
        message = None if message is None else str(message)[:_ERROR_CHARS]
        tracker = self.tracker
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            tracker.call_now("progress", tracker.store.set_progress, self.job_id, float(fraction), message)
            return
        write = loop.create_task(tracker.call("progress", tracker.store.set_progress, self.job_id, float(fraction), message))
        self.pending.add(write)
        write.add_done_callback(self.pending.discard)


class JobTracker:
    """Job state for a consumer; built by the App when a job store is configured."""

    def __init__(self, store: JobStore, *, record_running: bool = True, cancel_check_s: float = 5.0) -> None:
        self.store = store
        self.record_running = record_running
        self.cancel_check_s = cancel_check_s
        self._threads = DaemonThreads(8, "cloudq-jobs")
        self._group = GroupCommit(store) if callable(getattr(store, "apply", None)) else None  # type: ignore[arg-type]
        self._running: dict[str, JobControl] = {}
        self._watch: asyncio.Task[None] | None = None
        self.ledger = False
        """The broker writes claims and end states in its own transactions (the local broker and the local
        store: :class:`cloudq.jobs.sqlite.BrokerLedger`); set by the App when it attaches one."""

    # -- store calls that never fail the job ------------------------------------------------
    async def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)`` on a thread, retried if transient; ``_DROPPED`` (logged) if it still fails."""
        return await self._threads.run(lambda: self.call_now(what, fn, *args, **kwargs))

    async def write(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``claim``/``finish``: group-committed when the store can (SQLite), else one call on a thread.

        A failed group is retried call by call, as :meth:`call` retries anything."""
        if self._group is not None:
            try:
                return await self._group.submit(name, *args, **kwargs)
            except CloudQError:
                pass
        return await self.call(name, getattr(self.store, name), *args, **kwargs)

    def call_now(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return call_retrying(lambda: fn(*args, **kwargs), stop_after_s=_RETRY_S)
        except CloudQError as exc:
            logger.warning("job.state_dropped", call=what, error=f"{type(exc).__name__}: {exc}")
            return _DROPPED  # type: ignore[no-any-return]

    # -- the three points of a delivery -----------------------------------------------------
    def control(self, job_id: str) -> JobControl:
        return JobControl(self, job_id)

    async def claim(self, job: Job, *, attempt: int, claimed: Any = None) -> Outcome | None:
        """None: run the job (registered with the cancel watch); else the outcome that skips it.

        ``claimed``: the claim the broker already made inside its receive (``Delivery.claimed``)."""
        if claimed is not None:
            claim = claimed
        else:
            claim = await self.write(
                "claim", job.id, task=job.task, queue=job.queue, attempt=attempt, enqueued_at=epoch(job.enqueued_at), record=self.record_running
            )
        if claim is not _DROPPED:
            if claim.previous == "succeeded":
                return Outcome("duplicate")
            if claim.previous == "cancelled" or claim.cancel_requested:
                return Outcome("cancelled")
        if job.control is not None:
            self._running[job.id] = job.control
            self._ensure_watch()
        return None

    async def was_cancelled(self, job_id: str) -> bool:
        """For a job that waits for its ETA: a read, no write."""
        claim = await self.call("claim", self.store.claim, job_id, task="", queue="", attempt=0, enqueued_at=None, record=False)
        return claim is not _DROPPED and claim.previous == "cancelled"

    @staticmethod
    def adjust(job: Job, outcome: Outcome) -> Outcome:
        """A job asked to stop while it ran ends cancelled, whatever it raised or returned."""
        control = job.control
        if control is not None and control.cancelled and outcome.kind in ("ack", "retry", "dead_letter"):
            return Outcome("cancelled", error=outcome.error)
        return outcome

    def finish(
        self, job: Job, outcome: Outcome, settled: Settled, result: Any, *, direct: bool, delivery: Delivery | None = None
    ) -> asyncio.Future[Any] | None:
        """Start writing the run's end state; the future completes once the write is done (a failed group
        write is retried alone in the background). None when there is nothing to write, or when the
        broker writes it with the delivery's delete (``delivery.record``, on a :attr:`ledger` broker).

        A future, not a coroutine: the worker holds one per job while its slot already runs the next job,
        and a task per job would cost more than the write itself."""
        control = self._running.pop(job.id, None)
        end = self._end(job, outcome, settled, result, direct=direct)
        if control is not None and control.pending:  # progress writes still in flight: the end lands after them
            return asyncio.ensure_future(self._finish_after(control.pending, job.id, end))
        if end is None:
            return None
        if self.ledger and delivery is not None and outcome.kind == "ack" and settled.done:
            delivery.record = (job.id, end)  # the worker's delete of this delivery writes it
            return None
        if self._group is None:
            return asyncio.ensure_future(self.call("finish", self.store.finish, job.id, end))
        written = self._group.submit("finish", job.id, end)
        written.add_done_callback(lambda f: self._after_group(f, job.id, end))
        return written

    async def afinish(self, job: Job, outcome: Outcome, settled: Settled, result: Any, *, direct: bool) -> None:
        """:meth:`finish`, awaited to the end (retries included): for the Lambda handler and tests."""
        control = self._running.pop(job.id, None)
        end = self._end(job, outcome, settled, result, direct=direct)
        await self._finish_after(control.pending if control is not None else set(), job.id, end)

    async def _finish_after(self, pending: set[asyncio.Future[Any]], job_id: str, end: Finish | None) -> None:
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if end is not None:
            await self.write("finish", job_id, end)

    def _after_group(self, written: asyncio.Future[Any], job_id: str, end: Finish) -> None:
        """A group write that failed is retried alone (then dropped with a warning). The worker does not wait
        for that retry: a store that fails is the case where the message, not the store, decides."""
        if not written.cancelled() and written.exception() is not None:
            written.get_loop().create_task(self.call("finish", self.store.finish, job_id, end))

    def _end(self, job: Job, outcome: Outcome, settled: Settled, result: Any, *, direct: bool) -> Finish | None:
        kind = outcome.kind
        if kind in ("duplicate", "reschedule") or not job.task or (not settled.done and kind != "retry"):
            return None  # nothing ran, or the message stays and its next delivery decides
        if kind == "ack":  # the common case, written out (no closure): it runs for every job
            text, problem = encode_result(result, self.store.max_result_bytes) if result is not None else (None, None)
            if problem:
                logger.warning("job.result_not_stored", job_id=job.id, result_error=problem)
            return Finish(
                "succeeded", job.task, job.queue, job.attempt, epoch(job.enqueued_at), result_json=text, result_error=problem,
                unique_key=job.headers.get(UNIQUE_HEADER) if job.headers else None,
            )  # fmt: skip

        def ended(status: Status, **fields: Any) -> Finish:
            return Finish(status, job.task, job.queue, job.attempt, epoch(job.enqueued_at), unique_key=job.headers.get(UNIQUE_HEADER), **fields)

        if kind == "cancelled":
            return ended("cancelled")
        error = outcome.error
        info = JobError(type(error).__name__ if error else "", (str(error) if error else "")[:_ERROR_CHARS], outcome.reason.get("cloudq-reason"))
        return ended("retrying" if kind == "retry" else "failed" if direct else "dead_lettered", error=info)

    # -- the cancel watch -------------------------------------------------------------------
    def _ensure_watch(self) -> None:
        """Start the watch if it is not running on this loop (it ends when no job runs)."""
        watch = self._watch
        if watch is not None and len(self._running) > 1 and not watch.done():
            return  # it was running for the others: the common case of a busy worker, checked cheaply
        loop = asyncio.get_running_loop()
        if watch is None or watch.done() or watch.get_loop() is not loop:
            self._watch = loop.create_task(self._watch_running())

    async def _watch_running(self) -> None:
        """While jobs run: one batched read per tick for the cancel requests of all of them."""
        while self._running:
            await asyncio.sleep(self.cancel_check_s)
            ids = [job_id for job_id, control in self._running.items() if not control.cancelled]
            if not ids:
                continue
            asked = await self.call("cancel_check", self.store.cancel_requested, ids)
            for job_id in () if asked is _DROPPED else asked:
                control = self._running.get(job_id)
                if control is not None:
                    logger.info("job.cancel_requested", job_id=job_id)
                    control.cancel()

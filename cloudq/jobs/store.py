"""The job store protocol: the few calls a producer, a consumer and the CLI make, and what each means.

Three stores implement it: :class:`~cloudq.jobs.sqlite.SqliteJobStore` (``local``: a table in the
local broker's SQLite file; ``memory``: the same code on a private in-memory database) and
:class:`~cloudq.jobs.dynamodb.DynamoJobStore` (``dynamodb``). The calls are sync and short; the
consumer runs them on threads (:mod:`cloudq.jobs.tracker`). Every store gives them the same meaning,
checked by one contract suite (tests/contract/test_job_store_contract.py):

=================== =====================================================================================
``put_queued``      insert ``queued`` records, batched, never overwriting one that exists (1 write per job)
``reserve_unique``  one job per unique key while it is queued, retrying or running: returns the id of the
                    job that holds the key, or None after writing the key and the job's queued record
``claim``           a delivery starts: returns the state the job was in (None: no record). A job that
                    already ``succeeded`` or was ``cancelled`` is left alone (the delivery is acked without
                    running); otherwise, with ``record=True``, it becomes ``running`` (1 write), else it is
                    only read
``finish``          the run's end state (``retrying`` included) with result or error; releases the unique key
                    on a final state (1 write; 2 for a unique job)
``request_cancel``  queued/retrying -> cancelled (True); running -> cancel requested (True); final -> False;
                    None when there is no such job
``cancel_requested`` which of these running jobs were asked to stop (one batched read)
=================== =====================================================================================

Every write sets the record's expiry (``CLOUDQ_JOB_TTL_S`` after it); an expired record reads as absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cloudq.jobs.state import Finish, JobState, NewJob, Status

__all__ = ["Claim", "JobStore"]


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``claim`` found: the job's state before (None: no record) and whether a cancel was asked."""

    previous: Status | None
    cancel_requested: bool = False


class JobStore(Protocol):
    """Job state behind one small protocol; see the module docstring for each call's meaning."""

    @property
    def kind(self) -> str:
        """``local``, ``memory`` or ``dynamodb``."""

    @property
    def max_result_bytes(self) -> int:
        """The largest result (JSON bytes) a record can hold."""

    def check(self) -> None:
        """Raise ConfigurationError (naming the table and how to create it) if the store cannot be used."""

    def ensure(self) -> None:
        """Create the table if it is missing (development; production tables come from ``infra render``)."""

    def put_queued(self, jobs: Sequence[NewJob]) -> None: ...

    def reserve_unique(self, key: str, job: NewJob) -> str | None: ...

    def forget(self, jobs: Sequence[NewJob]) -> None:
        """Remove the queued records (and unique keys) of jobs whose send failed."""

    def claim(self, job_id: str, *, task: str, queue: str, attempt: int, enqueued_at: float | None, record: bool) -> Claim: ...

    def finish(self, job_id: str, end: Finish) -> None: ...

    def set_progress(self, job_id: str, fraction: float, message: str | None) -> None:
        """Store progress of a running job (ignored once it is no longer running)."""

    def request_cancel(self, job_id: str) -> bool | None: ...

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]: ...

    def get(self, job_id: str) -> JobState | None: ...

    def list(self, *, status: str | None = None, task: str | None = None, limit: int = 50) -> list[JobState]:
        """Jobs newest enqueued first, filtered by status and task."""

    def close(self) -> None: ...

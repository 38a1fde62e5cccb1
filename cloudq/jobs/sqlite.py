"""Job state in SQLite: ``local`` (a ``jobs`` table in the local broker's file, shared by every process
that uses it) and ``memory`` (the same code on a private in-memory database, for tests).

One connection per store and process, used under a lock: SQLite serializes writers anyway, and each call
is one short transaction (``BEGIN IMMEDIATE`` where it reads before it writes, so two processes claiming
or reserving the same job or key cannot interleave). Other processes wait on the busy timeout; a lock
held too long, or a file that cannot be opened, is a BrokerUnavailable / BrokerError (the broker's own
translation), which the consumer retries and then drops with a warning.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from cloudq.brokers.base import Delivery
from cloudq.brokers.local_sql import translated
from cloudq.envelope import Envelope
from cloudq.errors import EnvelopeError
from cloudq.jobs.state import ACTIVE, CANCELLABLE, FINAL, SKIP_ON_DELIVERY, Finish, JobState, NewJob, state_from_record
from cloudq.jobs.store import Claim

__all__ = ["SqliteJobStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    task TEXT,
    queue TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error_type TEXT,
    error_message TEXT,
    error_reason TEXT,
    result_error TEXT,
    progress REAL,
    progress_message TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    unique_key TEXT,
    prev_status TEXT,
    enqueued_at REAL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_enqueued ON jobs (enqueued_at);
CREATE TABLE IF NOT EXISTS job_keys (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""
_COLUMNS = (
    "id", "status", "task", "queue", "attempts", "result", "error_type", "error_message", "error_reason",
    "result_error", "progress", "progress_message", "cancel_requested", "enqueued_at", "started_at",
    "finished_at", "updated_at",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
_INSERT_QUEUED = (
    "INSERT OR IGNORE INTO jobs (id, status, task, queue, unique_key, enqueued_at, updated_at, expires_at)"
    " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)"
)
_SKIP = ", ".join(f"'{s}'" for s in sorted(SKIP_ON_DELIVERY))
# The common claim is one statement: the job's queued (or retrying, or crashed-while-running) row becomes
# running, and RETURNING says what it was (prev_status keeps the old status for exactly that).
_CLAIM = f"""
UPDATE jobs SET prev_status = status, status = 'running', attempts = ?1, started_at = ?2, updated_at = ?2, expires_at = ?3,
    task = ?4, queue = ?5, finished_at = NULL, progress = NULL, progress_message = NULL
WHERE id = ?6 AND expires_at > ?2 AND status NOT IN ({_SKIP})
RETURNING prev_status, cancel_requested
"""
_CLAIM_NEW = (
    "INSERT OR REPLACE INTO jobs (id, status, task, queue, attempts, enqueued_at, started_at, updated_at, expires_at)"
    " VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?)"
)
# The claim that rides on the local broker's receive (:class:`BrokerLedger`): the producer's queued row
# already names the task and queue, and anything else (no row, expired, succeeded, cancelled) is left
# to the consumer's own claim, which knows what to do with it.
# One statement for the whole receive: the job ids and attempts in a VALUES list (UPDATE ... FROM needs
# SQLite 3.33, RETURNING 3.35).
_CLAIM_RECEIVED = f"""
UPDATE jobs SET prev_status = jobs.status, status = 'running', attempts = v.column2, started_at = ?1, updated_at = ?1,
    expires_at = ?2, finished_at = NULL, progress = NULL, progress_message = NULL
FROM (VALUES {{values}}) AS v
WHERE jobs.id = v.column1 AND jobs.expires_at > ?1 AND jobs.status NOT IN ({_SKIP})
RETURNING jobs.id, jobs.prev_status, jobs.cancel_requested
"""
_FINISH = """
UPDATE jobs SET status = ?2, attempts = ?3, result = ?4, error_type = ?5, error_message = ?6, error_reason = ?7,
    result_error = ?8, finished_at = ?9, updated_at = ?10, expires_at = ?11, cancel_requested = 0
WHERE id = ?1 AND attempts <= ?3
"""
# Only for a job with no record: one with a later attempt's record is left alone (an end state retried late).
_FINISH_NEW = (
    "INSERT OR IGNORE INTO jobs (id, status, attempts, result, error_type, error_message, error_reason, result_error,"
    " finished_at, updated_at, expires_at, task, queue, enqueued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
)
_IN = ", ".join(f"'{s}'" for s in sorted(CANCELLABLE))
_BUSY_TIMEOUT_MS = 10_000
_MAX_RESULT_BYTES = 1_048_576


class SqliteJobStore:
    """Job state in the SQLite file at ``path`` (``":memory:"``: private to this store)."""

    max_result_bytes: ClassVar[int] = _MAX_RESULT_BYTES

    def __init__(self, path: str, *, ttl_s: float, kind: str = "local", clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.kind = kind
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = -1
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    # -- the protocol -----------------------------------------------------------------------
    def check(self) -> None:
        with self._tx():
            pass

    def ensure(self) -> None:
        self.check()

    def put_queued(self, jobs: Sequence[NewJob]) -> None:
        with self._tx() as (db, now):
            db.executemany(_INSERT_QUEUED, [(j.id, j.task, j.queue, j.unique_key, j.enqueued_at, now, now + self.ttl_s) for j in jobs])

    def reserve_unique(self, key: str, job: NewJob) -> str | None:
        with self._tx() as (db, now):
            held = db.execute(
                "SELECT k.job_id FROM job_keys k JOIN jobs j ON j.id = k.job_id"
                f" WHERE k.key = ? AND k.expires_at > ? AND j.expires_at > ? AND j.status IN ({', '.join(repr(s) for s in sorted(ACTIVE))})",
                (key, now, now),
            ).fetchone()
            if held is not None:
                return str(held[0])
            db.execute("INSERT OR REPLACE INTO job_keys (key, job_id, expires_at) VALUES (?, ?, ?)", (key, job.id, now + self.ttl_s))
            db.execute(_INSERT_QUEUED, (job.id, job.task, job.queue, key, job.enqueued_at, now, now + self.ttl_s))
        return None

    def forget(self, jobs: Sequence[NewJob]) -> None:
        with self._tx() as (db, _):
            db.executemany("DELETE FROM jobs WHERE id = ? AND status = 'queued'", [(j.id,) for j in jobs])
            db.executemany("DELETE FROM job_keys WHERE key = ? AND job_id = ?", [(j.unique_key, j.id) for j in jobs if j.unique_key])

    def claim(self, job_id: str, *, task: str, queue: str, attempt: int, enqueued_at: float | None, record: bool) -> Claim:
        with self._tx() as (db, now):
            return self._claim(db, now, job_id, task=task, queue=queue, attempt=attempt, enqueued_at=enqueued_at, record=record)

    def finish(self, job_id: str, end: Finish) -> None:
        with self._tx() as (db, now):
            self._finish(db, now, job_id, end)

    def apply(self, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> builtins.list[Any]:
        """Several ``claim``/``finish`` calls in one transaction (group commit): the consumer's writer thread
        hands over what accumulated while the previous transaction ran, so a busy worker pays one commit
        for many jobs. All or nothing: if the transaction fails, every call fails with the same error."""
        steps: dict[str, Callable[..., Any]] = {"claim": self._claim, "finish": self._finish}
        with self._tx() as (db, now):
            return [steps[name](db, now, *args, **kwargs) for name, args, kwargs in calls]

    def _claim(self, db: sqlite3.Connection, now: float, job_id: str, *, task: str, queue: str, attempt: int, enqueued_at: float | None, record: bool) -> Claim:
        if record:
            row = db.execute(_CLAIM, (attempt, now, now + self.ttl_s, task, queue, job_id)).fetchone()
            if row is not None:
                return Claim(row[0], bool(row[1]))
        row = db.execute("SELECT status, cancel_requested FROM jobs WHERE id = ? AND expires_at > ?", (job_id, now)).fetchone()
        if row is not None:
            return Claim(row[0], bool(row[1]))  # with record: succeeded or cancelled, left alone
        if record:  # no record (a plain boto3 producer's job, or one expired): create it running
            db.execute(_CLAIM_NEW, (job_id, task, queue, attempt, enqueued_at, now, now, now + self.ttl_s))
        return Claim(None)

    def _finish(self, db: sqlite3.Connection, now: float, job_id: str, end: Finish) -> None:
        values = (*_finish_values(job_id, end, now), now, now + self.ttl_s)
        if db.execute(_FINISH, values).rowcount == 0:
            db.execute(_FINISH_NEW, (*values, end.task, end.queue, end.enqueued_at))
        if end.unique_key and end.status in FINAL:
            db.execute("DELETE FROM job_keys WHERE key = ? AND job_id = ?", (end.unique_key, job_id))

    def set_progress(self, job_id: str, fraction: float, message: str | None) -> None:
        with self._tx() as (db, now):
            db.execute(
                "UPDATE jobs SET progress = ?, progress_message = ?, updated_at = ?, expires_at = ? WHERE id = ? AND status = 'running'",
                (fraction, message, now, now + self.ttl_s, job_id),
            )

    def request_cancel(self, job_id: str) -> bool | None:
        with self._tx() as (db, now):
            row = db.execute("SELECT status FROM jobs WHERE id = ? AND expires_at > ?", (job_id, now)).fetchone()
            if row is None:
                return None
            if row[0] in CANCELLABLE:
                db.execute(f"UPDATE jobs SET status = 'cancelled', finished_at = ?1, updated_at = ?1 WHERE id = ?2 AND status IN ({_IN})", (now, job_id))
                db.execute("DELETE FROM job_keys WHERE job_id = ?", (job_id,))
                return True
            if row[0] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
                return True
            return False

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        marks = ", ".join("?" * len(job_ids))
        rows = self._read(f"SELECT id FROM jobs WHERE cancel_requested = 1 AND id IN ({marks})", list(job_ids))
        return {row[0] for row in rows}

    def get(self, job_id: str) -> JobState | None:
        rows = self._read(f"{_SELECT} WHERE id = ? AND expires_at > ?", [job_id, self.clock()])
        return _state(rows[0]) if rows else None

    def list(self, *, status: str | None = None, task: str | None = None, limit: int = 50) -> list[JobState]:
        where: builtins.list[str] = ["expires_at > ?"]
        params: builtins.list[Any] = [self.clock()]
        for column, value in (("status", status), ("task", task)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self._read(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY enqueued_at DESC, id LIMIT ?", [*params, limit])
        return [_state(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self.path != ":memory:":
                self._db.close()
                self._db = None

    def ledger(self, broker_path: str, tracked: Callable[[str], bool], *, record_running: bool) -> BrokerLedger | None:
        """Claims and end states written inside the local broker's own transactions, when the broker's file
        is this store's (``CLOUDQ_JOB_STORE=local`` on ``CLOUDQ_BROKER=local``); else None."""
        if self.path == ":memory:" or os.path.abspath(self.path) != os.path.abspath(broker_path):
            return None
        return BrokerLedger(self, tracked, record_running=record_running)

    # -- connection and transactions --------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=32)
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if self.path != ":memory:":
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(SCHEMA)
            self._db, self._pid = db, os.getpid()
        return self._db

    @contextmanager
    def _tx(self) -> Iterator[tuple[sqlite3.Connection, float]]:
        with self._lock, translated():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db, self.clock()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.rollback()
                raise

    def _read(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        with self._lock, translated():
            return self._connection().execute(sql, params).fetchall()


class BrokerLedger:
    """The local store's writes on the local broker's connection, inside its transactions (see
    :class:`cloudq.brokers.local.Ledger`): a busy worker's claims and end states cost no transaction,
    thread hop or group commit of their own.

    ``received`` decodes each body (what :meth:`cloudq.wire.Wire.open` does for an unsigned, inline body;
    the App attaches a ledger only when the app does not sign) and claims the jobs of registered, tracked
    tasks with no ETA whose queued record exists, leaving ``Delivery.claimed = (Claim, Envelope)``; every
    other delivery is claimed by the consumer as on any broker. ``deleting`` writes the ``Delivery.record``
    end states (set by :meth:`cloudq.jobs.tracker.JobTracker.finish` for jobs that succeeded) in the
    delete's transaction: recorded and deleted together, or neither (the message comes back)."""

    def __init__(self, store: SqliteJobStore, tracked: Callable[[str], bool], *, record_running: bool) -> None:
        self.store = store
        self.tracked = tracked
        self.record_running = record_running

    def received(self, db: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
        if not self.record_running:
            return  # CLOUDQ_JOB_TRACK=final: the consumer's claim only reads
        opened: dict[str, tuple[Delivery, Envelope]] = {}
        for delivery in deliveries:
            try:
                envelope = Envelope.decode(delivery.body, default_id=delivery.message_id)
            except EnvelopeError:
                continue  # poison: the consumer says so
            if envelope.eta is None and self.tracked(envelope.task):
                opened[envelope.id] = (delivery, envelope)  # one id twice in a receive: the last is claimed here
        if not opened:
            return
        store = self.store
        now = store.clock()
        values = ", ".join("(?, ?)" for _ in opened)
        params = [x for job_id, (delivery, _) in opened.items() for x in (job_id, delivery.receive_count)]
        for job_id, previous, cancel in db.execute(_CLAIM_RECEIVED.format(values=values), (now, now + store.ttl_s, *params)):
            delivery, envelope = opened[job_id]
            delivery.claimed = (Claim(previous, bool(cancel)), envelope)

    def deleting(self, db: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
        records = [d.record for d in deliveries if d.record is not None]
        if not records:
            return
        store = self.store
        now = store.clock()
        expires = now + store.ttl_s
        if db.executemany(_FINISH, [(*_finish_values(job_id, end, now), now, expires) for job_id, end in records]).rowcount < len(records):
            for job_id, end in records:  # some job has no record (expired, or its queued write was dropped)
                store._finish(db, now, job_id, end)
            return
        keys = [(end.unique_key, job_id) for job_id, end in records if end.unique_key and end.status in FINAL]
        if keys:
            db.executemany("DELETE FROM job_keys WHERE key = ? AND job_id = ?", keys)


def _finish_values(job_id: str, end: Finish, now: float) -> tuple[Any, ...]:
    """``_FINISH``'s first nine parameters (then ``updated_at`` and ``expires_at``)."""
    error = end.error
    return (
        job_id, end.status, end.attempts, end.result_json, error.type if error else None, error.message if error else None,
        error.reason if error else None, end.result_error, now if end.status in FINAL else None,
    )  # fmt: skip


def _state(row: tuple[Any, ...]) -> JobState:
    return state_from_record(dict(zip(_COLUMNS, row)))

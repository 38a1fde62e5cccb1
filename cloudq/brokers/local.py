"""The embedded broker: SQS semantics on one SQLite file that several processes share.

Why SQLite: a laptop or a single VM gets a durable queue with no service to run, and a
web app can produce while workers in other processes consume from the same file.

How it stays correct across processes:

* WAL mode, so readers never block the writer and an idle poll takes no write lock;
* a receive is one ``BEGIN IMMEDIATE`` transaction that selects candidates and marks them
  invisible, so two consumers can never take the same message inside its visibility timeout;
* transactions are short and nothing is held while tasks run: a consumer killed with
  SIGKILL leaves only invisible rows, which come back when their visibility timeout passes;
* one connection per thread (and per process), because a sqlite3 connection must not be
  used by two threads at once, and sync sends may come from worker threads.

Async methods run the sync core through :func:`asyncio.to_thread` so the event loop never
waits on the disk. Every visibility, delay and dedup decision reads the injectable
``clock`` (epoch seconds) so tests can jump past a timeout without sleeping. Queues are
created on first use, as in the memory broker; ``retention_s`` is not enforced.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from cloudq.brokers import local_sql
from cloudq.brokers.base import Delivery, MoveProgress, OutgoingMessage, QueueConfig, QueueStats, is_fifo
from cloudq.transient import call_retrying

__all__ = ["Ledger", "LocalBroker"]

T = TypeVar("T")


_BUSY_TIMEOUT_MS = 10_000
_CLOSE_WAIT_S = 5.0  # how long close waits for calls still running in threads
_POLL_MIN_S = 0.02
_POLL_MAX_S = 0.05
class Ledger(Protocol):
    """Writes another part of cloudq makes inside this broker's own transactions, on the same file.

    The local job store (:mod:`cloudq.jobs.sqlite`) keeps its ``jobs`` table in this file: a job's
    claim rides on the receive that takes its message, and its end state on the delete of that message.
    One transaction instead of three per step, no thread hop of its own, and the end state and the
    delete commit together (the job store's order, recorded before deleted, holds trivially)."""

    def received(self, db: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
        """Claim what these deliveries carry (sets ``Delivery.claimed`` where it did)."""
        ...

    def deleting(self, db: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
        """Write the end states these deliveries carry (``Delivery.record``)."""
        ...


class _ThreadConnection(threading.local):
    """One thread's connection, tagged with the broker generation and process that opened it."""

    db: sqlite3.Connection | None = None
    generation = -1
    pid = -1


class LocalBroker:
    """A broker on the SQLite file at ``path``; ``clock`` returns epoch seconds."""

    creates_queues_on_use: ClassVar[bool] = True
    """A queue here is a name in the file, created by its first send or receive (its DLQ by the first
    dead letter): none is ever missing, so the ops commands report one not used yet as there and empty,
    where on SQS, whose queues the infrastructure creates, it is an error. ``stats`` still says which
    queues the file holds (``exists``)."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._local = _ThreadConnection()
        self._lock = threading.Lock()
        self._calls = 0  # sync calls running in threads for async callers (see _offload and close)
        self._calls_done = threading.Condition()
        self._connections: list[sqlite3.Connection] = []
        self._generation = 0
        self._ledger: Ledger | None = None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        call_retrying(self._prepare_file, stop_after_s=_BUSY_TIMEOUT_MS / 1000)

    def _prepare_file(self) -> None:
        """WAL mode and the tables, once per file. Processes opening a new file together race for it,
        and SQLite may answer "database is locked" without waiting for the busy timeout (switching to
        WAL, recovering a WAL index); that is a BrokerUnavailable, retried, never a crash at start."""
        with local_sql.translated():
            db = self._db()
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.executescript(local_sql.SCHEMA)

    async def prepare(self, queues: Sequence[str]) -> None:
        """Nothing to resolve: queues are rows of this file, created on first use."""

    def attach_ledger(self, ledger: Ledger | None) -> None:
        """Have ``ledger`` write inside every receive and delete from now on (None: stop)."""
        self._ledger = ledger

    # -- producer ---------------------------------------------------------------------------
    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Send messages in order in one transaction, returning their message ids."""
        if not messages:
            return []
        with self._write() as db:
            now = self.clock()
            local_sql.create_queue(db, queue)
            if is_fifo(queue):
                ids, rows = local_sql.fifo_rows(db, queue, messages, now)
            else:
                ids, rows = local_sql.standard_rows(queue, messages, now)
            db.executemany(local_sql.INSERT, rows)
        return ids

    async def asend(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        return await self._offload(self.send, queue, messages)

    # -- consumer ---------------------------------------------------------------------------
    async def receive(
        self, queue: str, *, max_messages: int, wait_s: float, visibility_timeout_s: int | None = None
    ) -> list[Delivery]:
        """Long-poll: retry with a short, growing pause until something is visible or ``wait_s`` passes."""
        deadline = time.monotonic() + wait_s
        pause_s = _POLL_MIN_S
        while True:
            got = await self._receive_in_thread(queue, max_messages, visibility_timeout_s)
            remaining_s = deadline - time.monotonic()
            if got or remaining_s <= 0:
                return got
            await asyncio.sleep(min(pause_s, remaining_s))
            pause_s = min(pause_s * 1.5, _POLL_MAX_S)

    async def _receive_in_thread(self, queue: str, max_messages: int, visibility_timeout_s: int | None) -> list[Delivery]:
        """A thread cannot be cancelled: if the caller is (a worker stopping), the receive still
        completes, and what it took is made visible again at once instead of after its timeout."""
        receiving = asyncio.ensure_future(self._offload(self.receive_now, queue, max_messages, visibility_timeout_s))
        try:
            return await asyncio.shield(receiving)
        except asyncio.CancelledError:
            taken = await receiving
            if taken:
                await self._offload(self._change_visibility, queue, taken, 0)
            raise

    def receive_now(self, queue: str, max_messages: int, visibility_timeout_s: int | None = None) -> list[Delivery]:
        """One receive without waiting: the sync core of :meth:`receive`."""
        if max_messages <= 0 or not self._any_visible(queue):
            return []
        with self._write() as db:
            now = self.clock()
            config = local_sql.queue_config(db, queue)
            timeout_s = config.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
            rows = local_sql.candidates(db, queue, config, max_messages, now)
            receipts = [f"{row[0]}:{uuid.uuid4().hex}" for row in rows]
            db.executemany(local_sql.MARK_RECEIVED, [(now + timeout_s, r, row[0]) for row, r in zip(rows, receipts)])
            deliveries = [local_sql.delivery(queue, row, receipt, row[5] + 1) for row, receipt in zip(rows, receipts)]
            if self._ledger is not None and deliveries:
                self._ledger.received(db, deliveries)
        return deliveries

    def _any_visible(self, queue: str) -> bool:
        """A read-only check first, so idle polls never contend for the write lock."""
        sql = "SELECT 1 FROM messages WHERE queue = ? AND visible_at <= ? LIMIT 1"
        return bool(self._read(sql, (queue, self.clock())))

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        await self._offload(self._ack, queue, deliveries)

    def _ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        keys = local_sql.receipt_keys(queue, deliveries)
        if keys:
            with self._write() as db:
                db.executemany("DELETE FROM messages WHERE id = ? AND queue = ? AND receipt = ?", keys)
                if self._ledger is not None:
                    self._ledger.deleting(db, deliveries)

    async def change_visibility(self, queue: str, deliveries: Sequence[Delivery], timeout_s: int) -> None:
        await self._offload(self._change_visibility, queue, deliveries, timeout_s)

    def _change_visibility(self, queue: str, deliveries: Sequence[Delivery], timeout_s: int) -> None:
        keys = local_sql.receipt_keys(queue, deliveries)
        if keys:
            with self._write() as db:
                visible_at = self.clock() + timeout_s
                update = "UPDATE messages SET visible_at = ? WHERE id = ? AND queue = ? AND receipt = ?"
                db.executemany(update, [(visible_at, *key) for key in keys])

    # -- admin ------------------------------------------------------------------------------
    def ensure_queue(self, queue: str, config: QueueConfig) -> None:
        """Create or update the queue's settings, and create its dead-letter queue if missing."""
        with self._write() as db:
            db.execute(
                "INSERT INTO queues (name, visibility_timeout_s, dlq, max_receive_count) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET visibility_timeout_s = excluded.visibility_timeout_s,"
                " dlq = excluded.dlq, max_receive_count = excluded.max_receive_count",
                (queue, config.visibility_timeout_s, config.dead_letter_queue, config.max_receive_count),
            )
            if config.dead_letter_queue:
                local_sql.create_queue(db, config.dead_letter_queue)

    def stats(self, queue: str) -> QueueStats:
        now = self.clock()
        exists, visible, in_flight, delayed, oldest = self._read(local_sql.STATS, (queue, now))[0]
        return QueueStats(queue, bool(exists), visible, in_flight, delayed, None if oldest is None else max(0.0, now - oldest))

    def list_queues(self, prefix: str = "") -> list[str]:
        names = self._read("SELECT name FROM queues ORDER BY name", ())
        return [name for (name,) in names if name.startswith(prefix)]

    def peek(self, queue: str, n: int = 10) -> list[Delivery]:
        """Up to ``n`` messages in send order, in flight or not, changing nothing.

        For the ops CLI: looking into a dead-letter queue must not bump receive counts or hide
        messages from workers. The receipt is empty, so acking a peeked message does nothing.
        """
        rows = self._read(f"SELECT {local_sql.COLUMNS} FROM messages WHERE queue = ? ORDER BY id LIMIT ?", (queue, n))
        return [local_sql.delivery(queue, row, "", row[5]) for row in rows]

    def move_messages(
        self, source: str, destination: str, max_messages: int | None = None, *, on_progress: MoveProgress | None = None
    ) -> int:
        """Move visible messages (oldest first) to ``destination`` with receive counts reset.

        This is the DLQ redrive of SQS's message move task: the moved jobs get a full set of
        attempts again. In-flight messages stay, since a consumer may still ack them.
        """
        with self._write() as db:
            now = self.clock()
            local_sql.create_queue(db, destination)
            cursor = db.execute(
                "UPDATE messages SET queue = ?1, visible_at = ?2, receive_count = 0, receipt = NULL"
                " WHERE id IN (SELECT id FROM messages WHERE queue = ?3 AND visible_at <= ?2 ORDER BY id LIMIT ?4)",
                (destination, now, source, -1 if max_messages is None else max_messages),
            )
        if on_progress is not None:  # one transaction: all at once
            on_progress(cursor.rowcount, cursor.rowcount)
        return cursor.rowcount

    def purge(self, queue: str) -> int:
        """Delete every message in ``queue``, in flight or not (as SQS's PurgeQueue); returns how many."""
        with self._write() as db:
            return db.execute("DELETE FROM messages WHERE queue = ?", (queue,)).rowcount

    def close(self) -> None:
        """Close every thread's connection; a later call opens fresh ones.

        Calls still running in threads are waited for first (up to ``_CLOSE_WAIT_S``): a caller cancelled
        while its thread works (a worker stopping mid-release) must not have the connection closed under it,
        which would lose that write without a word."""
        with self._calls_done:
            self._calls_done.wait_for(lambda: self._calls == 0, timeout=_CLOSE_WAIT_S)
        with self._lock:
            connections, self._connections = self._connections, []
            self._generation += 1
        for db in connections:
            db.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a sync call in a thread, counted so that :meth:`close` waits for it."""
        return await asyncio.to_thread(self._counted, fn, *args)

    def _counted(self, fn: Callable[..., T], *args: Any) -> T:
        with self._calls_done:
            self._calls += 1
        try:
            return fn(*args)
        finally:
            with self._calls_done:
                self._calls -= 1
                self._calls_done.notify_all()

    # -- connections and transactions -------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        """This thread's connection; a forked child or a closed broker gets a new one."""
        local, db = self._local, self._local.db
        if db is None or local.generation != self._generation or local.pid != os.getpid():
            db = local.db = self._connect()
            local.generation, local.pid = self._generation, os.getpid()
        return db

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False only so close() may run on another thread; each connection
        # is used by the one thread that opened it. The statement cache keeps statements prepared.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=64)
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            self._connections.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction; IMMEDIATE takes the write lock up front, so no upgrade deadlocks."""
        with local_sql.translated():
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # never leave the thread's connection inside a transaction
                    db.rollback()
                raise

    def _read(self, sql: str, params: Sequence[Any]) -> list[local_sql.Row]:
        with local_sql.translated():
            return self._db().execute(sql, params).fetchall()



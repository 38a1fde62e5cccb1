"""The local broker's SQLite side: schema, statements, and the row helpers its methods share.

Kept apart from :mod:`cloudq.brokers.local` (the broker's methods, connections and transactions) so
that each reads on its own: here is what is stored and how one statement reads or writes it.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from cloudq.brokers.base import Delivery, OutgoingMessage, QueueConfig, is_fifo
from cloudq.errors import BrokerError, BrokerUnavailable

Row = tuple[Any, ...]

DEDUP_WINDOW_S = 300.0
DEFAULTS = QueueConfig()

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    visibility_timeout_s INTEGER NOT NULL,
    dlq TEXT,
    max_receive_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT,
    group_id TEXT,
    dedup_id TEXT,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at);
CREATE TABLE IF NOT EXISTS dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
"""

COLUMNS = "id, message_id, body, attributes, group_id, receive_count, sent_at"
INSERT = (
    "INSERT INTO messages (queue, message_id, body, attributes, group_id, dedup_id, visible_at, sent_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
CREATE_QUEUE = "INSERT OR IGNORE INTO queues (name, visibility_timeout_s, dlq, max_receive_count) VALUES (?, ?, ?, ?)"
# Standard queues: (visible_at, id) follows the index, so LIMIT stops early without a sort.
SELECT_STANDARD = (
    f"SELECT {COLUMNS} FROM messages WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, id LIMIT ?3"
)
# FIFO queues: send order, skipping every group that has a message in flight.
SELECT_FIFO = f"""
SELECT {COLUMNS} FROM messages
WHERE queue = ?1 AND visible_at <= ?2 AND COALESCE(group_id, '') NOT IN (
    SELECT COALESCE(group_id, '') FROM messages WHERE queue = ?1 AND visible_at > ?2 AND receive_count > 0
)
ORDER BY id LIMIT ?3
"""
MARK_RECEIVED = "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?, receipt = ? WHERE id = ?"
STATS = """
SELECT (SELECT COUNT(*) FROM queues WHERE name = ?1),
       COALESCE(SUM(visible_at <= ?2), 0),
       COALESCE(SUM(visible_at > ?2 AND receive_count > 0), 0),
       COALESCE(SUM(visible_at > ?2 AND receive_count = 0), 0),
       MIN(sent_at)
FROM messages WHERE queue = ?1
"""


# -- pure helpers and single statements, shared by the methods above ----------------------------
@contextmanager
def translated() -> Iterator[None]:
    """SQLite errors become cloudq's broker errors where they enter the library."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise BrokerUnavailable(f"local broker is busy: {text}") from exc
        raise BrokerError(f"local broker failed: {text}") from exc
    except sqlite3.Error as exc:
        raise BrokerError(f"local broker failed: {exc}") from exc


def create_queue(db: sqlite3.Connection, queue: str) -> None:
    """Queues are created on first use with default settings, as in the memory broker."""
    db.execute(CREATE_QUEUE, (queue, DEFAULTS.visibility_timeout_s, None, DEFAULTS.max_receive_count))


def queue_config(db: sqlite3.Connection, queue: str) -> QueueConfig:
    sql = "SELECT visibility_timeout_s, dlq, max_receive_count FROM queues WHERE name = ?"
    row = db.execute(sql, (queue,)).fetchone()
    if row is None:
        create_queue(db, queue)
        return DEFAULTS
    return QueueConfig(visibility_timeout_s=row[0], dead_letter_queue=row[1], max_receive_count=row[2])


def candidates(db: sqlite3.Connection, queue: str, config: QueueConfig, max_messages: int, now: float) -> list[Row]:
    """Messages to deliver; those a receive would take past ``max_receive_count`` go to the DLQ.

    Redriven rows leave the queue, so each pass either returns or shrinks the problem.
    """
    sql = SELECT_FIFO if is_fifo(queue) else SELECT_STANDARD
    dlq = config.dead_letter_queue
    while True:
        rows = db.execute(sql, (queue, now, max_messages)).fetchall()
        spent = [row for row in rows if row[5] >= config.max_receive_count] if dlq else []
        if not dlq or not spent:
            return rows
        create_queue(db, dlq)
        db.executemany(
            "UPDATE messages SET queue = ?, visible_at = ?, receipt = NULL WHERE id = ?",
            [(dlq, now, row[0]) for row in spent],
        )


def message_row(queue: str, m: OutgoingMessage, now: float) -> tuple[str, Row]:
    message_id = str(uuid.uuid4())
    attributes = json.dumps(dict(m.attributes)) if m.attributes else None
    return message_id, (queue, message_id, m.body, attributes, m.group_id, m.dedup_id, now + m.delay_s, now)


def standard_rows(queue: str, messages: Sequence[OutgoingMessage], now: float) -> tuple[list[str], list[Row]]:
    pairs = [message_row(queue, m, now) for m in messages]
    return [message_id for message_id, _ in pairs], [row for _, row in pairs]


def fifo_rows(
    db: sqlite3.Connection, queue: str, messages: Sequence[OutgoingMessage], now: float
) -> tuple[list[str], list[Row]]:
    """A dedup id seen in the last 5 minutes returns the original message id and enqueues nothing."""
    db.execute("DELETE FROM dedup WHERE queue = ? AND sent_at <= ?", (queue, now - DEDUP_WINDOW_S))
    ids: list[str] = []
    rows: list[Row] = []
    fresh: dict[str, str] = {}
    for m in messages:
        original = seen_dedup(db, queue, m.dedup_id, fresh) if m.dedup_id else None
        if original:
            ids.append(original)
            continue
        message_id, row = message_row(queue, m, now)
        ids.append(message_id)
        rows.append(row)
        if m.dedup_id:
            fresh[m.dedup_id] = message_id
    db.executemany("INSERT OR REPLACE INTO dedup VALUES (?, ?, ?, ?)", [(queue, k, v, now) for k, v in fresh.items()])
    return ids, rows


def seen_dedup(db: sqlite3.Connection, queue: str, dedup_id: str, fresh: dict[str, str]) -> str | None:
    if dedup_id in fresh:
        return fresh[dedup_id]
    row = db.execute("SELECT message_id FROM dedup WHERE queue = ? AND dedup_id = ?", (queue, dedup_id)).fetchone()
    return row[0] if row else None


def receipt_keys(queue: str, deliveries: Sequence[Delivery]) -> list[tuple[int, str, str]]:
    """(row id, queue, receipt) for each well-formed receipt; the row id makes the lookup a PK hit."""
    keys = []
    for d in deliveries:
        row_id, sep, _ = d.receipt.partition(":")
        if sep and row_id.isdigit():
            keys.append((int(row_id), queue, d.receipt))
    return keys


def delivery(queue: str, row: Row, receipt: str, receive_count: int) -> Delivery:
    _, message_id, body, attributes, group_id, _, sent_at = row
    return Delivery(
        queue=queue,
        message_id=message_id,
        receipt=receipt,
        body=body,
        receive_count=receive_count,
        attributes=json.loads(attributes) if attributes else {},
        sent_at=datetime.fromtimestamp(sent_at, timezone.utc),
        group_id=group_id,
    )

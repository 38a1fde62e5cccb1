"""In-process broker with SQS semantics, for unit tests and users' own tests.

Queues are created on first use (it is a test double, not a deployment target).
Visibility timeouts, receive counts, delays, redrive after ``max_receive_count``
and FIFO group ordering behave as on SQS. The clock is injectable so tests can
jump past a visibility timeout without sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cloudq.brokers.base import Delivery, MoveProgress, OutgoingMessage, QueueConfig, QueueStats, is_fifo

__all__ = ["MemoryBroker"]

_POLL_S = 0.005
_DEDUP_WINDOW_S = 300.0


@dataclass(slots=True)
class _Message:
    seq: int
    message_id: str
    body: str
    attributes: dict[str, str]
    group_id: str | None
    visible_at: float
    receive_count: int = 0
    receipt: str | None = None
    sent_at: float = 0.0  # clock time of the send, kept through redrives (SQS's SentTimestamp)


@dataclass(slots=True)
class _Queue:
    config: QueueConfig = field(default_factory=QueueConfig)
    messages: dict[str, _Message] = field(default_factory=dict)
    dedup: dict[str, tuple[float, str]] = field(default_factory=dict)


class MemoryBroker:
    """A dict of queues behind a lock; ``clock`` returns seconds (monotonic by default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._queues: dict[str, _Queue] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.calls: dict[str, int] = {}

    async def prepare(self, queues: Sequence[str]) -> None:
        """Nothing to resolve: queues are created on first use."""

    # -- producer ---------------------------------------------------------------------------
    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        self._count("send", len(messages))
        now = self.clock()
        with self._lock:
            q = self._queue(queue)
            return [self._put(q, queue, m, now) for m in messages]

    async def asend(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        return self.send(queue, messages)

    def _put(self, q: _Queue, queue: str, m: OutgoingMessage, now: float) -> str:
        if is_fifo(queue) and m.dedup_id:
            seen = q.dedup.get(m.dedup_id)
            if seen and now - seen[0] < _DEDUP_WINDOW_S:
                return seen[1]
        message_id = str(uuid.uuid4())
        if m.dedup_id:
            q.dedup[m.dedup_id] = (now, message_id)
        q.messages[message_id] = _Message(
            next(self._seq), message_id, m.body, dict(m.attributes), m.group_id, now + m.delay_s, sent_at=now
        )
        return message_id

    # -- consumer ---------------------------------------------------------------------------
    async def receive(
        self, queue: str, *, max_messages: int, wait_s: float, visibility_timeout_s: int | None = None
    ) -> list[Delivery]:
        self._count("receive", 1)
        deadline = time.monotonic() + wait_s
        while True:
            got = self.receive_now(queue, max_messages, visibility_timeout_s)
            if got or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(_POLL_S)

    def receive_now(self, queue: str, max_messages: int, visibility_timeout_s: int | None = None) -> list[Delivery]:
        now = self.clock()
        with self._lock:
            q = self._queue(queue)
            timeout = q.config.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
            busy_groups = {m.group_id for m in q.messages.values() if m.visible_at > now and m.receive_count}
            out: list[Delivery] = []
            for m in sorted(q.messages.values(), key=lambda m: m.seq):
                if len(out) >= max_messages:
                    break
                if m.visible_at > now or (is_fifo(queue) and m.group_id in busy_groups):
                    continue
                if self._redrive(q, queue, m):
                    continue
                m.receive_count += 1
                m.visible_at = now + timeout
                m.receipt = f"{m.message_id}:{m.receive_count}"
                out.append(self._delivery(queue, m))
            return out

    def _redrive(self, q: _Queue, queue: str, m: _Message) -> bool:
        """SQS moves a message to the DLQ when a receive would exceed maxReceiveCount."""
        dlq = q.config.dead_letter_queue
        if not dlq or m.receive_count < q.config.max_receive_count:
            return False
        del q.messages[m.message_id]
        target = self._queue(dlq)
        target.messages[m.message_id] = _Message(
            next(self._seq), m.message_id, m.body, m.attributes, m.group_id, self.clock(), m.receive_count, sent_at=m.sent_at
        )
        return True

    @staticmethod
    def _delivery(queue: str, m: _Message) -> Delivery:
        assert m.receipt is not None
        sent_at = datetime.fromtimestamp(m.sent_at, timezone.utc)
        return Delivery(queue, m.message_id, m.receipt, m.body, m.receive_count, dict(m.attributes), sent_at, m.group_id)

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        self._count("ack", 1)
        with self._lock:
            q = self._queue(queue)
            for d in deliveries:
                m = q.messages.get(d.message_id)
                if m is not None and m.receipt == d.receipt:
                    del q.messages[d.message_id]

    async def change_visibility(self, queue: str, deliveries: Sequence[Delivery], timeout_s: int) -> None:
        self._count("change_visibility", 1)
        now = self.clock()
        with self._lock:
            q = self._queue(queue)
            for d in deliveries:
                m = q.messages.get(d.message_id)
                if m is not None and m.receipt == d.receipt:
                    m.visible_at = now + timeout_s

    # -- admin ------------------------------------------------------------------------------
    def ensure_queue(self, queue: str, config: QueueConfig) -> None:
        with self._lock:
            self._queue(queue).config = config
            if config.dead_letter_queue:
                self._queue(config.dead_letter_queue)

    def stats(self, queue: str) -> QueueStats:
        now = self.clock()
        with self._lock:
            if queue not in self._queues:
                return QueueStats(queue, exists=False)
            msgs = list(self._queues[queue].messages.values())
        visible = sum(1 for m in msgs if m.visible_at <= now)
        in_flight = sum(1 for m in msgs if m.visible_at > now and m.receive_count)
        oldest = max(0.0, now - min(m.sent_at for m in msgs)) if msgs else None
        return QueueStats(queue, True, visible, in_flight, len(msgs) - visible - in_flight, oldest)

    def list_queues(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(name for name in self._queues if name.startswith(prefix))

    def peek(self, queue: str, n: int = 10) -> list[Delivery]:
        """Up to ``n`` messages in send order, in flight or not, changing nothing (empty receipts)."""
        with self._lock:
            found = sorted(self._queue(queue).messages.values(), key=lambda m: m.seq)[: max(0, n)]
            return [Delivery(queue, m.message_id, "", m.body, m.receive_count, dict(m.attributes), None, m.group_id) for m in found]

    def move_messages(
        self, source: str, destination: str, max_messages: int | None = None, *, on_progress: MoveProgress | None = None
    ) -> int:
        """Move visible messages (oldest first) to ``destination`` with receive counts reset."""
        now = self.clock()
        with self._lock:
            src, dst = self._queue(source), self._queue(destination)
            visible = sorted((m for m in src.messages.values() if m.visible_at <= now), key=lambda m: m.seq)
            chosen = visible if max_messages is None else visible[: max(0, max_messages)]
            for m in chosen:
                del src.messages[m.message_id]
                dst.messages[m.message_id] = _Message(next(self._seq), m.message_id, m.body, m.attributes, m.group_id, now, sent_at=m.sent_at)
        if on_progress is not None:
            on_progress(len(chosen), len(chosen))
        return len(chosen)

    def purge(self, queue: str) -> int:
        """Delete every message, in flight or not; returns how many."""
        with self._lock:
            q = self._queue(queue)
            count = len(q.messages)
            q.messages.clear()
            return count

    def messages(self, queue: str) -> list[str]:
        """Bodies currently stored in ``queue``, visible or not (a test helper)."""
        with self._lock:
            q = self._queue(queue)
            return [m.body for m in sorted(q.messages.values(), key=lambda m: m.seq)]

    def attributes(self, queue: str) -> list[dict[str, str]]:
        with self._lock:
            q = self._queue(queue)
            return [dict(m.attributes) for m in sorted(q.messages.values(), key=lambda m: m.seq)]

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def _queue(self, name: str) -> _Queue:
        return self._queues.setdefault(name, _Queue())

    def _count(self, op: str, n: int) -> None:
        self.calls[op] = self.calls.get(op, 0) + n

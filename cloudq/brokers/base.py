"""The broker protocols: the few primitives cloudq needs from a queue service, in two planes.

:class:`Broker` is the data plane (prepare, send, receive, ack, change visibility, close): all that
producers, the worker and the Lambda handler may call. :class:`AdminBroker` is the admin plane
(ensure, stats, list, peek, move, purge) of the ops commands and tests. Kept apart so that a
runtime cannot start depending on an admin call (SQS rate-limits and IAM-scopes those differently),
and so that callers never probe a broker for what it can do.

Everything above this line (retry policy, dead-lettering with a reason, batching
of deletes and visibility changes, serialization, logging) is written once in the
worker and executor. Everything below it is a transport: SQS (boto3 + aioboto3),
the embedded SQLite broker, or the in-memory broker for tests. All of them honour
SQS's semantics: a received message stays invisible for the visibility timeout,
its receive count grows with each receive, it comes back unless acknowledged, and
queues may delay messages and dead-letter them after ``max_receive_count`` receives.

Brokers take *physical* queue names (prefix applied); the app maps logical names.
Producers are sync and async (``send``/``asend``); consumers are async only,
because the worker and the Lambda handler each drive one event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from cloudq.errors import ConfigurationError

__all__ = ["AdminBroker", "Broker", "Delivery", "MoveProgress", "OutgoingMessage", "QueueConfig", "QueueStats", "admin_of", "is_fifo"]

SQS_MAX_BATCH = 10
SQS_MAX_DELAY_S = 900
SQS_MAX_VISIBILITY_S = 43_200

MoveProgress = Callable[[int, int | None], None]
"""``on_progress(moved, total)`` of :meth:`AdminBroker.move_messages`; ``total`` is approximate, or None if unknown."""


def is_fifo(queue: str) -> bool:
    return queue.endswith(".fifo")


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to send: an encoded envelope plus SQS send options."""

    body: str
    delay_s: int = 0
    group_id: str | None = None
    dedup_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Delivery:
    """One received copy of a message; ``receipt`` is what ack and visibility changes need."""

    queue: str
    message_id: str
    receipt: str
    body: str
    receive_count: int
    attributes: dict[str, str] = field(default_factory=dict)
    sent_at: datetime | None = None
    group_id: str | None = None
    aws_trace_header: str | None = None
    """SQS's ``AWSTraceHeader`` system attribute (X-Ray), when the sender had one; tracing links it."""
    claimed: Any = None
    """The job store's claim of this delivery when the broker made it inside its own receive (the local
    broker and the local store share one SQLite file: see :class:`cloudq.brokers.local.Ledger`); None:
    the consumer claims it."""
    record: Any = None
    """A job's end state for the broker to write in the same transaction as this delivery's delete
    (the same pair); None: nothing, or the consumer wrote it."""


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """What ``ensure_queue`` creates: the queue's own settings and its redrive policy."""

    visibility_timeout_s: int = 30
    dead_letter_queue: str | None = None
    max_receive_count: int = 10
    retention_s: int = 1_209_600


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Approximate counts, as SQS reports them; ``exists`` is False for a missing queue.

    ``oldest_age_s``: seconds since the oldest message was sent, where the same call can tell (local and
    memory brokers); None on SQS, which reports it only as the CloudWatch metric ApproximateAgeOfOldestMessage.
    """

    queue: str
    exists: bool
    visible: int = 0
    in_flight: int = 0
    delayed: int = 0
    oldest_age_s: float | None = None


@runtime_checkable
class Broker(Protocol):
    """The data plane: what producers, the worker and the Lambda handler call. Brokers batch.

    Never creates, lists or inspects queues: at run time they exist already (infra owns them), and
    :meth:`prepare` says so up front.
    """

    async def prepare(self, queues: Sequence[str]) -> None:
        """Resolve and verify ``queues`` before consuming them; raises QueueNotFound or BrokerUnavailable.

        On SQS this looks up and caches each queue URL (one GetQueueUrl each, never again afterwards),
        so a worker fails fast on a missing queue and waits out an unreachable endpoint before its
        first poll. A no-op for brokers that create queues on first use (memory, local).
        """

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Send messages (in order), returning their message ids."""

    async def asend(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """The async twin of :meth:`send`."""

    async def receive(
        self, queue: str, *, max_messages: int, wait_s: float, visibility_timeout_s: int | None = None
    ) -> list[Delivery]:
        """Receive up to ``max_messages`` (at most 10), waiting up to ``wait_s`` for the first."""

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Delete messages that are done with."""

    async def change_visibility(self, queue: str, deliveries: Sequence[Delivery], timeout_s: int) -> None:
        """Make messages visible again after ``timeout_s`` from now (0: at once)."""

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class AdminBroker(Protocol):
    """The admin plane: what ``cloudq queues ensure``, ``status``, ``dlq`` and ``purge`` call, and tests.

    Never on a producer's, worker's or Lambda handler's path. Every cloudq broker implements both
    protocols; :func:`admin_of` gives the ops commands a broker's admin side, or says it has none.
    """

    def ensure_queue(self, queue: str, config: QueueConfig) -> None:
        """Create the queue if missing, else bring its settings up to ``config``."""

    def stats(self, queue: str) -> QueueStats:
        """Approximate visible / in-flight / delayed counts; ``exists=False`` for a missing queue."""

    def list_queues(self, prefix: str = "") -> list[str]:
        """Names of the queues that exist and start with ``prefix``, sorted."""

    def peek(self, queue: str, n: int = 10) -> list[Delivery]:
        """Up to ``n`` messages without consuming them; their receipts are empty (acking does nothing)."""

    def move_messages(
        self, source: str, destination: str, max_messages: int | None = None, *, on_progress: MoveProgress | None = None
    ) -> int:
        """Move messages (a DLQ redrive) to ``destination`` as fresh jobs; returns how many moved."""

    def purge(self, queue: str) -> int:
        """Delete every message in ``queue``; returns how many there were (approximate on SQS)."""


def admin_of(broker: Broker) -> AdminBroker:
    """``broker``'s admin side. cloudq's brokers all have one; a user's own data-plane-only broker
    (``App(broker=...)``) gets a clear error instead of an AttributeError halfway through a command."""
    if not isinstance(broker, AdminBroker):
        raise ConfigurationError(f"the {type(broker).__name__} broker has no admin methods; this command needs SQS, local or memory")
    return broker


def chunked(items: Sequence, size: int = SQS_MAX_BATCH) -> list[Sequence]:
    """Split into SQS-sized batches; every batched call in cloudq goes through here."""
    return [items[start : start + size] for start in range(0, len(items), size)]

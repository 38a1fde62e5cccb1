"""The producer: turns calls into envelopes and sends them, sync (boto3) or async (aioboto3).

Building messages is pure and shared; ``send`` and ``asend`` differ only in the one
broker call. Middleware's ``on_enqueue`` sees every envelope before anything is sent. Delays
beyond SQS's 15-minute maximum become an envelope ``eta``: the message is sent with the maximum
delay and the worker re-sends it until it is due.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cloudq.brokers.base import SQS_MAX_DELAY_S, OutgoingMessage, is_fifo
from cloudq.envelope import Envelope, utcnow
from cloudq.errors import ConfigurationError

if TYPE_CHECKING:
    from cloudq.brokers.base import Broker
    from cloudq.middleware import MiddlewareChain
    from cloudq.settings import Settings
    from cloudq.settings_env import EnvSettings

__all__ = ["JobRef", "Producer", "SendOptions", "outgoing"]

Call = tuple[tuple[Any, ...], dict[str, Any]]
# The longest delay a job may be given: beyond 15 minutes it travels as an ETA and is re-sent every 15
# minutes until due, so a year already means 35,000 re-sends; 1e12 s is past any date Python can hold.
MAX_DELAY_S = 366 * 24 * 3600


@dataclass(frozen=True, slots=True)
class JobRef:
    """What ``delay`` returns: enough to find the job in logs and in the queue."""

    id: str
    task: str
    queue: str
    message_id: str


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Per-send options; ``delay`` accepts seconds or a timedelta (beyond 15 minutes: an ETA)."""

    delay: float | timedelta | None = None
    queue: str | None = None
    group_id: str | None = None
    dedup_id: str | None = None

    @property
    def delay_s(self) -> float:
        delay = self.delay.total_seconds() if isinstance(self.delay, timedelta) else (self.delay or 0)
        if not isinstance(delay, (int, float)) or not math.isfinite(delay) or not 0 <= delay <= MAX_DELAY_S:
            raise ConfigurationError(f"delay must be 0..{MAX_DELAY_S} seconds (366 days), got {delay!r}")
        return float(delay)

    def merge(self, **changes: Any) -> SendOptions:
        unknown = set(changes) - {"delay", "queue", "group_id", "dedup_id"}
        if unknown:
            raise ConfigurationError(f"unknown send option(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})




def outgoing(envelope: Envelope, queue: str, options: SendOptions) -> tuple[Envelope, OutgoingMessage]:
    """The SQS message for an envelope, applying delay/ETA and FIFO options."""
    delay_s = options.delay_s
    if is_fifo(queue):
        if delay_s:
            raise ConfigurationError(f"queue {queue!r} is FIFO: per-job delays are not supported by SQS FIFO queues")
        return envelope, OutgoingMessage(
            envelope.encode(), group_id=options.group_id or "default", dedup_id=options.dedup_id or envelope.id
        )
    if options.group_id or options.dedup_id:
        raise ConfigurationError(f"group_id/dedup_id need a FIFO queue (name ending .fifo), not {queue!r}")
    if delay_s > SQS_MAX_DELAY_S:
        envelope = replace(envelope, eta=envelope.enqueued_at + timedelta(seconds=delay_s))
    return envelope, OutgoingMessage(envelope.encode(), delay_s=min(SQS_MAX_DELAY_S, round(delay_s)))


class Producer:
    """Sends jobs for an app; queues are logical names, mapped to physical ones here.

    It carries the app's ``settings`` (tasks read their default queue and retries from it), the
    broker (called on first send, so building an app opens nothing) and the middleware chain.
    """

    def __init__(self, settings: Settings | EnvSettings, broker: Callable[[], Broker], middleware: MiddlewareChain) -> None:
        self.settings = settings
        self._broker = broker
        self.middleware = middleware

    @contextmanager
    def sending_to(self, broker: Broker) -> Iterator[None]:
        """Send through ``broker`` instead of the app's inside the block (``cloudq.testing.eager`` runs
        each job at once this way); the app's broker is back afterwards, error or not."""
        previous = self._broker
        self._broker = lambda: broker
        try:
            yield
        finally:
            self._broker = previous

    def _build(self, task: str, queue: str, calls: Sequence[Call], options: SendOptions) -> tuple[str, list[Envelope], list[OutgoingMessage]]:
        queue = options.queue or queue
        now = utcnow()
        envelopes = self.middleware.enqueue_all([Envelope(task, args, kwargs, enqueued_at=now) for args, kwargs in calls])
        pairs = [outgoing(envelope, queue, options) for envelope in envelopes]
        return queue, [p[0] for p in pairs], [p[1] for p in pairs]

    def _refs(self, task: str, queue: str, envelopes: list[Envelope], message_ids: list[str]) -> list[JobRef]:
        # No log line per job here: this is a web request's hot path, and structlog's unconfigured
        # default would print it to the host application's stdout.
        return [JobRef(e.id, task, queue, mid) for e, mid in zip(envelopes, message_ids)]

    def send(self, task: str, queue: str, calls: Sequence[Call], options: SendOptions) -> list[JobRef]:
        queue, envelopes, messages = self._build(task, queue, calls, options)
        if not messages:
            return []
        ids = self._broker().send(self.settings.queue_name(queue), messages)
        return self._refs(task, queue, envelopes, ids)

    async def asend(self, task: str, queue: str, calls: Sequence[Call], options: SendOptions) -> list[JobRef]:
        queue, envelopes, messages = self._build(task, queue, calls, options)
        if not messages:
            return []
        ids = await self._broker().asend(self.settings.queue_name(queue), messages)
        return self._refs(task, queue, envelopes, ids)

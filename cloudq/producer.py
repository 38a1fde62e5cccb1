"""The producer: turns calls into envelopes and sends them, sync (boto3) or async (aioboto3).

Building messages is pure and shared; ``send`` and ``asend`` differ only in the one
broker call. Middleware's ``on_enqueue`` sees every envelope before anything is sent, and its
``on_send`` is held open around the whole send (taken only when a middleware has it). Delays
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
from cloudq.jobs.ref import JobRef

if TYPE_CHECKING:
    from cloudq.brokers.base import Broker
    from cloudq.jobs.store import JobStore
    from cloudq.middleware import MiddlewareChain
    from cloudq.settings import Settings
    from cloudq.settings_env import EnvSettings
    from cloudq.wire import Wire

__all__ = ["JobRef", "Producer", "SendOptions", "Tracking", "outgoing"]

Call = tuple[tuple[Any, ...], dict[str, Any]]
# The longest delay a job may be given: beyond 15 minutes it travels as an ETA and is re-sent every 15
# minutes until due, so a year already means 35,000 re-sends; 1e12 s is past any date Python can hold.
MAX_DELAY_S = 366 * 24 * 3600


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Per-send options; ``delay`` accepts seconds or a timedelta (beyond 15 minutes: an ETA)."""

    delay: float | timedelta | None = None
    queue: str | None = None
    group_id: str | None = None
    dedup_id: str | None = None
    unique_key: str | None = None
    """A unique job's key for this send (``with_options(unique_key=...)``), over the task's own rule."""

    @property
    def delay_s(self) -> float:
        delay = self.delay.total_seconds() if isinstance(self.delay, timedelta) else (self.delay or 0)
        if not isinstance(delay, (int, float)) or not math.isfinite(delay) or not 0 <= delay <= MAX_DELAY_S:
            raise ConfigurationError(f"delay must be 0..{MAX_DELAY_S} seconds (366 days), got {delay!r}")
        return float(delay)

    def merge(self, **changes: Any) -> SendOptions:
        unknown = set(changes) - {"delay", "queue", "group_id", "dedup_id", "unique_key"}
        if unknown:
            raise ConfigurationError(f"unknown send option(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})




UniqueKey = Callable[[tuple[Any, ...], dict[str, Any]], str | None]


@dataclass(frozen=True, slots=True)
class Tracking:
    """A task's job-state options: ``track`` (write its state at all) and its ``unique`` key rule."""

    track: bool = True
    unique: UniqueKey | None = None

    def key(self, task: str, call: Call, options: SendOptions) -> str | None:
        """The full unique key of one job (scoped by task), or None if it is not a unique job."""
        if options.unique_key is not None:
            return f"{task}:{options.unique_key}"
        if self.unique is None:
            return None
        key = self.unique(*call)
        return None if key is None else f"{task}:{key}"


TRACKED = Tracking()


def outgoing(
    envelope: Envelope, queue: str, options: SendOptions, encode: Callable[[Envelope], str] = Envelope.encode
) -> tuple[Envelope, OutgoingMessage]:
    """The SQS message for an envelope, applying delay/ETA and FIFO options; ``encode`` (the app's
    :meth:`cloudq.wire.Wire.encode`) signs the final envelope, ETA included."""
    delay_s = options.delay_s
    if is_fifo(queue):
        if delay_s:
            raise ConfigurationError(f"queue {queue!r} is FIFO: per-job delays are not supported by SQS FIFO queues")
        return envelope, OutgoingMessage(
            encode(envelope), group_id=options.group_id or "default", dedup_id=options.dedup_id or envelope.id
        )
    if options.group_id or options.dedup_id:
        raise ConfigurationError(f"group_id/dedup_id need a FIFO queue (name ending .fifo), not {queue!r}")
    if delay_s > SQS_MAX_DELAY_S:
        envelope = replace(envelope, eta=envelope.enqueued_at + timedelta(seconds=delay_s))
    return envelope, OutgoingMessage(encode(envelope), delay_s=min(SQS_MAX_DELAY_S, round(delay_s)))


class Producer:
    """Sends jobs for an app; queues are logical names, mapped to physical ones here.

    It carries the app's ``settings`` (tasks read their default queue and retries from it), the
    broker (called on first send, so building an app opens nothing) and the middleware chain.
    """

    def __init__(
        self,
        settings: Settings | EnvSettings,
        broker: Callable[[], Broker],
        middleware: MiddlewareChain,
        jobs: Callable[[], JobStore | None] = lambda: None,
        wire: Callable[[], Wire] | None = None,
    ) -> None:
        self.settings = settings
        self._broker = broker
        self.middleware = middleware
        self.jobs = jobs
        self._wire = wire if wire is not None else _wire_of(self)

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

    def _build(
        self, task: str, queue: str, calls: Sequence[Call], options: SendOptions, tracking: Tracking, store: JobStore | None
    ) -> tuple[str, list[Envelope]]:
        queue = options.queue or queue
        now = utcnow()
        envelopes = [Envelope(task, args, kwargs, enqueued_at=now) for args, kwargs in calls]
        if store is not None and (tracking.unique is not None or options.unique_key is not None):
            from cloudq.jobs.tracker import UNIQUE_HEADER

            keys = [tracking.key(task, call, options) for call in calls]
            envelopes = [e.with_headers(**{UNIQUE_HEADER: k}) if k else e for e, k in zip(envelopes, keys)]
        return queue, envelopes

    def _messages(self, queue: str, envelopes: list[Envelope], options: SendOptions) -> tuple[list[Envelope], list[OutgoingMessage]]:
        envelopes = self.middleware.enqueue_all(envelopes)
        encode = self._wire().encode  # signs, with CLOUDQ_SIGNING_KEYS
        pairs = [outgoing(envelope, queue, options, encode) for envelope in envelopes]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _store(self, tracking: Tracking) -> JobStore | None:
        return self.jobs() if tracking.track else None

    def _refs(self, task: str, queue: str, envelopes: list[Envelope], message_ids: list[str], held: dict[int, str]) -> list[JobRef]:
        # No log line per job here: this is a web request's hot path, and structlog's unconfigured
        # default would print it to the host application's stdout.
        sent = iter(message_ids)
        jobs = self.jobs
        return [
            JobRef(held[i], task, queue, "", jobs) if i in held else JobRef(e.id, task, queue, next(sent), jobs)
            for i, e in enumerate(envelopes)
        ]

    def send(self, task: str, queue: str, calls: Sequence[Call], options: SendOptions, tracking: Tracking = TRACKED) -> list[JobRef]:
        store = self._store(tracking)
        queue, envelopes = self._build(task, queue, calls, options, tracking, store)
        if not envelopes:
            return []
        scope = self.middleware.sending(queue, envelopes)  # None without any on_send: no `with` at all
        if scope is None:
            return self._send(task, queue, envelopes, options, store)
        with scope:
            return self._send(task, queue, envelopes, options, store)

    def _send(self, task: str, queue: str, envelopes: list[Envelope], options: SendOptions, store: JobStore | None) -> list[JobRef]:
        envelopes, messages = self._messages(queue, envelopes, options)
        if not messages:
            return []
        if store is None:
            ids = self._broker().send(self.settings.queue_name(queue), self._wire().offload(messages))
            return self._refs(task, queue, envelopes, ids, {})
        from cloudq.jobs import enqueue

        held, written = enqueue.reserve(store, queue, envelopes)
        try:
            unheld = self._wire().offload(_unheld(messages, held)) if len(held) < len(messages) else []
            ids = self._broker().send(self.settings.queue_name(queue), unheld) if unheld else []
        except BaseException:
            enqueue.forget(store, written)
            raise
        return self._refs(task, queue, envelopes, ids, held)

    async def asend(self, task: str, queue: str, calls: Sequence[Call], options: SendOptions, tracking: Tracking = TRACKED) -> list[JobRef]:
        store = self._store(tracking)
        queue, envelopes = self._build(task, queue, calls, options, tracking, store)
        if not envelopes:
            return []
        scope = self.middleware.sending(queue, envelopes)
        if scope is None:
            return await self._asend(task, queue, envelopes, options, store)
        with scope:
            return await self._asend(task, queue, envelopes, options, store)

    async def _asend(self, task: str, queue: str, envelopes: list[Envelope], options: SendOptions, store: JobStore | None) -> list[JobRef]:
        envelopes, messages = self._messages(queue, envelopes, options)
        if not messages:
            return []
        if store is None:
            ids = await self._broker().asend(self.settings.queue_name(queue), await self._wire().aoffload(messages))
            return self._refs(task, queue, envelopes, ids, {})
        import asyncio

        from cloudq.jobs import enqueue

        held, written = await asyncio.to_thread(enqueue.reserve, store, queue, envelopes)
        try:
            unheld = await self._wire().aoffload(_unheld(messages, held)) if len(held) < len(messages) else []
            ids = await self._broker().asend(self.settings.queue_name(queue), unheld) if unheld else []
        except BaseException:
            await asyncio.to_thread(enqueue.forget, store, written)
            raise
        return self._refs(task, queue, envelopes, ids, held)


def _unheld(messages: list[OutgoingMessage], held: dict[int, str]) -> list[OutgoingMessage]:
    """The messages to send: all but those of unique jobs whose key another job holds."""
    return [m for i, m in enumerate(messages) if i not in held] if held else messages


def _wire_of(producer: Producer) -> Callable[[], Wire]:
    """A producer built without the App's wire: one from its own settings, built on first send."""
    built: list[Wire] = []

    def wire() -> Wire:
        if not built:
            from cloudq.wire import Wire

            built.append(Wire.from_settings(producer.settings))
        return built[0]

    return wire

"""The producer: turns calls into envelopes and sends them, sync (boto3) or async (aioboto3).

Building messages is pure and shared; ``send`` and ``asend`` differ only in the one
broker call. Delays beyond SQS's 15-minute maximum become an envelope ``eta``: the
message is sent with the maximum delay and the worker re-sends it until it is due.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cloudq.brokers.base import SQS_MAX_DELAY_S, OutgoingMessage, is_fifo
from cloudq.envelope import Envelope, utcnow
from cloudq.errors import ConfigurationError
from cloudq.tasks import JobRef, SendOptions

if TYPE_CHECKING:
    from cloudq.app import App

__all__ = ["Producer", "outgoing"]

Call = tuple[tuple[Any, ...], dict[str, Any]]


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
        envelope = Envelope(
            envelope.task, envelope.args, envelope.kwargs, envelope.id, envelope.enqueued_at,
            envelope.enqueued_at + timedelta(seconds=delay_s), envelope.headers,
        )  # fmt: skip
    return envelope, OutgoingMessage(envelope.encode(), delay_s=min(SQS_MAX_DELAY_S, round(delay_s)))


class Producer:
    """Sends jobs for an app; queues are logical names, mapped to physical ones here."""

    def __init__(self, app: App) -> None:
        self.app = app

    def _build(self, task: str, queue: str, calls: Sequence[Call], options: SendOptions) -> tuple[str, list[Envelope], list[OutgoingMessage]]:
        queue = options.queue or queue
        now = utcnow()
        pairs = [outgoing(Envelope(task, args, kwargs, enqueued_at=now), queue, options) for args, kwargs in calls]
        return queue, [p[0] for p in pairs], [p[1] for p in pairs]

    def _refs(self, task: str, queue: str, envelopes: list[Envelope], message_ids: list[str]) -> list[JobRef]:
        # No log line per job here: this is a web request's hot path, and structlog's unconfigured
        # default would print it to the host application's stdout.
        return [JobRef(e.id, task, queue, mid) for e, mid in zip(envelopes, message_ids)]

    def send(self, task: str, queue: str, calls: Sequence[Call], options: SendOptions) -> list[JobRef]:
        queue, envelopes, messages = self._build(task, queue, calls, options)
        if not messages:
            return []
        ids = self.app.broker.send(self.app.settings.queue_name(queue), messages)
        return self._refs(task, queue, envelopes, ids)

    async def asend(self, task: str, queue: str, calls: Sequence[Call], options: SendOptions) -> list[JobRef]:
        queue, envelopes, messages = self._build(task, queue, calls, options)
        if not messages:
            return []
        ids = await self.app.broker.asend(self.app.settings.queue_name(queue), messages)
        return self._refs(task, queue, envelopes, ids)

"""What the ops commands and the dashboard share on the admin plane: how a queue's counts are read,
what a dead letter says, and the check that a queue exists before acting on it.

One module for both so that ``cloudq dlq peek`` and the dashboard's dead-letter page can never disagree
on a reason, an attempt count or a queue that "does not exist" on the local broker (whose queues exist as
soon as they are used). Everything here takes an :class:`~cloudq.brokers.base.AdminBroker`; nothing here
knows whether it talks to SQS, SQLite or memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cloudq.brokers.base import AdminBroker, Delivery, QueueStats
from cloudq.envelope import Envelope
from cloudq.errors import EnvelopeError, QueueNotFound

__all__ = ["dead_letter_record", "queues_on_use", "require_queue", "stats_reader"]


def queues_on_use(broker: AdminBroker) -> bool:
    """True for a broker whose queues exist as soon as they are used (the local one): none is ever missing."""
    return bool(getattr(broker, "creates_queues_on_use", False))


def stats_reader(broker: AdminBroker) -> Callable[[str], QueueStats]:
    """``broker.stats``; on a broker that creates queues on use, a queue not used yet is there and empty."""
    if not queues_on_use(broker):
        return broker.stats
    return lambda physical: replace(broker.stats(physical), exists=True)


def require_queue(broker: AdminBroker, physical: str) -> QueueStats:
    """The queue's counts; a missing queue is :class:`~cloudq.errors.QueueNotFound` naming the fix."""
    stats = stats_reader(broker)(physical)
    if not stats.exists:
        raise QueueNotFound(f"queue {physical!r} does not exist (create it with `cloudq queues ensure`)")
    return stats


def dead_letter_record(delivery: Delivery) -> dict[str, Any]:
    """Everything known about a dead letter: the reason comes from cloudq's attributes (none if SQS's
    RedrivePolicy moved it), ``task`` is None for a body that is not an envelope."""
    attributes = delivery.attributes
    try:
        envelope = Envelope.decode(delivery.body, default_id=delivery.message_id)
        task, args, kwargs = envelope.task, list(envelope.args), dict(envelope.kwargs)
    except EnvelopeError:
        task, args, kwargs = None, None, None
    attempts = attributes.get("cloudq-attempts", "")
    return {
        "message_id": delivery.message_id,
        "task": task,
        "args": args,
        "kwargs": kwargs,
        "body": delivery.body,
        "attempts": int(attempts) if attempts.isdigit() else delivery.receive_count,
        "reason": attributes.get("cloudq-reason"),
        "error": ": ".join(v for v in (attributes.get("cloudq-error-type"), attributes.get("cloudq-error")) if v) or None,
        "traceback": attributes.get("cloudq-traceback"),
        "source_queue": attributes.get("cloudq-source-queue"),
        "dead_lettered_at": attributes.get("cloudq-dead-lettered-at"),
        "attributes": dict(attributes),
    }

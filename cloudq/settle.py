"""Carry out an outcome's sends: dead-lettering with the reason, and ETA re-sends.

Shared by the worker and the Lambda handler; acknowledging is left to the caller
(the worker batches deletes, Lambda reports ``batchItemFailures`` instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from cloudq.brokers.base import Delivery, OutgoingMessage, is_fifo
from cloudq.envelope import format_time, utcnow

if TYPE_CHECKING:
    from cloudq.app import App

__all__ = ["dead_letter", "reschedule"]

logger = structlog.get_logger(__name__)
_MAX_ATTRIBUTES = 10  # SQS's limit of message attributes per message


async def dead_letter(app: App, queue: str, delivery: Delivery, reason: dict[str, str]) -> None:
    """Send the original body to ``queue``'s DLQ with the reason as message attributes.

    The body is kept byte for byte so that a redrive re-runs exactly the same job.
    """
    attributes = {**delivery.attributes, **reason, "cloudq-dead-lettered-at": format_time(utcnow())}
    attributes = dict(list(attributes.items())[-_MAX_ATTRIBUTES:])  # newest reasons win over inherited ones
    dlq = app.settings.dlq_name(queue)
    fifo = is_fifo(dlq)
    message = OutgoingMessage(
        delivery.body,
        group_id=(delivery.group_id or "default") if fifo else None,
        dedup_id=f"{delivery.message_id}-dlq" if fifo else None,
        attributes=attributes,
    )
    await app.broker.asend(dlq, [message])


async def reschedule(app: App, queue: str, delivery: Delivery, delay_s: int) -> None:
    """Re-send a job whose ETA is further away than SQS can delay (the caller acks the old copy)."""
    await app.broker.asend(app.settings.queue_name(queue), [OutgoingMessage(delivery.body, delay_s=delay_s, attributes=delivery.attributes)])

"""What each logical queue of an app needs to exist: derived from the registry, never hand-kept.

Used by ``cloudq queues ensure`` (and later infrastructure rendering), so the queue
settings a worker relies on and the ones deployed come from one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudq.brokers.base import QueueConfig

if TYPE_CHECKING:
    from cloudq.app import App

__all__ = ["QueuePlan", "plan_queues"]

# Receives beyond cloudq's own last attempt before SQS's RedrivePolicy takes over: room for
# deliveries released unstarted at shutdown, so cloudq (which attaches the reason) dead-letters first.
REDRIVE_SLACK = 2


@dataclass(frozen=True, slots=True)
class QueuePlan:
    queue: str
    physical: str
    dead_letter_queue: str
    config: QueueConfig


def plan_queues(app: App) -> list[QueuePlan]:
    """One plan per logical queue the registry uses, sorted by name."""
    settings = app.settings
    plans = []
    for queue in app.queues():
        tasks = [t for t in app.registry.values() if t.queue == queue]
        max_retries = max([t.max_retries for t in tasks] or [settings.max_retries])
        dlq = settings.dlq_name(queue)
        config = QueueConfig(
            visibility_timeout_s=settings.visibility_timeout_s,
            dead_letter_queue=dlq,
            max_receive_count=max_retries + 1 + REDRIVE_SLACK,
        )
        plans.append(QueuePlan(queue, settings.queue_name(queue), dlq, config))
    return plans

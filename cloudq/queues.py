"""What each logical queue of an app needs to exist: derived from the registry, never hand-kept.

Used by ``cloudq queues ensure`` and ``cloudq infra render``, so the queue
settings a worker relies on and the ones deployed come from one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudq.brokers.base import SQS_MAX_VISIBILITY_S, QueueConfig

if TYPE_CHECKING:
    from cloudq.app import App

__all__ = ["QueuePlan", "plan_queues", "queue_visibility_timeout_s"]

# Receives beyond cloudq's own last attempt before SQS's RedrivePolicy takes over: room for
# deliveries released unstarted at shutdown, so cloudq (which attaches the reason) dead-letters first.
REDRIVE_SLACK = 2
# A queue's VisibilityTimeout covers its slowest task's timeout with this much headroom.
TIMEOUT_HEADROOM = 1.2


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
            visibility_timeout_s=queue_visibility_timeout_s(settings.visibility_timeout_s, (t.timeout for t in tasks)),
            dead_letter_queue=dlq,
            max_receive_count=max_retries + 1 + REDRIVE_SLACK,
        )
        plans.append(QueuePlan(queue, settings.queue_name(queue), dlq, config))
    return plans


def queue_visibility_timeout_s(default_s: int, task_timeouts: Iterable[float | None]) -> int:
    """The queue's VisibilityTimeout: ``max(default_s, ceil(slowest task timeout * 1.2))``, at most 12 hours.

    The worker sets its own visibility on receive and extends it while a job runs; this attribute is what
    every other consumer gets (an SQS event source mapping, a script), so it must outlast the slowest task.
    Tasks without a timeout add nothing; ``default_s`` is ``CLOUDQ_VISIBILITY_TIMEOUT_S``.
    """
    timeouts = [t for t in task_timeouts if t is not None]
    derived = math.ceil(round(max(timeouts) * TIMEOUT_HEADROOM, 3)) if timeouts else 0  # 25 * 1.2 is 30.000000000000004
    return min(SQS_MAX_VISIBILITY_S, max(default_s, derived))

"""The worker's visibility heartbeat: :class:`Heartbeat` keeps received messages invisible while they are held.

A message stays invisible for the visibility timeout from its receive. A job that runs longer would be
received again elsewhere and run twice, so every tick (a quarter of the timeout, 0.2-5 s) the heartbeat
extends, in one ChangeMessageVisibilityBatch per queue, every held message whose visibility ends within
half the timeout:

* a **running** job, up to its task's ``timeout``: past it the job is let go (``job.timeout``) and never
  extended again, so SQS redelivers it as the timeout promises;
* a **finished** job until its delete returns (chaos suite: a throttled delete of a job that finished
  late in its visibility took 5 s, and the job ran again elsewhere).

It also touches the health file (``CLOUDQ_HEARTBEAT_PATH``) an ECS health check reads.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloudq.errors import BrokerError
from cloudq.logs import get_logger

if TYPE_CHECKING:
    from cloudq.brokers.base import Broker, Delivery

__all__ = ["Heartbeat", "HeldJob"]

logger = get_logger("cloudq.worker")


@dataclass(eq=False, slots=True)
class HeldJob:
    """A message the worker holds, from its receive to its delete (or release)."""

    queue: str
    physical: str
    delivery: Delivery
    visible_until: float
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    timed_out: bool = False
    task: asyncio.Task[None] | None = None


class Heartbeat:
    """Extends what ``held()`` yields (running jobs, then finished ones whose delete is in flight: a job
    may briefly be in both); ``deleting(delivery)`` says whether one's delete is in flight."""

    def __init__(
        self,
        broker: Broker,
        visibility_timeout_s: int,
        held: Callable[[], Iterable[HeldJob]],
        deleting: Callable[[Delivery], bool],
        health_path: str | None = None,
    ) -> None:
        self.broker = broker
        self.visibility_timeout_s = visibility_timeout_s
        self._held = held
        self._deleting = deleting
        self._health_path = Path(health_path) if health_path else None

    async def run(self) -> None:
        vt = self.visibility_timeout_s
        tick = max(0.2, min(5.0, vt / 4))
        while True:
            await asyncio.sleep(tick)
            self.touch_health_file()
            now = time.monotonic()
            for physical, jobs in self.due(now).items():
                await self._extend(physical, jobs, now + vt)

    def due(self, now: float) -> dict[str, list[HeldJob]]:
        """Held jobs whose visibility ends within half the timeout, by queue."""
        due: dict[str, list[HeldJob]] = defaultdict(list)
        jobs = {id(job.delivery): job for job in self._held()}
        for job in jobs.values():
            if job.timed_out or job.visible_until - now >= self.visibility_timeout_s / 2:
                continue  # a job let go at its timeout is never extended again, not even while deleting
            if job.deadline is not None and now >= job.deadline and not self._deleting(job.delivery):
                job.timed_out = True
                logger.warning("job.timeout", message_id=job.delivery.message_id, queue=job.queue)
                continue
            due[job.physical].append(job)
        return due

    async def _extend(self, physical: str, jobs: list[HeldJob], visible_until: float) -> None:
        try:
            await self.broker.change_visibility(physical, [j.delivery for j in jobs], self.visibility_timeout_s)
        except BrokerError as exc:
            logger.warning("worker.heartbeat_failed", queue=physical, error=str(exc))
            return
        for job in jobs:
            job.visible_until = visible_until
        logger.debug("worker.visibility_extended", queue=physical, count=len(jobs))

    def touch_health_file(self) -> None:
        if self._health_path is not None:
            self._health_path.parent.mkdir(parents=True, exist_ok=True)
            self._health_path.write_text(f"{time.time():.3f}\n")

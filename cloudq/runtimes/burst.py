"""The retries a burst run scheduled: :class:`PendingRetries`.

A ``--burst`` worker must not exit with a job it received stranded in flight. A retry it scheduled is
in flight on purpose (its visibility is the backoff), so the worker remembers each one until it comes
back: it keeps polling while one is due within ``wait_s`` of now, and at exit makes the rest visible
again at once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from cloudq.brokers.base import Delivery

__all__ = ["PendingRetries"]


class PendingRetries:
    """Retries scheduled and not seen again: physical queue -> message id -> (delivery, due on the monotonic clock)."""

    def __init__(self, wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self._clock = clock
        self._by_queue: dict[str, dict[str, tuple[Delivery, float]]] = defaultdict(dict)

    def add(self, physical: str, delivery: Delivery, delay_s: int) -> None:
        self._by_queue[physical][delivery.message_id] = (delivery, self._clock() + delay_s)

    def seen(self, physical: str, delivery: Delivery) -> None:
        """A delivery came back: it is no longer pending (its new receipt is the one that counts)."""
        pending = self._by_queue.get(physical)
        if pending:
            pending.pop(delivery.message_id, None)

    def due_soon(self, physical: str) -> bool:
        """Whether one of ``physical``'s retries comes back within ``wait_s``: the burst waits for it."""
        horizon = self._clock() + self.wait_s
        return any(due <= horizon for _, due in self._by_queue.get(physical, {}).values())

    def take_all(self) -> dict[str, list[Delivery]]:
        """Every pending retry, by queue, forgotten here (the worker releases them as the burst ends)."""
        taken = {q: [d for d, _ in pending.values()] for q, pending in self._by_queue.items() if pending}
        self._by_queue.clear()
        return taken

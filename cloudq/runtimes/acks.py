"""Batched deletes for the worker: :class:`AckBatcher`.

A finished message is deleted 10 at a time (DeleteMessageBatch), or after ``delete_flush_s``,
whichever comes first: one call per ten jobs instead of ten. The S3 objects of offloaded bodies
that succeeded go after their messages, once the batch delete has gone through (never before: a
message that stays would point to nothing). Transient errors are retried through
tenacity with the producer's policy (:mod:`cloudq.transient`); a batch that still fails comes back
after its visibility timeout and runs again (at least once), which is logged.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from cloudq.brokers.base import SQS_MAX_BATCH, Delivery
from cloudq.errors import BrokerError
from cloudq.logs import get_logger
from cloudq.transient import acall_retrying

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from cloudq.brokers.base import Broker
    from cloudq.payloads import Pointer

__all__ = ["AckBatcher"]

logger = get_logger("cloudq.worker")

_ACK_ATTEMPTS = 5  # tries of one delete batch (about 3 s of pauses) before it is left to the visibility timeout


class AckBatcher:
    """Collects deletes per queue and sends them 10 at a time, or after ``flush_s``.

    A poller *holds* its queue's deletes while it waits for free slots, and lets them go just
    after it has started its next receive. The last job of a batch both fills a delete batch and
    frees the slots the poller waits for; sent first, the delete would be built and answered ahead
    of the receive that the next jobs wait on. Deletes are off the critical path, receives are on
    it (about +7% drain rate on LocalStack, same calls). Held deletes still go out at ``flush_s``.
    """

    def __init__(
        self,
        broker: Broker,
        flush_s: float,
        delete_payloads: Callable[[Iterable[Pointer]], Awaitable[None]] | None = None,
        *,
        on_ack: Callable[[str, int], None] | None = None,
        on_done: Callable[[Sequence[Delivery]], None] | None = None,
    ) -> None:
        self._broker = broker
        self._on_ack = on_ack  # told (queue, count) after each delete batch that succeeded (metrics)
        self._flush_s = flush_s
        self._delete_payloads = delete_payloads
        self._on_done = on_done  # told of each batch once its delete returned or finally failed
        self._objects: dict[int, Pointer] = {}  # id(delivery) -> its S3 object, deleted after the message
        self._pending: dict[str, list[Delivery]] = defaultdict(list)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._holds: dict[str, int] = defaultdict(int)

    def add(self, queue: str, delivery: Delivery, payload: Pointer | None = None) -> None:
        if payload is not None:
            self._objects[id(delivery)] = payload
        batch = self._pending[queue]
        batch.append(delivery)
        if len(batch) >= SQS_MAX_BATCH and not self._holds[queue]:
            self._flush(queue)
        elif queue not in self._timers:
            self._timers[queue] = asyncio.get_running_loop().call_later(self._flush_s, self._flush, queue)

    def hold(self, queue: str) -> None:
        self._holds[queue] += 1

    def unhold(self, queue: str) -> None:
        """End one hold; full batches held meanwhile go out now, even if other pollers of the queue
        still hold (they wait for slots: their receives are not due yet)."""
        self._holds[queue] -= 1
        if len(self._pending.get(queue, ())) >= SQS_MAX_BATCH:
            self._flush(queue)

    def _flush(self, queue: str) -> None:
        timer = self._timers.pop(queue, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(queue, [])
        if batch:
            sending = asyncio.create_task(self._send(queue, batch))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, queue: str, batch: list[Delivery]) -> None:
        """Delete ``batch``, retrying transient errors; if that fails, the messages come back after
        their visibility timeout and run again (at least once), which is logged."""

        def retrying(exc: BaseException, attempt: int) -> None:
            logger.warning("worker.ack_retrying", queue=queue, error=str(exc), attempt=attempt)

        objects = [p for p in (self._objects.pop(id(d), None) for d in batch) if p is not None]
        try:
            await acall_retrying(lambda: self._broker.ack(queue, batch), attempts=_ACK_ATTEMPTS, on_retry=retrying)
        except BrokerError as exc:
            logger.error("worker.ack_failed", queue=queue, count=len(batch), error=str(exc))
            return  # the messages come back and need their objects
        finally:
            if self._on_done is not None:
                self._on_done(batch)
        if self._on_ack is not None:
            self._on_ack(queue, len(batch))
        if objects and self._delete_payloads is not None:
            await self._delete_payloads(objects)

    async def drain(self) -> None:
        for queue in list(self._pending):
            self._flush(queue)
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

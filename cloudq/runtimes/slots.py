"""The worker's job slots: how many messages its pollers may receive, handed out in turn.

Two rules, each for a failure seen in practice:

* **Turns.** A poller that asks for slots while others wait queues behind them, first come first
  served. Without it, a poller whose long poll came back empty took its slot straight back, and
  with fewer slots than queues (``-c 1``, two queues) one queue was polled forever while the
  other's jobs waited.
* **Gathering.** With short jobs, slots free up one by one; receiving at the first free slot would
  ask SQS for 1-2 messages per call. The head poller waits up to ``gather_s`` for a full batch
  (its ``share``) instead: the same messages in fewer calls. It is woken by :meth:`Slots.release`
  only once a batch is ready (or by the deadline), not at every freed slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["Slots"]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Slots:
    """``total`` slots; ``idle()`` says whether no job runs (then any free slot is a batch)."""

    def __init__(self, total: int, *, share: int, idle: Callable[[], bool], gather_s: float = 0.02) -> None:
        self.free = total
        self.share = share
        self._idle = idle
        self._gather_s = gather_s
        self._turns: deque[asyncio.Future[None]] = deque()  # pollers waiting, first come first served
        self._gathering: set[asyncio.Future[None]] = set()  # the head poller waiting for a full batch

    async def take(self, limit: Callable[[], int] | None = None) -> int:
        """Wait for this poller's turn and a free slot, then take up to ``share`` (and ``limit()``,
        asked once the turn has come: other pollers may have started jobs meanwhile)."""
        turn = await self._my_turn()
        try:
            await self._gather()
            wanted = min(self.free, self.share)
            if limit is not None:
                wanted = min(wanted, limit())
            self.free -= wanted
            return wanted
        finally:
            self._end_turn(turn)

    def release(self, slots: int) -> None:
        self.free += slots
        self._pass_turn()
        if self._gathering and self._batch_ready():
            for waiter in self._gathering:
                _wake(waiter)

    async def _my_turn(self) -> asyncio.Future[None] | None:
        """Return once a slot is free and every poller that asked earlier has taken its slots."""
        if self.free > 0 and not self._turns:
            return None
        turn = asyncio.get_running_loop().create_future()
        self._turns.append(turn)
        try:
            await turn
        except BaseException:
            self._end_turn(turn)
            raise
        return turn

    def _end_turn(self, turn: asyncio.Future[None] | None) -> None:
        if turn is not None and turn in self._turns:
            self._turns.remove(turn)
        self._pass_turn()

    def _pass_turn(self) -> None:
        """Wake the first waiting poller if a slot is free; it stays first until it has taken them."""
        if self.free > 0 and self._turns and not self._turns[0].done():
            self._turns[0].set_result(None)

    def _batch_ready(self) -> bool:
        return self.free >= self.share or self._idle()

    async def _gather(self) -> None:
        if self._batch_ready():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._gather_s
        while not self._batch_ready() and (left := deadline - loop.time()) > 0:
            waiter = loop.create_future()
            self._gathering.add(waiter)
            timer = loop.call_later(left, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._gathering.discard(waiter)

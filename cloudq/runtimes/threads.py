"""Sync tasks on the worker's thread pool, their results handed back to the loop in bursts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["ThreadResults"]


class ThreadResults:
    """Hands results from the thread pool back to the loop, waking it once per burst, not per job.

    What ``loop.run_in_executor`` does, minus a future and two callbacks per job: when ten short
    jobs finish together, their results cross to the loop in one call instead of ten.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[Any], Future[Any]]] = []

    async def run(self, pool: ThreadPoolExecutor, call: Callable[[], Any]) -> Any:
        future = self._loop.create_future()
        work = pool.submit(call)
        work.add_done_callback(lambda work: self._add(future, work))
        try:
            return await future
        except asyncio.CancelledError:
            work.cancel()  # not started yet: it never runs (as with run_in_executor)
            raise

    def _add(self, future: asyncio.Future[Any], work: Future[Any]) -> None:
        """Any thread: queue a finished job, and wake the loop if nothing else is queued."""
        if future.cancelled():
            return
        with self._lock:
            self._done.append((future, work))
            if len(self._done) > 1:
                return
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for future, work in done:
            if future.cancelled():
                continue
            if work.cancelled():
                future.cancel()
            elif (exc := work.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(work.result())

"""Blocking SDK calls awaited from the event loop, on daemon threads: :class:`DaemonThreads`.

Why not ``asyncio.to_thread``: its threads belong to the loop's default executor, which
``asyncio.run`` joins at exit, so a worker stopped during a 20 s long poll would wait out the poll
before the process could exit. Here a call whose awaiting task is cancelled is simply abandoned:
its thread finishes the HTTP request in the background (a received message then comes back after
its visibility timeout, as with a cancelled aiohttp request), and a daemon thread never holds the
process open. Threads are started on demand, up to ``max_threads``, and reused.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DaemonThreads"]

T = TypeVar("T")
_Work = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class DaemonThreads:
    """A small pool of daemon threads running blocking calls for coroutines."""

    def __init__(self, max_threads: int, name: str = "cloudq-io") -> None:
        self._max = max(1, max_threads)
        self._name = name
        self._work: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    async def run(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._work.put((call, loop, future))
        self._ensure_thread()
        return await future

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._idle > 0 or self._threads >= self._max:
                self._idle -= 1 if self._idle > 0 else 0
                return
            self._threads += 1
        threading.Thread(target=self._serve, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            call, loop, future = self._work.get()
            try:
                result, error = call(), None
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody awaits this call any more
                pass
            with self._lock:
                self._idle += 1


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

"""Blocking calls awaited from the event loop, on daemon threads: :class:`DaemonThreads`.

Used for the SDK's blocking calls (the SQS broker, the job store) and for the runtimes' sync tasks.

Why not ``asyncio.to_thread``: its threads belong to the loop's default executor, which
``asyncio.run`` joins at exit, so a worker stopped during a 20 s long poll would wait out the poll
before the process could exit. Here a call whose awaiting task is cancelled is simply abandoned:
its thread finishes the HTTP request in the background (a received message then comes back after
its visibility timeout, as with a cancelled aiohttp request), and a daemon thread never holds the
process open (a sync task still running past the worker's shutdown grace has had its message
released already). Threads are started on demand, up to ``max_threads``, and reused.

Why not ``run_in_executor`` on a ``ThreadPoolExecutor``: less per call, which counts for sync tasks (one
call per job). The executor builds a ``concurrent.futures.Future`` and a work item per call, takes its
lock, tries its idle semaphore and runs a done callback that wakes the loop; here a call is one
``SimpleQueue.put``, and results cross back to their loop in bursts: when ten short jobs finish
together, one wake-up delivers all ten (py-spy put the executor's share at about 0.04 ms of a no-op
job's 0.8 ms of client CPU). With ``skip_cancelled`` (sync tasks, as the executor's cancel), a call
whose future was cancelled before a thread took it never runs; an SDK call always runs (a delete
abandoned by its caller still deletes).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DaemonThreads"]

T = TypeVar("T")
_Work = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Done = tuple["asyncio.Future[Any]", bool, Any]  # (future, ok, result or exception)


class DaemonThreads:
    """A small pool of daemon threads named ``<name>-N`` running blocking calls for coroutines."""

    def __init__(self, max_threads: int, name: str = "cloudq-io", *, skip_cancelled: bool = False) -> None:
        self._max = max(1, max_threads)
        self._skip_cancelled = skip_cancelled
        self._name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads free for a call no run() has counted on yet (under _lock)
        self._done: dict[asyncio.AbstractEventLoop, list[_Done]] = {}  # finished, per loop, not yet handed back
        self._closed = False
        # Threads started (under _lock), in a list that the finalizer shares: a pool dropped without
        # close() (a worker or handler nobody closed) lets its threads go, as a ThreadPoolExecutor does;
        # they hold the pool only while running a call.
        self._started = [0]
        weakref.finalize(self, _stop_threads, self._work, self._started)

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on one of the threads; its result (or exception) here, on the loop."""
        if self._closed:
            raise RuntimeError(f"{self._name}: the threads are closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:  # each call takes one idle thread's turn, or starts a thread (as the executor does)
            number = 0  # of the thread to start, if any
            if self._idle > 0:
                self._idle -= 1
            elif self._started[0] < self._max:
                self._started[0] += 1
                number = self._started[0]
        self._work.put((call, loop, future))
        if number:
            threading.Thread(target=_serve, args=(weakref.ref(self), self._work), name=f"{self._name}-{number}", daemon=True).start()
        return await future

    def busy(self) -> int:
        """Threads running a call (or about to): after every call has returned, 0."""
        with self._lock:
            return self._started[0] - self._idle

    def close(self) -> None:
        """Calls no thread took yet are dropped; the threads end once their running calls return. Returns at once."""
        self._closed = True
        while True:
            try:
                self._work.get_nowait()
            except queue.Empty:
                break
        _stop_threads(self._work, self._started)

    def _run_one(self, work: _Work) -> None:
        call, loop, future = work
        if self._skip_cancelled and future.cancelled():  # abandoned before it started: never run it
            with self._lock:
                self._idle += 1
            return
        try:
            done: _Done = (future, True, call())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            done = (future, False, exc)
        self._hand_back(loop, done)

    def _hand_back(self, loop: asyncio.AbstractEventLoop, done: _Done) -> None:
        """Queue a finished call for its loop, waking the loop only if nothing else is queued there;
        this thread is free again."""
        with self._lock:
            self._idle += 1
            waiting = self._done.setdefault(loop, [])
            waiting.append(done)
            if len(waiting) > 1:
                return
        try:
            loop.call_soon_threadsafe(self._deliver, loop)
        except RuntimeError:  # the loop is closed: nobody awaits this call any more
            with self._lock:
                self._done.pop(loop, None)

    def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            done = self._done.pop(loop, [])
        for future, ok, value in done:
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def _serve(pool_ref: weakref.ReferenceType[DaemonThreads], work: queue.SimpleQueue[_Work | None]) -> None:
    """A thread's loop: holds its pool only while it runs a call."""
    while True:
        item = work.get()
        if item is None:
            return
        pool = pool_ref()
        if pool is None:  # dropped: whoever awaited a call kept it alive, so nobody awaits this one
            return
        pool._run_one(item)
        del pool


def _stop_threads(work: queue.SimpleQueue[_Work | None], started: list[int]) -> None:
    """One stop for each thread started (a second round, after close(), finds no thread to stop: harmless)."""
    for _ in range(started[0]):
        work.put(None)

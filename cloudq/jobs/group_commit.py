"""Group commit: the consumer's claim and finish calls to an SQLite job store, many per transaction.

Why: a busy worker claims and finishes a job every few hundred microseconds, and one SQLite transaction
(plus a thread hop to run it off the event loop) per call cost about as much CPU as running the job
itself. Here one writer thread takes every call that accumulated while its previous transaction ran and
applies them together (``store.apply``), then wakes their callers with one event-loop callback per loop.
Nothing waits on a timer: an idle worker's single call is written at once, alone.

A failed transaction fails all of its calls with the same error; :mod:`cloudq.jobs.tracker` then retries
each on its own (the shared transient policy) before dropping it with a warning.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["GroupCommit", "Applies"]

_Call = tuple[str, tuple[Any, ...], dict[str, Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class Applies(Protocol):
    def apply(self, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]: ...


class GroupCommit:
    """One daemon writer thread applying queued store calls in batches."""

    def __init__(self, store: Applies, name: str = "cloudq-jobs-writer") -> None:
        self._store = store
        self._name = name
        self._pending: list[_Call] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = True  # the writer waits for a wake-up (set under the lock when it finds nothing to do)

    def submit(self, name: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Queue ``store.<name>(*args, **kwargs)``; the future (of the running loop) gets its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._pending.append((name, args, kwargs, loop, future))
            wake = self._idle  # a busy writer takes this call with its next batch: no wake-up to pay
            self._idle = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
        if wake:
            self._wake.set()
        return future

    def _serve(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                self._idle = not batch
            if not batch:  # the next submit finds the writer idle and wakes it
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                results: list[Any] = self._store.apply([(name, args, kwargs) for name, args, kwargs, _, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                results = [exc] * len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = defaultdict(list)
            for (_, _, _, loop, future), result in zip(batch, results):
                by_loop[loop].append((future, result))
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle_all, settled)
                except RuntimeError:  # that loop is closed: nobody awaits these any more
                    pass


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, result in settled:
        if future.cancelled():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

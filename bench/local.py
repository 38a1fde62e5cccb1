"""The local broker (SQLite) against Huey's SqliteHuey on the same machine: enqueue and drain, no LocalStack.

Per round and side, in a fresh temporary directory:

* enqueue one at a time: ``task.delay()`` versus calling a Huey task (one transaction each on both);
* enqueue in bulk: ``task.map(...)`` versus Huey's ``task.map(...)`` (Huey has no bulk insert: its map is
  one enqueue per item), into a fresh database that is then drained;
* drain with one consumer: a cloudq :class:`~cloudq.runtimes.worker.Worker` in this process (one worker process,
  ``concurrency`` jobs at once, stopping after N jobs), versus Huey's own consumer
  (``huey.create_consumer(workers=1, worker_type="thread")``, its defaults) started in this process and
  stopped once the N-th task has run.

Both use their libraries' default SQLite settings: WAL on both; cloudq sets ``synchronous=NORMAL``,
Huey leaves SQLite's default (FULL: an fsync per commit), so Huey pays more per transaction for durability
across power loss. Rounds alternate (huey, cloudq, huey, cloudq) and the report takes the median.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import LocalStackLog, Phase, Window

_NO_LOG = LocalStackLog(None)

__all__ = ["LocalRound", "cloudq_drain", "cloudq_round", "huey_round"]

_HUEY_SIGNALS = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]


@dataclass
class LocalRound:
    side: str
    enqueue_one: Phase
    enqueue_map: Phase
    drain: Phase


def noop() -> None:
    """The job: nothing."""


def _timed(n: int, run: Any) -> Phase:
    with Window(_NO_LOG) as window:
        run()
    return window.phase(n, {})


# -- cloudq ------------------------------------------------------------------------------------------
def cloudq_round(n: int, singles: int, concurrency: int, timeout_s: float) -> LocalRound:
    with tempfile.TemporaryDirectory(prefix="cloudq-bench-") as tmp:
        one_app, one_task = _cloudq_app(Path(tmp) / "singles.db", concurrency)
        try:
            one_task.delay()  # opens the connection and creates the queue row, as a running web app has done
            enqueue_one = _timed(singles, lambda: [one_task.delay() for _ in range(singles)])
        finally:
            one_app.close()
        app, task = _cloudq_app(Path(tmp) / "broker.db", concurrency)
        try:
            enqueue_map = _timed(n, lambda: task.map([()] * n))
            drain = asyncio.run(cloudq_drain(app, n, concurrency, timeout_s))
        finally:
            app.close()
    return LocalRound("cloudq", enqueue_one, enqueue_map, drain)


def _cloudq_app(path: Path, concurrency: int) -> tuple[Any, Any]:
    import cloudq

    app = cloudq.App("bench", settings=cloudq.Settings(broker="local", local_path=str(path), concurrency=concurrency))
    return app, app.task(name="bench.noop")(noop)


async def cloudq_drain(app: Any, n: int, concurrency: int, timeout_s: float, log: LocalStackLog = _NO_LOG) -> Phase:
    """An in-process Worker draining ``n`` jobs of the app's default queue, timed (shared with bench.jobs)."""
    from cloudq.runtimes.worker import Worker

    worker = Worker(app, [app.settings.default_queue], concurrency=concurrency, max_tasks=n)
    with Window(log) as window:
        stats = await asyncio.wait_for(worker.run(), timeout_s)
    await app.aclose()
    if stats.succeeded != n:
        raise RuntimeError(f"cloudq local worker ran {stats.succeeded} of {n} jobs")
    return window.phase(n, {})


# -- Huey ----------------------------------------------------------------------------------------------
def huey_round(n: int, singles: int, timeout_s: float) -> LocalRound:
    try:
        import huey
    except ImportError as exc:
        from bench.common import BenchError

        raise BenchError("the local bench compares with Huey: pip install -e '.[bench]' (or pip install huey)") from exc
    with tempfile.TemporaryDirectory(prefix="cloudq-bench-huey-") as tmp:
        one = huey.SqliteHuey("bench", filename=str(Path(tmp) / "singles.db"))
        one_task = one.task()(noop)
        one_task()  # the first enqueue opens the connection
        enqueue_one = _timed(singles, lambda: [one_task() for _ in range(singles)])
        one.storage.close()

        app = huey.SqliteHuey("bench", filename=str(Path(tmp) / "huey.db"))
        done = threading.Event()
        count = [0]

        def counted() -> None:  # the no-op, plus the count that tells the bench when the queue is drained
            count[0] += 1
            if count[0] >= n:
                done.set()

        task = app.task()(counted)
        enqueue_map = _timed(n, lambda: task.map([()] * n))
        drain = _huey_drain(app, n, done, timeout_s)
        app.storage.close()
    return LocalRound("huey", enqueue_one, enqueue_map, drain)


def _huey_drain(app: Any, n: int, done: threading.Event, timeout_s: float) -> Phase:
    """Huey's consumer with one worker thread; its start() installs signal handlers, restored after."""
    saved = {sig: signal.getsignal(sig) for sig in _HUEY_SIGNALS}
    consumer = app.create_consumer(workers=1, worker_type="thread", shutdown_timeout=10)
    try:
        with Window(_NO_LOG) as window:
            consumer.start()
            finished = done.wait(timeout_s)
    finally:
        consumer.stop(graceful=True)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if not finished:
        raise TimeoutError(f"Huey's consumer ran fewer than {n} tasks in {timeout_s:.0f} s")
    return window.phase(n, {})

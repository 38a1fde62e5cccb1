"""DaemonThreads: the threads for the SDK's blocking calls and for sync tasks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cloudq.brokers.blocking import DaemonThreads

pytestmark = pytest.mark.unit


async def test_calls_run_on_at_most_max_threads_and_return_their_results_and_errors() -> None:
    threads = DaemonThreads(3, "t-pool")
    seen: set[str] = set()

    def work(i: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.01)
        if i == 7:
            raise ValueError("seven")
        return i * 2

    results = await asyncio.gather(*(threads.run(lambda i=i: work(i)) for i in range(12)), return_exceptions=True)
    threads.close()

    assert [r for i, r in enumerate(results) if i != 7] == [i * 2 for i in range(12) if i != 7]
    assert isinstance(results[7], ValueError) and 1 <= len(seen) <= 3 and all(n.startswith("t-pool-") for n in seen)


async def test_concurrent_calls_get_threads_of_their_own() -> None:
    """Two calls that wait on each other finish: the second gets a thread, it does not queue behind the first."""
    threads = DaemonThreads(2)
    first_started, second_done = threading.Event(), threading.Event()

    def first() -> bool:
        first_started.set()
        return second_done.wait(5)

    def second() -> None:
        first_started.wait(5)
        second_done.set()

    assert await asyncio.wait_for(asyncio.gather(threads.run(first), threads.run(second)), 10) == [True, None]
    threads.close()


async def test_with_skip_cancelled_a_call_cancelled_before_it_started_never_runs() -> None:
    threads = DaemonThreads(1, skip_cancelled=True)
    gate, ran = threading.Event(), []
    blocker = asyncio.ensure_future(threads.run(lambda: gate.wait(5)))
    waiting = asyncio.ensure_future(threads.run(lambda: ran.append("ran")))
    await asyncio.sleep(0.05)
    waiting.cancel()
    gate.set()
    await blocker
    await asyncio.sleep(0.05)
    threads.close()

    assert ran == [] and waiting.cancelled()


async def test_without_it_an_abandoned_call_still_runs() -> None:
    """An SDK call whose caller gave up (a delete, say) still goes out."""
    threads = DaemonThreads(1)
    gate, ran = threading.Event(), threading.Event()
    blocker = asyncio.ensure_future(threads.run(lambda: gate.wait(5)))
    waiting = asyncio.ensure_future(threads.run(ran.set))
    await asyncio.sleep(0.05)
    waiting.cancel()
    gate.set()
    await blocker

    assert ran.wait(5)
    threads.close()


async def test_closed_threads_refuse_new_calls() -> None:
    threads = DaemonThreads(1)
    assert await threads.run(lambda: 1) == 1
    threads.close()
    with pytest.raises(RuntimeError, match="closed"):
        await threads.run(lambda: 2)


def test_a_pool_dropped_without_close_lets_its_threads_go() -> None:
    """As a ThreadPoolExecutor's: a worker or handler nobody closed must not leave threads behind for good."""
    import gc

    async def use() -> None:
        pool = DaemonThreads(2, "t-dropped")
        await asyncio.gather(pool.run(lambda: None), pool.run(lambda: None))

    asyncio.run(use())
    gc.collect()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("t-dropped") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("t-dropped")]


async def test_busy_counts_the_threads_running_a_call() -> None:
    threads = DaemonThreads(2)
    gate = threading.Event()
    running = asyncio.ensure_future(threads.run(lambda: gate.wait(5)))
    await asyncio.sleep(0.05)
    assert threads.busy() == 1
    gate.set()
    await running
    assert threads.busy() == 0
    threads.close()

"""The local broker's scheduler: several workers on one SQLite file fire each tick once, with one catch-up."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

import cloudq
from cloudq.schedules.local import LocalScheduler
from cloudq.schedules.periodic import SCHEDULED_HEADER

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 5, 12, 0, 30, tzinfo=timezone.utc).timestamp()  # 30 s past a minute


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def workers(tmp_path: Path, clock: Clock) -> Iterator[list[LocalScheduler]]:
    """Two apps (as two worker processes would have) sharing one broker file, each with its scheduler."""
    schedulers = []
    for _ in range(2):
        app = cloudq.App("shop", settings=cloudq.Settings(broker="local", local_path=str(tmp_path / "q.db")))
        app.periodic("rate(1 minute)", name="tick", kwargs={"n": 1})(lambda n: None)
        app.periodic("cron(0 9 * * ? *)", name="nine", timezone="Europe/Berlin")(lambda: None)
        schedulers.append(LocalScheduler(app, clock=clock))
    yield schedulers
    for scheduler in schedulers:
        scheduler.close()
        scheduler.app.close()


def bodies(scheduler: LocalScheduler) -> list[dict[str, object]]:
    return [json.loads(d.body) for d in scheduler.app.broker.peek("default", 100)]


async def fire_all(workers: list[LocalScheduler]) -> list[int]:
    return [await w.tick() for w in workers]


async def test_two_workers_fire_each_tick_once(workers: list[LocalScheduler], clock: Clock) -> None:
    """A new task waits for its first tick; then each minute fires once in total, whichever worker takes it."""
    assert await fire_all(workers) == [0, 0]
    clock.now += 20  # 12:00:50, before the 12:01 tick
    assert await fire_all(workers) == [0, 0]
    clock.now += 15  # 12:01:05
    assert await fire_all(workers[::-1]) == [1, 0]
    assert await fire_all(workers) == [0, 0]
    clock.now += 60
    assert sum(await fire_all(workers)) == 1
    [first, _] = bodies(workers[0])
    assert (first["task"], first["kwargs"], first["headers"]) == ("tick", {"n": 1}, {SCHEDULED_HEADER: "cloudq-tick"})


async def test_a_pause_fires_one_catch_up_not_a_burst(workers: list[LocalScheduler], clock: Clock) -> None:
    """After an hour with no worker, the missed ticks fire once, and the schedule resumes from now."""
    await fire_all(workers)
    clock.now += 3600
    assert await fire_all(workers) == [1, 0]
    clock.now += 10  # still within the same minute: nothing more
    assert await fire_all(workers) == [0, 0]
    assert len(bodies(workers[0])) == 1


async def test_cron_fires_on_the_tasks_wall_clock(workers: list[LocalScheduler], clock: Clock) -> None:
    """cron(0 9 ...) in Europe/Berlin fires at 08:00 UTC in winter."""
    await fire_all(workers)
    clock.now = datetime(2026, 1, 6, 7, 59, 59, tzinfo=timezone.utc).timestamp()
    await fire_all(workers)  # catches up the rate task only
    clock.now += 2
    assert sum(await fire_all(workers)) == 2  # 08:00:01 UTC: the minute tick and the 09:00 Berlin tick
    assert sorted(b["task"] for b in bodies(workers[0])) == ["nine", "tick", "tick"]


def test_concurrent_claims_take_a_tick_once(workers: list[LocalScheduler], clock: Clock) -> None:
    """Claims racing in threads on one file: the transaction lets exactly one of them have the tick."""
    spec = workers[0].app.periodic_tasks["tick"]
    workers[0].claim(spec)
    clock.now += 60
    racers = [LocalScheduler(workers[i % 2].app, clock=clock) for i in range(8)]  # a connection each, as processes have
    results: list[object] = []
    threads = [threading.Thread(target=lambda r=r: results.append(r.claim(spec))) for r in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for racer in racers:
        racer.close()
    assert len(results) == 8 and sum(r is not None for r in results) == 1


async def test_run_ticks_until_stopped(workers: list[LocalScheduler], clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """run() keeps ticking, fires what falls due between ticks, and when the worker stops it returns at once,
    in the middle of an hour-long pause between ticks, without another tick."""
    scheduler = workers[0]
    scheduler.tick_s = 0.01
    ticks: list[float] = []
    real_tick = scheduler.tick

    async def counted_tick() -> int:
        ticks.append(clock.now)
        return await real_tick()

    monkeypatch.setattr(scheduler, "tick", counted_tick)
    stopping = asyncio.Event()
    runner = asyncio.create_task(scheduler.run(stopping))
    await until(lambda: len(ticks) >= 3)
    clock.now += 60
    await until(lambda: scheduler.fired == 1)
    scheduler.tick_s = 3600
    seen = len(ticks)
    await until(lambda: len(ticks) > seen)  # now inside the hour-long pause after that tick
    stopping.set()
    for _ in range(20):  # a few turns of the loop, no time: the pause waits on the event, not on a sleep
        if runner.done():
            break
        await asyncio.sleep(0)
    assert runner.done() and runner.exception() is None
    assert len(ticks) == seen + 1 and scheduler.fired == 1


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (the test's own timeout bounds the wait)."""
    while not condition():
        await asyncio.sleep(0.005)

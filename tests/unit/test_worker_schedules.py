"""Workers on the local broker fire periodic tasks themselves: once per tick, even with two workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import cloudq
from cloudq.schedules.local import LocalScheduler
from cloudq.runtimes.worker import Worker

pytestmark = pytest.mark.unit


def make_app(path: Path, runs: list[str], label: str) -> cloudq.App:
    app = cloudq.App("sched", settings=cloudq.Settings(broker="local", local_path=str(path), wait_time_s=1))

    @app.periodic("rate(1 hour)", name="tick")
    def tick() -> None:
        runs.append(label)

    return app


async def test_two_local_workers_fire_a_periodic_task_once_per_tick(tmp_path: Path) -> None:
    """Two workers on one SQLite file: the first tick fires once, and its job runs once."""
    runs: list[str] = []
    apps = [make_app(tmp_path / "q.db", runs, label) for label in ("a", "b")]
    # A new hour during the test would make a second tick due, rightly: start well inside an hour.
    if (left_in_hour := 3600 - time.time() % 3600) < 15:
        await asyncio.sleep(left_in_hour + 0.5)
    # The lease first saw this task two hours ago, so one tick (and only one: no burst of missed
    # firings) is due now rather than at the next hour boundary.
    seed = LocalScheduler(apps[0], clock=lambda: time.time() - 7200)
    assert seed.claim(apps[0].periodic_tasks["tick"]) is None
    seed.close()
    workers = [Worker(app, concurrency=2) for app in apps]
    assert all(w.fire_schedules for w in workers)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    for _ in range(100):
        if runs:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # more scheduler ticks pass in both workers: no second firing in this hour
    for w in workers:
        w.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert len(runs) == 1


def test_workers_on_sqs_fire_nothing_unless_asked() -> None:
    """On SQS EventBridge fires schedules; a worker does so only with fire_schedules=True."""
    app = cloudq.App("sched", settings=cloudq.Settings(broker="sqs"))

    @app.periodic("rate(5 minutes)", name="tick")
    def tick() -> None: ...

    assert not Worker(app).fire_schedules
    assert Worker(app, fire_schedules=True).fire_schedules

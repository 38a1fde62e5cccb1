"""Workers on the local broker fire periodic tasks themselves: once per tick, even with two workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq.schedules.local import LocalScheduler, last_fire_times, owner_of
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


async def test_workers_off_the_local_broker_fire_nothing_unless_asked(tmp_path: Path) -> None:
    """Off the local broker (SQS in production; the memory broker here) EventBridge fires schedules: a worker
    fires a due tick only with fire_schedules=True; one without the flag never even claims it."""
    runs: list[str] = []
    apps = {}
    for label in ("plain", "flagged"):
        app = cloudq.App("sched", settings=cloudq.Settings(broker="memory", local_path=str(tmp_path / "leases.db"), queue_prefix=f"{label}-"))
        app.periodic("rate(1 hour)", name="tick")(lambda label=label: runs.append(label))
        apps[label] = app
        seed = LocalScheduler(app, clock=lambda: time.time() - 7200)  # a tick is due now for both
        assert seed.claim(app.periodic_tasks["tick"]) is None
        seed.close()
    seeded = last_fire_times(str(tmp_path / "leases.db"), owner_of(apps["plain"]))

    plain, flagged = Worker(apps["plain"], concurrency=2), Worker(apps["flagged"], concurrency=2, fire_schedules=True)
    with capture_logs() as logs:
        running = [asyncio.create_task(plain.run())]
        while not any(e["event"] == "worker.started" for e in logs):
            await asyncio.sleep(0.01)
        running.append(asyncio.create_task(flagged.run()))
        for _ in range(200):  # the flagged worker claims the tick, sends it and runs its job
            if runs:
                break
            await asyncio.sleep(0.05)
        plain.stop()
        flagged.stop()
        await asyncio.wait_for(asyncio.gather(*running), 10)

    assert runs == ["flagged"]
    # The plain worker's scheduler would have claimed its tick first thing: its lease is as seeded.
    assert last_fire_times(str(tmp_path / "leases.db"), owner_of(apps["plain"])) == seeded
    assert apps["plain"].broker.stats("plain-default").visible == 0  # type: ignore[attr-defined]
    assert [e["tasks"] for e in logs if e["event"] == "worker.firing_schedules"] == [["tick"]]  # the flagged one only

"""The local broker shared by several processes on one SQLite file.

Children are started with the spawn context (no inherited connections) and talk to the
parent through multiprocessing queues and events; the functions they run live at module
level so spawn can import them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import pytest

from cloudq.brokers.base import OutgoingMessage, QueueConfig
from cloudq.brokers.local import LocalBroker

pytestmark = pytest.mark.unit

QUEUE = "jobs"
SPAWN = multiprocessing.get_context("spawn")


def consume_all(path: str, start: Barrier, results: Any) -> None:
    """Receive and ack until the queue is empty; report (message_id, receive_count) pairs."""

    async def run() -> list[tuple[str, int]]:
        broker = LocalBroker(path)
        seen: list[tuple[str, int]] = []
        start.wait()
        while broker.stats(QUEUE).visible or broker.stats(QUEUE).in_flight:
            got = await broker.receive(QUEUE, max_messages=5, wait_s=0.1)
            seen.extend((d.message_id, d.receive_count) for d in got)
            await broker.ack(QUEUE, got)
        await broker.aclose()
        return seen

    results.put(asyncio.run(run()))


def receive_and_hang(path: str, holding: Event, results: Any) -> None:
    """Receive messages, report them, then hang until killed without acking."""
    broker = LocalBroker(path)
    before = time.time()
    got = broker.receive_now(QUEUE, 10)
    results.put((before, time.time(), [d.message_id for d in got]))
    holding.set()
    time.sleep(60)


def produce(path: str, count: int) -> None:
    broker = LocalBroker(path)
    broker.send(QUEUE, [OutgoingMessage(f"job-{i}") for i in range(count)])
    broker.close()


def join(process: multiprocessing.process.BaseProcess) -> None:
    process.join(timeout=20)
    assert process.exitcode is not None, "child process did not finish"


def test_two_consumers_never_share_a_message(tmp_path: Path) -> None:
    """Two processes draining one queue together ack every message, each received exactly once."""
    path = str(tmp_path / "broker.db")
    LocalBroker(path).send(QUEUE, [OutgoingMessage(f"job-{i}") for i in range(200)])
    start, results = SPAWN.Barrier(2), SPAWN.Queue()
    consumers = [SPAWN.Process(target=consume_all, args=(path, start, results)) for _ in range(2)]
    for process in consumers:
        process.start()

    seen = results.get(timeout=30) + results.get(timeout=30)
    for process in consumers:
        join(process)

    ids = [message_id for message_id, _ in seen]
    assert len(ids) == len(set(ids)) == 200
    assert {count for _, count in seen} == {1}
    assert LocalBroker(path).stats(QUEUE).visible == 0


def test_killed_consumer_loses_nothing(tmp_path: Path) -> None:
    """Messages held by a consumer killed with SIGKILL come back to another after the visibility timeout."""
    path = str(tmp_path / "broker.db")
    broker = LocalBroker(path)
    broker.ensure_queue(QUEUE, QueueConfig(visibility_timeout_s=1))
    sent = broker.send(QUEUE, [OutgoingMessage(f"job-{i}") for i in range(5)])
    holding, results = SPAWN.Event(), SPAWN.Queue()
    victim = SPAWN.Process(target=receive_and_hang, args=(path, holding, results))
    victim.start()

    before, after, taken = results.get(timeout=30)
    assert holding.wait(timeout=30) and sorted(taken) == sorted(sent)
    victim.kill()
    join(victim)
    # The child's receive hid the rows until (its receive time + 1 s), between before + 1 and after + 1. A
    # reader whose clock says "before + 0.9" must find them hidden, and one at "after + 1.01" must get them
    # all back, however long the kill took.
    now = [before + 0.9]
    reader = LocalBroker(path, clock=lambda: now[0])
    assert reader.receive_now(QUEUE, 10) == []
    now[0] = after + 1.01
    back = reader.receive_now(QUEUE, 10)
    assert sorted(d.message_id for d in back) == sorted(sent)
    assert {d.receive_count for d in back} == {2}
    reader.close()


def test_pending_jobs_survive_restart(tmp_path: Path) -> None:
    """Jobs sent by a process that has exited, and jobs in flight at close, are there after reopening."""
    path = str(tmp_path / "nested" / "dir" / "broker.db")
    producer = SPAWN.Process(target=produce, args=(path, 30))
    producer.start()
    join(producer)
    assert producer.exitcode == 0

    now = [time.time()]
    first = LocalBroker(path, clock=lambda: now[0])
    taken = first.receive_now(QUEUE, 10)
    first.close()

    now[0] += 60
    reopened = LocalBroker(path, clock=lambda: now[0])
    assert reopened.stats(QUEUE).visible == 30
    drained = [d for _ in range(3) for d in reopened.receive_now(QUEUE, 10)]
    assert len({d.message_id for d in drained}) == 30
    assert {d.message_id for d in drained if d.receive_count == 2} == {d.message_id for d in taken}
    reopened.close()


def open_and_close(path: str, start: Barrier, results: Any) -> None:
    start.wait()
    try:
        LocalBroker(path).close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_processes_opening_a_new_file_together_all_start(tmp_path: Path) -> None:
    """Six processes open the same new file at once (workers starting together): none fails with
    "database is locked", which SQLite can answer at once, without its busy timeout, while a
    journal switches to WAL."""
    for round_ in range(4):
        path = str(tmp_path / f"new-{round_}.db")
        start, results = SPAWN.Barrier(6), SPAWN.Queue()
        children = [SPAWN.Process(target=open_and_close, args=(path, start, results)) for _ in range(6)]
        for child in children:
            child.start()
        outcomes = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=30)
        assert outcomes == ["ok"] * 6


def test_a_locked_answer_while_opening_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic twin of the race above: the first attempt to prepare the file is told "locked"."""
    import sqlite3

    real = LocalBroker._prepare_file
    attempts: list[int] = []

    def locked_once(self: LocalBroker) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            from cloudq.brokers.local_sql import translated

            with translated():
                raise sqlite3.OperationalError("database is locked")
        real(self)

    monkeypatch.setattr(LocalBroker, "_prepare_file", locked_once)
    broker = LocalBroker(str(tmp_path / "b.db"))
    broker.send("q", [OutgoingMessage("a")])
    assert len(attempts) == 2 and broker.stats("q").visible == 1
    broker.close()

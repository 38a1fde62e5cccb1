"""The local broker and the local job store on one SQLite file: claims ride on the receive, end states on
the delete (cloudq.jobs.sqlite.BrokerLedger), with the same job-state semantics as on any other broker.

What changes is where the writes happen, so these tests check what that must not change (status seen
from inside the task, duplicates acked, ETA and untracked jobs left alone) and the one thing it adds:
an end state and its message's delete commit together, or neither does.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import timedelta
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.brokers.base import OutgoingMessage
from cloudq.brokers.local import LocalBroker
from cloudq.envelope import utcnow
from cloudq.jobs.sqlite import BrokerLedger, SqliteJobStore
from cloudq.jobs.state import Finish, NewJob
from cloudq.runtimes.worker import Worker

pytestmark = pytest.mark.unit


@pytest.fixture
def app(tmp_path: Path) -> Iterator[cloudq.App]:
    built = cloudq.App("ledger", settings=cloudq.Settings(broker="local", local_path=str(tmp_path / "q.db"), wait_time_s=1))
    yield built
    built.close()


def work(app: cloudq.App, n: int) -> Worker:
    """A worker of the default queue run until it processed ``n`` jobs (the CLI's worker, in this process)."""

    async def run() -> Worker:
        worker = Worker(app, concurrency=4, max_tasks=n)
        await asyncio.wait_for(worker.run(), 30)
        await app.aclose()
        return worker

    return asyncio.run(run())


@pytest.fixture
def store_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The store's own claim/finish calls (the consumer's path on other brokers), counted."""
    calls: list[str] = []
    apply, claim, finish = SqliteJobStore.apply, SqliteJobStore.claim, SqliteJobStore.finish
    monkeypatch.setattr(SqliteJobStore, "apply", lambda self, batch: calls.extend(c[0] for c in batch) or apply(self, batch))
    monkeypatch.setattr(SqliteJobStore, "claim", lambda self, *a, **k: calls.append("claim") or claim(self, *a, **k))
    monkeypatch.setattr(SqliteJobStore, "finish", lambda self, *a, **k: calls.append("finish") or finish(self, *a, **k))
    return calls


def test_a_worker_claims_in_the_receive_and_records_with_the_delete(app: cloudq.App, store_calls: list[str]) -> None:
    seen: list[str] = []

    @app.task
    def square(x: int) -> int:
        seen.append(app.job(cloudq.current_job().id).status().status)  # type: ignore[union-attr]
        return x * x

    refs = [square.delay(i) for i in range(12)]
    worker = work(app, 12)
    assert worker.stats.succeeded == 12
    assert seen == ["running"] * 12  # claimed before it ran, as on every broker
    states = [ref.status() for ref in refs]
    assert [(s.status, s.result, s.attempts) for s in states] == [("succeeded", i * i, 1) for i in range(12)]
    assert all(s.started_at is not None and s.finished_at is not None for s in states)
    assert store_calls == []  # no claim, finish or group commit of the store's own: all inside the broker's


def test_a_copy_of_a_job_that_succeeded_is_acked_without_running(app: cloudq.App) -> None:
    runs: list[int] = []

    @app.task
    def once(x: int) -> int:
        runs.append(x)
        return x

    ref = once.delay(7)
    work(app, 1)
    copy = cloudq.Envelope(once.name, (7,), {}, id=ref.id).encode()  # a redrive, or a producer sending it again
    app.broker.send(app.settings.queue_name("default"), [OutgoingMessage(copy)])
    worker = work(app, 1)
    assert runs == [7] and worker.stats.skipped == 1
    assert (ref.status().status, ref.result(timeout=1)) == ("succeeded", 7)


def test_jobs_the_receive_does_not_claim_are_claimed_by_the_consumer(app: cloudq.App) -> None:
    """A job with an ETA (it may wait), an untracked task and a task this worker does not know are left
    to the consumer: the ETA job is not shown running while it waits, the untracked one has no record."""

    @app.task
    def later() -> str:
        return "later"

    @app.task(track=False)
    def untracked() -> str:
        return "quiet"

    # A job due in an hour whose message is visible now (as one re-sent at SQS's 15-minute maximum is).
    waiting = cloudq.Envelope(later.name, eta=utcnow() + timedelta(hours=1))
    app.job_store.put_queued([NewJob(waiting.id, later.name, "default", None, time.time())])  # type: ignore[union-attr]
    app.broker.send(app.settings.queue_name("default"), [OutgoingMessage(waiting.encode())])
    quiet = untracked.delay()
    worker = work(app, 2)
    assert worker.stats.succeeded == 1 and worker.stats.rescheduled == 1
    assert app.job(waiting.id).status().status == "queued"
    with pytest.raises(cloudq.JobNotFound):
        quiet.status()


def test_an_end_state_and_its_delete_commit_together(app: cloudq.App, monkeypatch: pytest.MonkeyPatch) -> None:
    @app.task
    def job() -> str:
        return "done"

    ref = job.delay()
    app.consumer  # builds the tracker, which attaches the ledger  # noqa: B018
    broker = app.broker
    assert isinstance(broker, LocalBroker)
    queue = app.settings.queue_name("default")
    [delivery] = broker.receive_now(queue, 1, 30)
    assert delivery.claimed is not None and ref.status().status == "running"
    delivery.record = (ref.id, Finish("succeeded", "job", "default", 1, None, result_json='"done"'))

    deleting = BrokerLedger.deleting

    def failing(self: BrokerLedger, db: sqlite3.Connection, deliveries: Any) -> None:
        deleting(self, db, deliveries)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(BrokerLedger, "deleting", failing)
    with pytest.raises(cloudq.BrokerError):
        asyncio.run(broker.ack(queue, [delivery]))
    assert broker.stats(queue).in_flight == 1 and ref.status().status == "running"  # neither happened

    monkeypatch.setattr(BrokerLedger, "deleting", deleting)
    asyncio.run(broker.ack(queue, [delivery]))
    assert broker.stats(queue).in_flight == 0 and ref.result(timeout=1) == "done"  # both did


def test_no_ledger_for_an_app_that_signs_or_a_store_of_its_own(tmp_path: Path) -> None:
    def ledger(**settings: Any) -> bool:
        app = cloudq.App("x", settings=cloudq.Settings(broker="local", local_path=str(tmp_path / "q.db"), **settings))
        try:
            return bool(app.consumer.tracker is not None and app.consumer.tracker.ledger)
        finally:
            app.close()

    assert ledger() is True
    assert ledger(signing_keys="k" * 32) is False  # a forged body must not reach the store before its check
    assert ledger(job_store="memory") is False
    assert ledger(job_store="none") is False


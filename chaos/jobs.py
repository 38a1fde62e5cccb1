"""The chaos suite's job app (``cloudq worker chaos.jobs:app``): tasks of every kind, journaled.

Each task takes the job's key ``i`` and writes a ``run`` record when it finishes or raises; a
:class:`Tap` around the app's broker records what the worker received, deleted and released, and the
:class:`Settling` middleware what the consumer settled, and with a job store (``CLOUDQ_JOB_STORE``) a
:class:`StoreTap` around it what each claim answered and when each end state was written (see
:mod:`chaos.journal`). Nothing here changes what cloudq does: the taps forward every call unchanged and
journal it after it returns.

Kinds (chosen by :mod:`chaos.plan`): sync and async no-ops; ``fail_once`` raises on its first attempt;
``slow`` sleeps (sync or async); ``retry`` raises ``cloudq.Retry`` until its third attempt; ``reject``
raises ``cloudq.Reject``. Poison that never reaches a task (an unknown task, malformed JSON, arguments
that do not bind) is made by the orchestrator's raw sends.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

import cloudq
from cloudq.brokers.base import Delivery
from cloudq.jobs.state import Finish
from cloudq.jobs.store import Claim
from chaos.journal import Journal

SLOW_S = float(os.environ.get("CHAOS_SLOW_S", "3"))
RETRY_UNTIL_ATTEMPT = 3

_journal = Journal(os.environ["CHAOS_JOURNAL_DIR"], os.environ["CHAOS_WORKER"]) if os.environ.get("CHAOS_JOURNAL_DIR") else None


def _ran(i: int, ok: bool) -> None:
    job = cloudq.current_job()
    if _journal is not None and job is not None:
        _journal.write("run", k=i, m=job.message_id, a=job.attempt, ok=ok)


def _attempt() -> int:
    job = cloudq.current_job()
    return job.attempt if job is not None else 1


class Settling(cloudq.Middleware):
    """Journals every settled delivery (valid envelope or not) by message id and attempt."""

    def on_outcome(self, job: cloudq.Job, outcome: cloudq.Outcome) -> None:
        if _journal is not None:
            _journal.write("out", m=job.message_id, a=job.attempt, o=outcome.kind)


class Tap:
    """The app's broker, with receive/ack/change_visibility journaled after they return."""

    def __init__(self, inner: Any, journal: Journal) -> None:
        self._inner = inner
        self._journal = journal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def receive(self, queue: str, **options: Any) -> list[Delivery]:
        got: list[Delivery] = await self._inner.receive(queue, **options)
        self._journal.many("recv", got)
        return got

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        await self._inner.ack(queue, deliveries)
        self._journal.many("ack", deliveries)

    async def change_visibility(self, queue: str, deliveries: Sequence[Delivery], timeout_s: int) -> None:
        await self._inner.change_visibility(queue, deliveries, timeout_s)
        self._journal.many("vis", deliveries, s=timeout_s)


class StoreTap:
    """The app's job store, with ``claim`` and ``finish`` journaled: a claim with when it was asked
    (``t0``) and the state the store answered, an end state once its write has returned."""

    def __init__(self, inner: Any, journal: Journal) -> None:
        self._inner = inner
        self._journal = journal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def claim(self, job_id: str, **options: Any) -> Claim:
        t0 = time.time()
        claim: Claim = self._inner.claim(job_id, **options)
        self._journal.write("claim", **_claimed(job_id, options, claim, t0))
        return claim

    def finish(self, job_id: str, end: Finish) -> None:
        self._inner.finish(job_id, end)
        self._journal.write("fin", j=job_id, a=end.attempts, s=end.status)


class GroupStoreTap(StoreTap):
    """A :class:`StoreTap` for a store that group-commits (SQLite: ``apply``): the tracker only uses
    ``apply`` when the store has it, so only this tap has it."""

    def apply(self, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        t0 = time.time()
        results: list[Any] = self._inner.apply(calls)
        records = []
        for (name, args, kwargs), result in zip(calls, results):
            if name == "claim":
                records.append({"e": "claim", **_claimed(args[0], kwargs, result, t0)})
            elif name == "finish":
                records.append({"e": "fin", "j": args[0], "a": args[1].attempts, "s": args[1].status})
        self._journal.records(records)
        return results


def _claimed(job_id: str, options: dict[str, Any], claim: Claim, t0: float) -> dict[str, Any]:
    return {"j": job_id, "a": options.get("attempt", 0), "p": claim.previous, "t0": round(t0, 6)}


app = cloudq.App("chaos", middleware=[Settling()])
if _journal is not None:
    app.use_broker(Tap(app.broker, _journal))
    if (store := app.job_store) is not None:
        app.use_job_store((GroupStoreTap if callable(getattr(store, "apply", None)) else StoreTap)(store, _journal))


@app.task(name="chaos.sync")
def sync_job(i: int) -> None:
    _ran(i, True)


@app.task(name="chaos.async")
async def async_job(i: int) -> None:
    _ran(i, True)


@app.task(name="chaos.fail_once")
def fail_once(i: int) -> None:
    if _attempt() == 1:
        _ran(i, False)
        raise RuntimeError(f"job {i} fails on its first attempt")
    _ran(i, True)


@app.task(name="chaos.slow_sync")
def slow_sync(i: int) -> None:
    time.sleep(SLOW_S)
    _ran(i, True)


@app.task(name="chaos.slow_async")
async def slow_async(i: int) -> None:
    await asyncio.sleep(SLOW_S)
    _ran(i, True)


@app.task(name="chaos.retry")
async def retry_job(i: int) -> None:
    if _attempt() < RETRY_UNTIL_ATTEMPT:
        _ran(i, False)
        raise cloudq.Retry(delay=1)
    _ran(i, True)


@app.task(name="chaos.reject")
def reject_job(i: int) -> None:
    _ran(i, False)
    raise cloudq.Reject(f"job {i} is rejected on purpose")

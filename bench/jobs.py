"""Job state's price in drain speed and store calls: the same drain with the job store off and on, side by side.

* local: a :class:`~cloudq.runtimes.worker.Worker` in this process drains N no-op jobs (sent with ``.map``)
  from a fresh local broker file, with ``CLOUDQ_JOB_STORE=none`` and ``local`` (the same file), rounds
  alternating. Goal: on >= 80% of off.
* dynamodb (when ``CLOUDQ_BENCH_DYNAMODB`` names a moto_server): the same on SQS (LocalStack), with the
  store off and on DynamoDB. Reported, not a goal: moto's server is far slower than DynamoDB (about 340
  PutItem/s here).

Store calls are counted per job for each side: the local store's protocol calls by a counting wrapper (and the
claims and end states the local broker writes inside its own receives and deletes, cloudq.jobs.sqlite.BrokerLedger), and
for DynamoDB the HTTP requests by operation (botocore's ``before-send`` event on the store's client), so
the writes per tracked job (queued, running, final) and the reads are facts of the run, not of the docs.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import LocalStackLog, Phase
from bench.local import cloudq_drain

__all__ = ["dynamodb_round", "local_round"]

_COUNTED = ("put_queued", "reserve_unique", "claim", "finish", "set_progress", "cancel_requested", "get")


def noop() -> None:
    """The job: nothing."""


class _Counting:
    """A job store whose protocol calls are counted (by call, and by jobs in a batched call)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if name == "apply":  # a group commit: count the calls inside it
            def applied(calls: Any) -> Any:
                with self._lock:
                    self.calls.update(call[0] for call in calls)
                    self.calls["transactions"] += 1
                return target(calls)

            return applied
        if name == "ledger":  # the local broker's receive and delete carry the claims and end states
            return self._counted_ledger(target)
        if name not in _COUNTED:
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
            return target(*args, **kwargs)

        return counted

    def _counted_ledger(self, build: Any) -> Any:
        def built(*args: Any, **kwargs: Any) -> Any:
            ledger = build(*args, **kwargs)
            if ledger is None:
                return None
            received, deleting = ledger.received, ledger.deleting

            def counted_received(db: Any, deliveries: Any) -> None:
                received(db, deliveries)
                with self._lock:
                    self.calls["claim (in receive)"] += sum(d.claimed is not None for d in deliveries)

            def counted_deleting(db: Any, deliveries: Any) -> None:
                deleting(db, deliveries)
                with self._lock:
                    self.calls["finish (in delete)"] += sum(d.record is not None for d in deliveries)

            ledger.received, ledger.deleting = counted_received, counted_deleting
            return ledger

        return built


def _app(settings: Any) -> tuple[Any, Any]:
    import cloudq

    app = cloudq.App("benchjobs", settings=settings)
    return app, app.task(name="bench.noop")(noop)


def local_round(side: str, n: int, concurrency: int, timeout_s: float) -> Phase:
    """One drain on a fresh local broker file, the job store ``none`` or ``local``; store calls in ``calls``."""
    import cloudq

    with tempfile.TemporaryDirectory(prefix="cloudq-bench-jobs-") as tmp:
        settings = cloudq.Settings(broker="local", local_path=str(Path(tmp) / "broker.db"), concurrency=concurrency, job_store=side)
        app, task = _app(settings)
        counting = None
        if app.job_store is not None:
            counting = _Counting(app.job_store)
            app.use_job_store(counting)  # type: ignore[arg-type]
        try:
            task.map([()] * n)
            phase = asyncio.run(cloudq_drain(app, n, concurrency, timeout_s))
        finally:
            app.close()
    if counting is not None:
        phase.calls = {f"store.{k}": v for k, v in counting.calls.items()}
    return phase


def dynamodb_round(side: str, n: int, concurrency: int, timeout_s: float, endpoint: str, dynamodb: str, queue_prefix: str, log: LocalStackLog) -> Phase:
    """One drain on SQS (LocalStack), the job store ``none`` or ``dynamodb`` (moto); DynamoDB requests in ``calls``."""
    import uuid

    import cloudq

    table = f"bench-jobs-{uuid.uuid4().hex[:8]}"
    settings = cloudq.Settings(
        broker="sqs", endpoint_url=endpoint, region="us-east-1", queue_prefix=queue_prefix, concurrency=concurrency, wait_time_s=1,
        job_store=side, job_table=table, job_store_endpoint_url=dynamodb,
    )  # fmt: skip
    app, task = _app(settings)
    requests: Counter[str] = Counter()
    store = app.job_store
    if store is not None:
        store.ensure()
        store.client.meta.events.register("before-send.dynamodb", lambda request, **kw: requests.update([request.headers.get("X-Amz-Target", b"").decode().split(".")[-1]]))
    from cloudq.brokers.base import QueueConfig

    physical = settings.queue_name(settings.default_queue)
    app.broker.ensure_queue(physical, QueueConfig())  # type: ignore[attr-defined]
    try:
        task.map([()] * n)
        phase = asyncio.run(cloudq_drain(app, n, concurrency, timeout_s, log))
    finally:
        app.broker.purge(physical)  # type: ignore[attr-defined]
        app.close()
    if store is not None:
        phase.calls = {f"dynamodb.{k}": v for k, v in requests.items() if k not in ("CreateTable", "DescribeTable", "UpdateTimeToLive")}
    return phase

"""One chaos run: fill a queue, start the workers, strike on schedule, wait for the drain, count.

The run ends when every good job has run successfully, every poison message has been dead-lettered,
and the queue is empty (nothing visible, in flight or delayed): duplicates still on their way after
a SIGKILL are therefore counted too. ``timeout_s`` bounds it; a run cut short fails with what was lost.

``job_store`` is where the workers keep job state: ``none``, ``local`` (the local broker's SQLite file)
or ``dynamodb`` (SQS; a table of the run's own at ``dynamodb_endpoint``, a moto_server whose calls go
there directly, not through the fault proxy).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudq
from cloudq.brokers import create_broker
from cloudq.brokers.base import OutgoingMessage, QueueConfig
from cloudq.jobs import create_job_store

from chaos.ledger import Ledger
from chaos.plan import Fault, PlannedJob, fault_schedule, job_plan
from chaos.proxy import FaultProxy
from chaos.workers import WorkerPool

__all__ = ["RunConfig", "run"]

ROOT = Path(__file__).resolve().parent.parent
_FILL_BATCH = 500
_NOISE = {"latency_share": 0.03, "reset_share": 0.003}


@dataclass(frozen=True, slots=True)
class RunConfig:
    broker: str  # sqs or local
    jobs: int
    workers: int
    seed: int
    duration_s: float
    faults: bool
    endpoint: str | None = None
    concurrency: int = 10
    visibility_s: int = 15
    max_retries: int = 5
    timeout_s: float = 1800.0
    outage_s: float = 10.0
    throttle_s: float = 30.0
    out_dir: Path = ROOT / ".chaos"
    job_store: str = "none"  # none, local (local broker) or dynamodb (SQS)
    dynamodb_endpoint: str | None = None

    @property
    def target(self) -> str:
        """What runs: ``sqs``, ``local`` (with or without its job store) or ``sqs+dynamodb``."""
        return f"{self.broker}+dynamodb" if self.job_store == "dynamodb" else self.broker

    @property
    def label(self) -> str:
        return f"{self.target}-{'faults' if self.faults else 'baseline'}"


@dataclass
class _Run:
    config: RunConfig
    settings: cloudq.Settings
    broker: Any
    queue: str
    dlq: str
    dir: Path
    plan: list[PlannedJob]
    keys: dict[str, int]  # message id -> job key
    proxy: FaultProxy | None
    pool: WorkerPool
    ledger: Ledger
    faults: Counter[str]
    store: Any = None  # the run's JobStore (None without one), read back at the end
    started: float = 0.0
    done_at: float | None = None
    last_ok_at: float | None = None


def _settings(config: RunConfig, directory: Path) -> cloudq.Settings:
    prefix = f"chaos{config.seed}-{config.label.replace('+', '-')}-{uuid.uuid4().hex[:6]}-"
    values: dict[str, Any] = {"broker": config.broker, "queue_prefix": prefix, "visibility_timeout_s": config.visibility_s}
    if config.broker == "sqs":
        values |= {"endpoint_url": config.endpoint, "region": "us-east-1"}
    else:
        values |= {"local_path": str(directory / "broker.db")}
    values["job_store"] = config.job_store  # explicitly: with the local broker, cloudq's default is the local store
    if config.job_store == "dynamodb":
        values["job_store_endpoint_url"] = config.dynamodb_endpoint
    return cloudq.Settings(**values, max_retries=config.max_retries)


def _worker_env(config: RunConfig, settings: cloudq.Settings, endpoint: str | None, directory: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "CHAOS_JOURNAL_DIR": str(directory / "journal"),
        "CLOUDQ_BROKER": config.broker,
        "CLOUDQ_QUEUE_PREFIX": settings.queue_prefix,
        "CLOUDQ_VISIBILITY_TIMEOUT_S": str(config.visibility_s),
        "CLOUDQ_WAIT_TIME_S": "5",
        "CLOUDQ_MAX_RETRIES": str(config.max_retries),
        "CLOUDQ_RETRY_BACKOFF_S": "1",
        "CLOUDQ_SHUTDOWN_GRACE_S": "10",
        "CLOUDQ_LOG_FORMAT": "json",
        "CLOUDQ_LOG_LEVEL": "WARNING",
        "CLOUDQ_LOCAL_PATH": settings.local_path,
        "CLOUDQ_JOB_STORE": str(settings.job_store),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    if endpoint is not None:
        env |= {"CLOUDQ_ENDPOINT_URL": endpoint, "CLOUDQ_REGION": "us-east-1"}
    if settings.job_store_endpoint_url:
        env["CLOUDQ_JOB_STORE_ENDPOINT_URL"] = settings.job_store_endpoint_url
    return env


def _fill(broker: Any, queue: str, plan: list[PlannedJob]) -> dict[str, int]:
    """Send every job straight to the broker (not through the proxy), four threads at a time."""
    chunks = [plan[i : i + _FILL_BATCH] for i in range(0, len(plan), _FILL_BATCH)]

    def send(chunk: list[PlannedJob]) -> list[tuple[str, int]]:
        ids = broker.send(queue, [OutgoingMessage(job.body) for job in chunk])
        return list(zip(ids, (job.key for job in chunk)))

    with ThreadPoolExecutor(4) as pool:
        return {mid: key for pairs in pool.map(send, chunks) for mid, key in pairs}


async def _prepare(config: RunConfig) -> _Run:
    directory = config.out_dir / config.label
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "journal").mkdir(parents=True)
    settings = _settings(config, directory)
    broker = create_broker(settings)
    queue, dlq = settings.queue_name("default"), settings.dlq_name("default")
    broker.ensure_queue(queue, QueueConfig(config.visibility_s, dlq, max_receive_count=config.max_retries + 3))
    store = create_job_store(settings)
    if store is not None:
        await asyncio.to_thread(store.ensure)  # the run's own DynamoDB table, or the jobs table in broker.db
    plan = job_plan(config.jobs, config.seed)
    started = time.monotonic()
    keys = await asyncio.to_thread(_fill, broker, queue, plan)
    print(f"[{config.label}] filled {len(keys)} jobs in {time.monotonic() - started:.1f} s", flush=True)
    proxy = None
    if config.broker == "sqs":
        proxy = FaultProxy(int(str(config.endpoint).rpartition(":")[2]), seed=config.seed)
        await proxy.start()
    env = _worker_env(config, settings, proxy.url if proxy else None, directory)
    pool = WorkerPool(ROOT, env, directory / "logs", config.concurrency)
    return _Run(config, settings, broker, queue, dlq, directory, plan, keys, proxy, pool, Ledger(directory / "journal"), Counter(), store)


# -- faults ---------------------------------------------------------------------------------------
async def _strike(run: _Run, fault: Fault, rng_pick: Any) -> None:
    pool, proxy = run.pool, run.proxy
    if fault.kind == "kill" and pool.live:
        await pool.kill_and_replace(rng_pick(sorted(pool.live, key=lambda w: w.name)))
        run.faults["sigkill"] += 1
    elif fault.kind == "deploy":
        await pool.rolling_deploy(run.faults)
    elif proxy is None:
        return
    elif fault.kind == "down":
        await proxy.take_down()
    elif fault.kind == "up":
        await proxy.bring_up()
    elif fault.kind == "spawn":
        await pool.spawn(while_down=proxy.down)
        run.faults["worker started while down" if proxy.down else "worker started"] += 1
    elif fault.kind == "throttle":
        proxy.throttle_share = fault.value
    elif fault.kind == "noise":
        for name, share in _NOISE.items():
            setattr(proxy, name, share * fault.value)


async def _strike_on_schedule(run: _Run) -> None:
    """Strike each fault at its time; the deploy runs beside the schedule and is cancelled with it
    (before the pool stops every worker, so no replacement it starts outlives the run)."""
    rng = random.Random(f"targets-{run.config.seed}")
    deploying: asyncio.Task[None] | None = None
    schedule = fault_schedule(
        run.config.duration_s, run.config.seed, network=run.proxy is not None, outage_s=run.config.outage_s, throttle_s=run.config.throttle_s
    )
    try:
        for fault in schedule:
            wait = run.started + fault.at_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if fault.kind == "down" and deploying is not None:
                await deploying  # no SIGTERM during an outage (see chaos.plan.fault_schedule)
            print(f"[{run.config.label}] {time.monotonic() - run.started:6.1f}s {fault}", flush=True)
            if fault.kind == "deploy":  # in the background: the throttle window ends on time meanwhile
                deploying = asyncio.create_task(_strike(run, fault, rng.choice))
            else:
                await _strike(run, fault, rng.choice)
        if deploying is not None:
            await deploying
    finally:
        if deploying is not None and not deploying.done():
            deploying.cancel()
            await asyncio.gather(deploying, return_exceptions=True)


# -- waiting for the drain ----------------------------------------------------------------------
def _drained(run: _Run, good: int, poison: set[str]) -> bool:
    ledger = run.ledger
    return len(ledger.ok_runs) >= good and poison <= ledger.dead_lettered.keys()


async def _queue_empty(run: _Run) -> bool:
    stats = await asyncio.to_thread(run.broker.stats, run.queue)
    return stats.visible + stats.in_flight + stats.delayed == 0


async def _wait_for_drain(run: _Run) -> None:
    good = sum(1 for job in run.plan if job.good)
    poison = {mid for mid, key in run.keys.items() if not run.plan[key].good}
    next_report = 0.0
    while time.monotonic() - run.started < run.config.timeout_s:
        await asyncio.sleep(0.5)
        run.ledger.feed()
        elapsed = time.monotonic() - run.started
        if elapsed >= next_report:
            print(f"[{run.config.label}] {elapsed:6.1f}s {len(run.ledger.ok_runs)}/{good} good jobs done, {len(run.pool.live)} workers", flush=True)
            next_report = elapsed + 15
        if _drained(run, good, poison):
            if run.last_ok_at is None:
                run.last_ok_at = max(r.t for runs in run.ledger.ok_runs.values() for r in runs)
            if await _queue_empty(run):
                run.done_at = time.monotonic()
                return


def _drop_store(store: Any) -> None:
    """Delete the run's DynamoDB table once it has been read (moto_server keeps every table in memory)."""
    try:
        if store.kind == "dynamodb":
            store.client.delete_table(TableName=store.table)
    finally:
        store.close()


async def run(config: RunConfig) -> dict[str, Any]:
    """One run, start to figures (see :mod:`chaos.report`)."""
    from chaos.report import figures

    state = await _prepare(config)
    wall_start = time.time()
    state.started = time.monotonic()
    for _ in range(config.workers):
        await state.pool.spawn()
    striking = asyncio.create_task(_strike_on_schedule(state)) if config.faults else None
    try:
        await _wait_for_drain(state)
    finally:
        if striking is not None:
            striking.cancel()
            await asyncio.gather(striking, return_exceptions=True)
        if state.proxy is not None:
            for name in ("throttle_share", *_NOISE):
                setattr(state.proxy, name, 0.0)
            if state.proxy.down:
                await state.proxy.bring_up()
        await state.pool.stop_all()
        state.ledger.feed()
    result = await asyncio.to_thread(figures, state, wall_start)
    if state.proxy is not None:
        await state.proxy.close()
    if state.store is not None:
        await asyncio.to_thread(_drop_store, state.store)
    (state.dir / "figures.json").write_text(json.dumps(result, indent=2, default=str))
    return result


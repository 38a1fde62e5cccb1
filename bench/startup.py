"""``python -m bench.startup [--rounds 5]``: where a spawned consumer's start-up to its first job goes.

The CLI drain bench (:mod:`bench.cli_drain`) times spawn -> first job; this splits it into phases, in fresh
processes taking turns, each against a fresh queue holding a few no-op jobs:

- cloudq: a child that runs ``cloudq.cli.main(["worker", "bench.cli_app:app", ...])`` as the console script
  does, with timing marks wrapped around the functions it passes through (the wrappers cost microseconds).
  Two imports are pulled forward so they can be timed alone: ``cloudq.logs`` + ``cloudq.runtimes.worker``
  (structlog, tenacity) before the CLI's own, and ``aioboto3`` at the start of the broker's async client.
- raw: the start of :mod:`bench.raw_consumer`, step by step (import boto3, client, GetQueueUrl, receive).

Needs ``CLOUDQ_BENCH_ENDPOINT``. Bytecode is cached as in the CLI drain (:func:`bench.cli_drain._child_env`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cli_drain import LOGICAL_QUEUE, ROOT, CliBench, _child_env, rotate
from bench.common import LocalStackLog, QueueFactory, aws_defaults, median, require_localstack, sqs_client, unique_name

__all__ = ["PHASES", "main", "startup_rounds"]

_COMMON = """
import json, os, sys, time
marks = [("main", time.perf_counter())]
def mark(name):
    marks.append((name, time.perf_counter()))
def dump():
    with open(os.environ["BENCH_STARTUP_PATH"], "w") as out:
        json.dump(marks, out)
"""

_CLOUDQ = _COMMON + """
import cloudq.cli as cli
mark("import cloudq.cli (argparse, asyncio)")
import cloudq.logs, cloudq.runtimes.worker
mark("import cloudq.logs + runtimes.worker (structlog, tenacity, executor)")
import bench.jobclock as jobclock
import cloudq.app
mark("import cloudq.app (settings_env, tasks, producer; pulled forward from load_app)")

def after(owner, name, label):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        mark(label)
        return result
    setattr(owner, name, wrapper)

def after_async(owner, name, label, once=True):
    original = getattr(owner, name)
    done = []
    async def wrapper(*args, **kwargs):
        result = await original(*args, **kwargs)
        if not done:
            done.append(1)
            mark(label)
        return result
    setattr(owner, name, wrapper)

after(cli, "build_parser", "build_parser (imports cli.schedules, cli.ops, cli.infra)")
after(cli, "load_app", "load_app (import bench.cli_app: cloudq.app, settings, tasks)")
after(cloudq.logs, "configure_logging", "configure_logging")
original_broker = cloudq.app.create_broker
def create_broker(*args, **kwargs):
    import boto3
    mark("import boto3 (first broker use, in Worker.__init__)")
    from cloudq.brokers.sqs import SqsBroker
    patch_broker(SqsBroker)
    return original_broker(*args, **kwargs)
cloudq.app.create_broker = create_broker
after(cloudq.runtimes.worker.Worker, "__init__", "Worker.__init__ (SqsBroker, thread pool)")
original_run = cloudq.runtimes.worker.Worker.run
async def run(self):
    mark("asyncio.run -> Worker.run")
    return await original_run(self)
cloudq.runtimes.worker.Worker.run = run
def patch_broker(SqsBroker):
    original_client = SqsBroker._async_client
    async def async_client(self):
        if self._aclient is None:
            import aioboto3
            mark("import aioboto3 (aiobotocore, aiohttp)")
            result = await original_client(self)
            mark("aioboto3 session + client (+ _credentials' boto3 Session)")
            return result
        return await original_client(self)
    SqsBroker._async_client = async_client
    after_async(SqsBroker, "aqueue_url", "GetQueueUrl")
    after_async(SqsBroker, "receive", "first ReceiveMessage")
original_tick = jobclock.tick
def tick():
    if marks[-1][0] != "first job":
        mark("first job")
        dump()
    original_tick()
jobclock.tick = tick
sys.argv = ["cloudq"] + sys.argv[1:]
sys.exit(cli.main(sys.argv[1:]))
"""

_RAW = _COMMON + """
import boto3, botocore.config
mark("import boto3")
from bench import jobclock
config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=10, connect_timeout=5, read_timeout=30)
client = boto3.session.Session(region_name=os.environ["CLOUDQ_REGION"]).client("sqs", endpoint_url=os.environ["CLOUDQ_ENDPOINT_URL"], config=config)
mark("boto3 session + client")
url = client.get_queue_url(QueueName=sys.argv[1])["QueueUrl"]
mark("GetQueueUrl")
messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=20).get("Messages", [])
mark("first ReceiveMessage")
body = json.loads(messages[0]["Body"])
jobclock.tick()
mark("first job")
dump()
"""

PHASES = {"cloudq": _CLOUDQ, "raw": _RAW}
JOBS = 10


def startup_round(bench: CliBench, side: str, label: str) -> dict[str, float]:
    """One fresh process of ``side``; returns phase -> milliseconds, in order, ``spawn`` first."""
    prefix = bench.queues.name(label) + "-"
    physical = prefix + LOGICAL_QUEUE
    bench.fill(bench.queues.create(physical), JOBS)
    with tempfile.TemporaryDirectory(prefix="cloudq-bench-") as tmp:
        path = Path(tmp) / "marks.json"
        env = {"CLOUDQ_QUEUE_PREFIX": prefix, "BENCH_STARTUP_PATH": str(path), "BENCH_CLOCK_JOBS": str(JOBS)}
        args = [physical] if side == "raw" else ["worker", "bench.cli_app:app", "-q", LOGICAL_QUEUE, "-c", "10", "--max-tasks", str(JOBS)]
        spawned = time.perf_counter()
        subprocess.run([sys.executable, "-c", PHASES[side], *args], env=_child_env({**bench._cloudq_env(), **env}), cwd=ROOT,
                       check=True, timeout=60, stdout=subprocess.DEVNULL)  # fmt: skip
        marks = json.loads(path.read_text())
    phases = {"interpreter start-up (spawn -> first line)": (marks[0][1] - spawned) * 1000}
    for (_, before), (name, at) in zip(marks, marks[1:]):
        phases[name] = (at - before) * 1000
    phases["total (spawn -> first job)"] = (marks[-1][1] - spawned) * 1000
    return phases


def startup_rounds(bench: CliBench, rounds: int) -> dict[str, dict[str, float]]:
    """Median milliseconds per phase and side over ``rounds`` alternating rounds (after one untimed each)."""
    for side in PHASES:
        startup_round(bench, side, f"s-warm-{side}")
    seen: dict[str, list[dict[str, float]]] = {side: [] for side in PHASES}
    for i, side in enumerate(rotate(rounds, tuple(PHASES))):
        seen[side].append(startup_round(bench, side, f"s{i}-{side}"))
    return {side: {phase: round(median(r[phase] for r in rs), 1) for phase in rs[0]} for side, rs in seen.items()}


def text(result: dict[str, dict[str, float]]) -> str:
    lines = ["Start-up to first job, by phase (median ms of fresh processes)"]
    for side, phases in result.items():
        lines.append(f"  {side}")
        lines += [f"    {ms:7.1f}  {phase}" for phase, ms in phases.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    aws_defaults()
    endpoint = require_localstack(os.environ.get("CLOUDQ_BENCH_ENDPOINT"))
    client = sqs_client(endpoint)
    queues = QueueFactory(client, unique_name("start").removeprefix("start-"))
    try:
        result: dict[str, Any] = startup_rounds(CliBench(endpoint, client, queues, LocalStackLog(None), 60), args.rounds)
    finally:
        queues.delete_all()
        client.close()
    print(text(result))
    print(json.dumps({"startup_phases_ms": result}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

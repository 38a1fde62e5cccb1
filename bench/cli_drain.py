"""Spawned processes, as a user runs them: ``cloudq worker`` against a hand-batched boto3 loop, and ``.map()``
in a fresh script against raw SendMessageBatch.

**CLI drain.** Each round fills a fresh queue with N no-op sync jobs (SendMessageBatch from this process,
untimed), then spawns one consumer and waits for it to exit:

- cloudq: ``cloudq worker bench.cli_app:app -q drain -c C --max-tasks N`` with ``CLOUDQ_BROKER=sqs``,
  ``CLOUDQ_ENDPOINT_URL``, ``CLOUDQ_QUEUE_PREFIX`` and ``CLOUDQ_LOG_LEVEL=WARNING``;
- raw: ``python -m bench.raw_consumer QUEUE N`` (:mod:`bench.raw_consumer`);
- cloudq+mw (only once cloudq has ``Middleware``): the cloudq command with ``BENCH_MIDDLEWARE=1``.
- cloudq-core: the cloudq command with rich hidden (``bench/core_deps/sitecustomize.py``), as the Docker image
  runs it: structlog imports rich whenever it is installed, and the bench's venv has the demo extra.

Each job calls :func:`bench.jobclock.tick`, which keeps its timestamp in memory and writes them all at the
N-th job. From those: start-up (spawn to first job), steady-state drain rate (first to last job), CPU per
job in the drain (the child's process time at the first and last job) and the child's whole CPU (rusage
from ``wait4``, start-up and exit included).

**Fresh-process .map().** Each round spawns :mod:`bench.map_process` for one side, sending N jobs into a
fresh queue; see that module for the marks it reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import LocalStackLog, QueueFactory
from bench.sqs_drain import raw_body

__all__ = ["CliRound", "CliBench", "MapRound", "middleware_available", "rotate"]

ROOT = Path(__file__).resolve().parents[1]
LOGICAL_QUEUE = "drain"
PYCACHE = os.path.join(tempfile.gettempdir(), "cloudq-bench-pycache")
# Section obs (bench.obs_drain): the worker with EMF metrics, or with the OpenTelemetry SDK and a no-op exporter.
OBSERVABILITY_ENV = {"cloudq+emf": {"CLOUDQ_METRICS": "emf"}, "cloudq+otel": {"BENCH_OTEL": "1", "CLOUDQ_TRACING": "otel"}}


def middleware_available() -> bool:
    """Whether the cloudq under test has the middleware API (issue 10), checked in a child process so this
    one imports no more of cloudq than it did."""
    probe = "import cloudq, sys; sys.exit(0 if hasattr(cloudq, 'Middleware') and hasattr(cloudq.App, 'add_middleware') else 1)"
    return subprocess.run([sys.executable, "-c", probe], env=_child_env({}), cwd=ROOT, check=False).returncode == 0


def rotate(rounds: int, sides: tuple[str, ...]) -> list[str]:
    """Round i runs the sides rotated by i, reversed every other round: each side takes every position."""
    order = []
    for i in range(rounds):
        k = i % len(sides)
        seq = sides[k:] + sides[:k]
        order += reversed(seq) if i % 2 else seq
    return order


@dataclass
class CliRound:
    side: str
    jobs: int
    startup_s: float  # spawn -> first job ran
    drain_s: float  # first job -> last job
    cpu_drain_s: float  # the child's CPU time (all threads, user + system) between its first and last job
    sys_drain_s: float  # the system (kernel) part of it
    cpu_startup_s: float  # the child's CPU time until its first job (interpreter start included)
    cpu_total_s: float  # rusage of the whole child, exit included
    exit_s: float  # last job -> the child reaped
    maxrss_kb: int
    log_calls: dict[str, int] | None = None
    localstack_cpu_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return (self.jobs - 1) / self.drain_s if self.drain_s > 0 else 0.0

    @property
    def cpu_ms_per_job(self) -> float:
        return self.cpu_drain_s / (self.jobs - 1) * 1000

    @property
    def sys_ms_per_job(self) -> float:
        return self.sys_drain_s / (self.jobs - 1) * 1000

    @property
    def cores(self) -> float:
        """CPU cores the child kept busy while draining."""
        return self.cpu_drain_s / self.drain_s if self.drain_s > 0 else 0.0


@dataclass
class MapRound:
    side: str
    jobs: int
    marks: dict[str, list[float]]  # name -> [perf_counter, process_time] in the child
    spawned: float  # this process's perf_counter just before the spawn
    cpu_total_s: float
    localstack_cpu_s: float | None = None  # over the child's whole life

    def seconds(self, start: str, end: str) -> float:
        return self.marks[end][0] - (self.spawned if start == "spawn" else self.marks[start][0])

    def cpu_s(self, start: str, end: str) -> float:
        return self.marks[end][1] - (0.0 if start == "spawn" else self.marks[start][1])


class CliBench:
    """Runs spawned rounds against ``endpoint``; ``queues`` creates and later deletes every queue used."""

    def __init__(self, endpoint: str, client: Any, queues: QueueFactory, log: LocalStackLog, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.client = client
        self.queues = queues
        self.log = log
        self.timeout_s = timeout_s

    # -- the drain ----------------------------------------------------------------------------
    def drain_round(self, side: str, n: int, concurrency: int, label: str) -> CliRound:
        prefix = self.queues.name(label) + "-"
        physical = prefix + LOGICAL_QUEUE
        url = self.queues.create(physical)
        self.fill(url, n)
        with tempfile.TemporaryDirectory(prefix="cloudq-bench-") as tmp:
            clock = Path(tmp) / "clock.json"
            env = {"CLOUDQ_QUEUE_PREFIX": prefix, "BENCH_CLOCK_PATH": str(clock), "BENCH_CLOCK_JOBS": str(n)}
            if side == "raw":
                command = [sys.executable, "-m", "bench.raw_consumer", physical, str(n)]
            else:
                command = [*_cloudq_command(), "worker", "bench.cli_app:app", "-q", LOGICAL_QUEUE, "-c", str(concurrency), "--max-tasks", str(n)]
                if side == "cloudq+mw":
                    env["BENCH_MIDDLEWARE"] = "1"
                env.update(OBSERVABILITY_ENV.get(side, {}))  # the obs section's sides (bench.obs_drain)
                if side == "cloudq-core":  # as in the Docker image: core dependencies only, so no rich
                    env["BENCH_HIDE"] = "rich"
                    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench" / "core_deps"), _child_env({})["PYTHONPATH"]])
            mark, ls_cpu = self.log.mark(), self.log.cpu_s()
            spawned, usage, exited, output = self._spawn(command, env, Path(tmp) / "output.txt")
            ls_after = self.log.cpu_s()
            if not clock.exists():
                raise RuntimeError(f"{side} consumer exited without running {n} jobs; its output ends: {output[-600:]!r}")
            data = json.loads(clock.read_text())
        stamps = data["stamps"]
        return CliRound(
            side, n, startup_s=stamps[0] - spawned, drain_s=stamps[-1] - stamps[0],
            cpu_drain_s=data["cpu_last_s"] - data["cpu_first_s"], sys_drain_s=data["sys_last_s"] - data["sys_first_s"], cpu_startup_s=data["cpu_first_s"],
            cpu_total_s=usage.ru_utime + usage.ru_stime, exit_s=exited - stamps[-1], maxrss_kb=data["maxrss_kb"],
            log_calls=self.log.count_since(mark), notes=data.get("notes", {}),
            localstack_cpu_s=ls_after - ls_cpu if ls_after is not None and ls_cpu is not None else None,
        )  # fmt: skip

    def fill(self, url: str, n: int) -> None:
        """N bodies of the envelope's fields into ``url``, a few batches at a time (untimed)."""

        def send(start: int) -> None:
            entries = [{"Id": str(i), "MessageBody": raw_body()} for i in range(min(10, n - start))]
            response = self.client.send_message_batch(QueueUrl=url, Entries=entries)
            if response.get("Failed"):
                raise RuntimeError(f"fill: SendMessageBatch failed: {response['Failed']}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, range(0, n, 10)))

    # -- .map() in a fresh process --------------------------------------------------------------
    def map_round(self, side: str, n: int, label: str) -> MapRound:
        prefix = self.queues.name(label) + "-"
        self.queues.create(prefix + "fill")
        env = {"CLOUDQ_QUEUE_PREFIX": prefix}
        command = [sys.executable, "-m", "bench.map_process", side, prefix + "fill", str(n)]
        ls_cpu = self.log.cpu_s()
        with tempfile.TemporaryDirectory(prefix="cloudq-bench-") as tmp:
            spawned, usage, _, output = self._spawn(command, env, Path(tmp) / "output.txt")
        ls_after = self.log.cpu_s()
        try:
            marks = json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"map_process {side} printed no marks; its output ends: {output[-600:]!r}") from None
        ls = ls_after - ls_cpu if ls_after is not None and ls_cpu is not None else None
        return MapRound(side, n, marks, spawned, usage.ru_utime + usage.ru_stime, ls)

    # -- processes ------------------------------------------------------------------------------
    def _spawn(self, command: list[str], env: dict[str, str], output_path: Path) -> tuple[float, Any, float, str]:
        """Run ``command`` to its end; returns (spawn time, its rusage, exit time, its output)."""
        with output_path.open("w+b") as output:
            spawned = time.perf_counter()
            child = subprocess.Popen(command, env=_child_env({**self._cloudq_env(), **env}), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
            usage, status = _reap(child, self.timeout_s)
            exited = time.perf_counter()
            output.seek(0)
            text = output.read().decode("utf-8", "replace")
        if status != 0:
            raise RuntimeError(f"{' '.join(command[:3])}... exited with status {status}; its output ends: {text[-600:]!r}")
        return spawned, usage, exited, text

    def _cloudq_env(self) -> dict[str, str]:
        return {"CLOUDQ_BROKER": "sqs", "CLOUDQ_ENDPOINT_URL": self.endpoint, "CLOUDQ_REGION": "us-east-1", "CLOUDQ_LOG_LEVEL": "WARNING"}


def _cloudq_command() -> list[str]:
    """The ``cloudq`` console script beside this interpreter, as a user runs it (else ``python -m cloudq``)."""
    script = Path(sys.executable).with_name("cloudq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cloudq"]


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without CLOUDQ_* (a developer's own settings must not leak in), this checkout first
    on PYTHONPATH (so the cloudq under test and ``bench`` import), plus ``extra``.

    Bytecode goes to a cache of the bench's own (PYTHONPYCACHEPREFIX), written even where
    PYTHONDONTWRITEBYTECODE is set: an installed cloudq has its .pyc files, a checkout under that setting
    would compile every module of cloudq at each start-up (about 50 ms), and nothing is written into the tree.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env.update(extra)
    return env


def _reap(child: subprocess.Popen[bytes], timeout_s: float) -> tuple[Any, int]:
    """``wait4`` the child (its own rusage, not the sum of every child ever reaped); kill it past the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return usage, child.returncode
        if time.monotonic() > deadline:
            child.kill()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            raise TimeoutError(f"{child.args[0]} still running after {timeout_s:.0f} s; killed")
        time.sleep(0.01)

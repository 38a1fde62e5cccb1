"""Plumbing shared by the benchmarks: the LocalStack endpoint, fresh queues, timing, call counting.

Nothing here knows about cloudq's internals; each benchmark module builds its own app.
"""

from __future__ import annotations

import collections
import http.client
import os
import re
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BenchError",
    "Deadline",
    "LocalStackLog",
    "Phase",
    "Window",
    "QueueFactory",
    "median",
    "percentile",
    "quiet_logs",
    "require_localstack",
    "sqs_client",
    "start_watchdog",
    "unique_name",
]

REGION = "us-east-1"
_LOG_LINE = re.compile(r"AWS sqs\.(\w+) => (\d+)")


class BenchError(RuntimeError):
    """A set-up problem the user can fix (no LocalStack, missing extra); printed without a traceback."""


@dataclass
class Phase:
    """One timed phase: how many tasks, how long, and the SQS calls made inside the window."""

    tasks: int
    seconds: float
    calls: dict[str, int] = field(default_factory=dict)
    log_calls: dict[str, int] | None = None  # the same window counted from LocalStack's log, if given
    latencies_s: list[float] = field(default_factory=list)
    cpu_s: float | None = None  # CPU time of this process (all threads) in the window
    localstack_cpu_s: float | None = None  # CPU time of the LocalStack process in the window, if known

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    def calls_per_task(self) -> dict[str, float]:
        return {op: n / self.tasks for op, n in sorted(self.calls.items())} if self.tasks else {}


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def unique_name(prefix: str) -> str:
    """Fresh resource names per run: SQS cannot be flushed, and a killed poller may still take messages."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Deadline:
    """A wall-clock budget for one phase, so that no loop can wait for ever."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


def quiet_logs() -> None:
    """Only warnings from cloudq (structlog) and botocore/huey (stdlib), on stderr, during timing."""
    from cloudq.logs import configure_logging

    configure_logging("console" if sys.stderr.isatty() else "json", "WARNING", stream=sys.stderr)


def start_watchdog(seconds: float) -> None:
    """Last resort against a hang the phase timeouts missed: exit the process with a clear message."""

    def fire() -> None:
        print(f"bench: gave up after {seconds:.0f} s (--timeout); queues named cloudq-bench-* and temporary files /tmp/cloudq-bench-* may be left behind",
              file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


# -- LocalStack ------------------------------------------------------------------------------------
def require_localstack(endpoint: str | None) -> str:
    """The healthy endpoint, or a BenchError that says how to get one."""
    if not endpoint:
        raise BenchError(
            "CLOUDQ_BENCH_ENDPOINT is not set. Run `make bench` (starts a LocalStack of its own), or start one "
            "(`bash localstack/run.sh start 4566`) and set CLOUDQ_BENCH_ENDPOINT=http://127.0.0.1:4566; "
            "`--only local` needs no LocalStack."
        )
    endpoint = endpoint.rstrip("/")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy
    try:
        with opener.open(f"{endpoint}/_localstack/health", timeout=3) as response:
            if response.status == 200:
                return endpoint
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise BenchError(f"LocalStack is not reachable at {endpoint} ({exc}); start it or fix CLOUDQ_BENCH_ENDPOINT") from exc
    raise BenchError(f"LocalStack at {endpoint} is not healthy")


def aws_defaults() -> None:
    """LocalStack takes any credentials; set dummy ones only where the environment has none."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)


def sqs_client(endpoint: str, pool: int = 10) -> Any:
    """A plain boto3 SQS client, configured like cloudq's own (standard retries, same timeouts)."""
    from bench.raw_client import sqs_client as raw_sqs_client

    return raw_sqs_client(endpoint, REGION, pool)


class QueueFactory:
    """Creates fresh queues (one run id, random names) and deletes every one of them at the end."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._urls: list[str] = []

    def name(self, label: str) -> str:
        return f"cloudq-bench-{self.run_id}-{label}"

    def create(self, name: str) -> str:
        url: str = self.client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
        self._urls.append(url)
        return url

    def delete_all(self) -> list[str]:
        """Delete what was created; returns the URLs that could not be deleted."""
        failed = []
        for url in self._urls:
            try:
                self.client.delete_queue(QueueUrl=url)
            except Exception:  # noqa: BLE001 - cleanup goes on for the other queues
                failed.append(url)
        self._urls = []
        return failed


class LocalStackLog:
    """Counts ``AWS sqs.<Op> => 200`` lines LocalStack appends to its log within a window (a cross-check),
    and reads the LocalStack process's CPU time from the pid file beside the log (localstack/run.sh's layout).

    Only meaningful when nothing else uses that LocalStack, as with `make bench`.
    """

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._pid = _pid_beside(self.path)

    def cpu_s(self) -> float | None:
        """utime + stime of the LocalStack process (Linux /proc), or None."""
        if self._pid is None:
            return None
        try:
            fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def mark(self) -> int:
        if self.path is None or not self.path.exists():
            return -1
        return self.path.stat().st_size

    def count_since(self, offset: int, settle_s: float = 0.1) -> dict[str, int] | None:
        if self.path is None or offset < 0:
            return None
        time.sleep(settle_s)  # LocalStack writes the line after it answers
        with self.path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
        counts = collections.Counter(m.group(1) for m in _LOG_LINE.finditer(text))
        return dict(sorted(counts.items()))


def _pid_beside(log: Path | None) -> int | None:
    if log is None or log.suffix != ".log":
        return None
    try:
        pid = int(log.with_suffix(".pid").read_text().strip())
        Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return pid


class Window:
    """Measures one phase: wall time, this process's CPU, LocalStack's CPU and its logged calls."""

    def __init__(self, log: LocalStackLog) -> None:
        self.log = log

    def __enter__(self) -> Window:
        self._mark = self.log.mark()
        self._ls_cpu = self.log.cpu_s()
        self._cpu = time.process_time()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu_s = time.process_time() - self._cpu
        ls_cpu = self.log.cpu_s()
        self.localstack_cpu_s = ls_cpu - self._ls_cpu if ls_cpu is not None and self._ls_cpu is not None else None

    def phase(self, tasks: int, calls: dict[str, int], *, seconds: float | None = None) -> Phase:
        """The phase measured; ``seconds`` overrides the wall time (the raw drain ends at its last delete)."""
        return Phase(
            tasks, self.seconds if seconds is None else seconds, calls, self.log.count_since(self._mark),
            cpu_s=self.cpu_s, localstack_cpu_s=self.localstack_cpu_s,
        )  # fmt: skip


def snake_to_op(name: str) -> str:
    """boto3's ``receive_message`` -> SQS's ``ReceiveMessage``, to compare with LocalStack's log."""
    return "".join(part.capitalize() for part in name.split("_"))


def diff_calls(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {snake_to_op(op): n - before.get(op, 0) for op, n in after.items() if n - before.get(op, 0)}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started

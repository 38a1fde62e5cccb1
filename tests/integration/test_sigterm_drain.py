"""A SIGTERM in the middle of a drain strands nothing: `cloudq worker -c 10` stopped again and again, on SQS
(LocalStack) and on the local broker. After each exit nothing is in flight, and in the end every job has run
exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import cloudq

from .conftest import ensure_queues

APP_SOURCE = '''
import os, time
import cloudq

app = cloudq.App("drain")

@app.task(name="mark")
def mark(i: int) -> None:
    time.sleep(0.01)  # about 1000 jobs/s with -c 10: every SIGTERM lands mid-drain
    with open(os.environ["MARKS"], "a") as f:
        f.write(f"{i}\\n")
'''

JOBS = 2500
DELAYS_S = (0.0, 0.05, 0.15, 0.3, 0.02, 0.1)  # after the first job has run: SIGTERM at different points


def _env(tmp_path: Path, broker: str, settings: cloudq.Settings) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "MARKS": str(tmp_path / "marks.txt"),
        "CLOUDQ_BROKER": broker,
        "CLOUDQ_QUEUE_PREFIX": settings.queue_prefix,
        "CLOUDQ_VISIBILITY_TIMEOUT_S": "30",  # a stranded message would stay invisible far longer than we look
        "CLOUDQ_WAIT_TIME_S": "2",
        "CLOUDQ_LOG_FORMAT": "json",
        "CLOUDQ_LOG_LEVEL": "WARNING",  # as in production; more log lines would shift the timings
        "CLOUDQ_LOCAL_PATH": str(tmp_path / "broker.db"),
    }
    if broker == "sqs":
        env |= {"CLOUDQ_ENDPOINT_URL": str(settings.endpoint_url), "CLOUDQ_REGION": "us-east-1"}
    return env


def _marks(tmp_path: Path) -> list[int]:
    path = tmp_path / "marks.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _not_jobs(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if "job.succeeded" not in line)[-3000:]


def _in_flight_within(stats: Any, seconds: float) -> int:
    """In-flight count, polled for up to ``seconds`` (released messages become visible at once)."""
    deadline = time.monotonic() + seconds
    while True:
        in_flight = stats().in_flight
        if in_flight == 0 or time.monotonic() > deadline:
            return int(in_flight)
        time.sleep(0.1)


@pytest.mark.parametrize("broker", ["sqs", "local"])
def test_sigterm_mid_drain_strands_nothing_and_every_job_runs_once(broker: str, make_settings: Any, tmp_path: Path) -> None:
    """Each SIGTERM leaves nothing in flight (visible again within 1 s); the jobs all run, exactly once."""
    (tmp_path / "drain_app.py").write_text(APP_SOURCE)
    settings = make_settings(broker=broker, local_path=str(tmp_path / "broker.db"))
    app = cloudq.App("drain", settings=settings)
    mark = app.task(name="mark")(lambda i: None)
    if broker == "sqs":
        ensure_queues(app)
    mark.map([(i,) for i in range(JOBS)])
    env = _env(tmp_path, broker, settings)
    stats = lambda: app.broker.stats(settings.queue_name("default"))  # type: ignore[attr-defined]  # noqa: E731
    command = [sys.executable, "-m", "cloudq", "worker", "drain_app:app", "-c", "10"]

    for delay_s in DELAYS_S:
        before = len(_marks(tmp_path))
        log = (tmp_path / f"worker-{delay_s}.log").open("w")
        worker = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while len(_marks(tmp_path)) == before and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.005)
        assert len(_marks(tmp_path)) > before, "the worker ran no job: the queue emptied before this round"
        time.sleep(delay_s)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        log.close()
        output = (tmp_path / f"worker-{delay_s}.log").read_text()
        assert worker.returncode == 0, output
        stranded = _in_flight_within(stats, 1.0)
        assert stranded == 0, f"stranded after SIGTERM at +{delay_s}s: {stats()}, {len(_marks(tmp_path))} run\n{_not_jobs(output)}"

    finish = subprocess.run([*command, "--burst"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert finish.returncode == 0, finish.stdout + finish.stderr
    marks = _marks(tmp_path)
    assert sorted(set(marks)) == list(range(JOBS)), f"{JOBS - len(set(marks))} jobs never ran"
    assert len(marks) == JOBS, f"{len(marks) - JOBS} duplicate runs"
    app.close()

"""`cloudq worker` as a real process on LocalStack: SIGTERM drains, SIGKILL loses nothing."""

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

app = cloudq.App("proc")

@app.task(name="slow")
def slow(marker: str, seconds: float) -> None:
    with open(marker, "a") as f:
        f.write(f"start {os.getpid()}\\n")
    time.sleep(seconds)
    with open(marker, "a") as f:
        f.write(f"done {os.getpid()}\\n")

@app.task(name="bill", queue="billing")
def bill(marker: str) -> None:
    with open(marker, "a") as f:
        f.write("billed\\n")
'''


@pytest.fixture
def proc_env(make_settings: Any, tmp_path: Path) -> tuple[dict[str, str], cloudq.App]:
    (tmp_path / "proc_app.py").write_text(APP_SOURCE)
    settings = make_settings(visibility_timeout_s=3, shutdown_grace_s=15)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "CLOUDQ_BROKER": "sqs",
        "CLOUDQ_ENDPOINT_URL": str(settings.endpoint_url),
        "CLOUDQ_QUEUE_PREFIX": settings.queue_prefix,
        "CLOUDQ_VISIBILITY_TIMEOUT_S": "3",
        "CLOUDQ_WAIT_TIME_S": "1",
        "CLOUDQ_SHUTDOWN_GRACE_S": "15",
        "CLOUDQ_LOG_FORMAT": "json",
    }
    app = cloudq.App("proc", settings=settings)

    @app.task(name="slow")
    def slow(marker: str, seconds: float) -> None: ...

    @app.task(name="bill", queue="billing")
    def bill(marker: str) -> None: ...

    ensure_queues(app)
    return env, app


def start_worker(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cloudq", "worker", "proc_app:app", *args],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for_line(path: Path, text: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path} after {timeout_s}s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_lets_the_running_job_finish_then_exits_zero(sig: signal.Signals, proc_env: Any, tmp_path: Path) -> None:
    """SIGTERM mid-job, or SIGINT (Ctrl-C) the same way: stop receiving, finish the job, delete it, exit 0."""
    env, app = proc_env
    marker = tmp_path / "marker.txt"
    app.registry["slow"].delay(str(marker), 2.0)
    worker = start_worker(env, tmp_path, "-c", "2")
    try:
        wait_for_line(marker, "start")
        worker.send_signal(sig)
        out, _ = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, out
    assert "done" in marker.read_text()
    assert '"event": "worker.stopping"' in out and f'"reason": "{sig.name}"' in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    stats = app.broker.stats(app.settings.queue_name("default"))
    assert (stats.visible, stats.in_flight) == (0, 0)


def test_sigkill_mid_job_loses_nothing(proc_env: Any, tmp_path: Path) -> None:
    """A worker killed with SIGKILL mid-job: the message comes back after the visibility timeout and runs."""
    env, app = proc_env
    marker = tmp_path / "marker.txt"
    app.registry["slow"].delay(str(marker), 1.0)
    first = start_worker(env, tmp_path)
    try:
        wait_for_line(marker, "start")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    assert "done" not in marker.read_text()
    second = start_worker(env, tmp_path, "--max-tasks", "1")
    try:
        out, _ = second.communicate(timeout=40)
    finally:
        second.kill()
    assert second.returncode == 0, out
    lines = marker.read_text().split()
    assert lines.count("done") == 1 and f"done {second.pid}" in marker.read_text()
    assert '"attempt": 2' in out


def test_worker_q_consumes_only_the_queues_it_names(proc_env: Any, tmp_path: Path) -> None:
    """`cloudq worker APP -q billing --burst` runs the billing job and leaves the default queue's job waiting."""
    env, app = proc_env
    marker = tmp_path / "marker.txt"
    app.registry["bill"].delay(str(marker))
    app.registry["slow"].delay(str(marker), 0.0)
    worker = start_worker(env, tmp_path, "-q", "billing", "--burst")
    try:
        out, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, out
    assert marker.exists() and marker.read_text().split() == ["billed"], out
    assert '"queues": ["billing"]' in out
    billing, default = (app.broker.stats(app.settings.queue_name(q)) for q in ("billing", "default"))
    assert (billing.visible, billing.in_flight) == (0, 0) and (default.visible, default.in_flight) == (1, 0)

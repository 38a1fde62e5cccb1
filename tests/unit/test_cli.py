"""The cloudq command on the local broker: enqueue, worker --burst, schema, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudq.cli import main

pytestmark = pytest.mark.unit

APP = '''
import cloudq
app = cloudq.App("cli")

@app.task(name="greet")
def greet(name: str, punctuation: str = "!") -> None:
    with open("greetings.txt", "a") as f:
        f.write(f"hello {name}{punctuation}\\n")
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cli_app.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUDQ_BROKER", "local")
    monkeypatch.setenv("CLOUDQ_LOCAL_PATH", str(tmp_path / "q.db"))
    monkeypatch.setenv("CLOUDQ_WAIT_TIME_S", "1")
    return tmp_path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudq", *args], cwd=cwd, env=os.environ, capture_output=True, text=True, timeout=60)


def test_enqueue_then_burst_worker_runs_the_job(workdir: Path) -> None:
    """`cloudq enqueue APP TASK --args --kwargs` then `cloudq worker APP --burst` runs it and exits 0."""
    out = run_cli("enqueue", "cli_app:app", "greet", "--args", '["ada"]', "--kwargs", '{"punctuation": "?"}', cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["task"] == "greet"
    worker = run_cli("worker", "cli_app:app", "--burst", cwd=workdir)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert (workdir / "greetings.txt").read_text() == "hello ada?\n"
    assert '"event": "job.succeeded"' in worker.stdout  # JSON logs when stdout is not a terminal


def test_app_from_cloudq_app_env(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without APP, CLOUDQ_APP names the app."""
    monkeypatch.setenv("CLOUDQ_APP", "cli_app:app")
    monkeypatch.syspath_prepend(str(workdir))
    assert main(["enqueue", "greet", "--args", '["bob"]']) == 0
    assert json.loads(capsys.readouterr().out)["queue"] == "default"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["enqueue", "cli_app:app", "greet", "--args", "not json"], "--args is not valid JSON"),
        (["enqueue", "cli_app:app", "greet", "--args", '{"a": 1}'], "--args must be a JSON array"),
        (["enqueue", "cli_app:app", "greet", "--args", "[1, 2, 3]"], "do not fit task 'greet'"),
        (["worker", "no_such_module:app"], "cannot import app module"),
        (["worker", "cli_app"], "module:attribute"),
        (["worker", "cli_app:nothing"], "module 'cli_app' has no attribute 'nothing'; its cloudq.App: app"),
        (["worker", "cli_app:greet"], "'cli_app:greet' is not a cloudq.App (got Task)"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """Bad CLI input exits 2 with a message saying what is wrong."""
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.delenv("CLOUDQ_APP", raising=False)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_schema_prints_the_shipped_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`cloudq schema` prints the envelope v1 JSON Schema."""
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["required"] == ["task"] and "kwargs" in schema["properties"]

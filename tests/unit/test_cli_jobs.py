"""``cloudq job``, ``cloudq jobs`` and ``cloudq cancel`` on the local broker and its job store, as a user runs them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.unit.cli_env import run_cli

APP_SOURCE = '''
import cloudq

app = cloudq.App("clijobs")

@app.task
def hello(name: str) -> str:
    return "hi " + name

@app.task(max_retries=0)
def bad() -> None:
    raise ValueError("nope \\x1b[2J")
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "clijobs.py").write_text(textwrap.dedent(APP_SOURCE))
    return tmp_path


def cli(project: Path, *args: str) -> tuple[int, str, str]:
    done = run_cli(*args, cwd=project, PYTHONPATH=str(project), CLOUDQ_LOCAL_PATH=str(project / "q.db"), CLOUDQ_WAIT_TIME_S="1")
    return done.returncode, done.stdout, done.stderr


def enqueue(project: Path, task: str, *args: str) -> str:
    code, out, err = cli(project, "enqueue", "clijobs:app", task, *args)
    assert code == 0, err
    return str(json.loads(out)["id"])


def test_job_jobs_and_cancel_through_a_worker_run(project: Path) -> None:
    good = enqueue(project, "clijobs.hello", "--args", '["ada"]')
    bad = enqueue(project, "clijobs.bad")
    dropped = enqueue(project, "clijobs.hello", "--args", '["bob"]')

    code, out, _ = cli(project, "job", "clijobs:app", good)
    assert code == 0 and "status     queued" in out
    code, out, _ = cli(project, "cancel", "clijobs:app", dropped)
    assert (code, out.strip()) == (0, f"job {dropped}: cancelled: it will not run")

    code, _, err = cli(project, "worker", "clijobs:app", "--burst")
    assert code == 0, err

    code, out, _ = cli(project, "job", "clijobs:app", good, "--json")
    state = json.loads(out)
    assert (state["status"], state["result"], state["attempts"]) == ("succeeded", "hi ada", 1)
    code, out, _ = cli(project, "job", "clijobs:app", bad)
    assert "status     dead_lettered" in out and "(reason: max_retries_exceeded)" in out
    assert "\x1b" not in out and "nope \\x1b[2J" in out  # the producer's escape sequence is shown, not run

    code, out, _ = cli(project, "jobs", "clijobs:app")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["JOB", "ID", "TASK"] and len(lines) == 4
    assert [line.split()[0] for line in lines[1:]] == [dropped, bad, good]  # newest first
    code, out, _ = cli(project, "jobs", "clijobs:app", "--status", "cancelled", "--json")
    assert [s["id"] for s in json.loads(out)] == [dropped]
    code, out, _ = cli(project, "jobs", "clijobs:app", "--task", "clijobs.bad", "-n", "1", "--json")
    assert [s["id"] for s in json.loads(out)] == [bad]

    code, out, _ = cli(project, "cancel", "clijobs:app", good)
    assert code == 1 and "has already ended (succeeded)" in out


def test_unknown_job_and_bad_input_are_one_line_errors(project: Path) -> None:
    code, out, err = cli(project, "job", "clijobs:app", "no-such-job")
    assert code == 1 and err.strip().splitlines() == ["cloudq: JobNotFound: no job 'no-such-job' in the job store (never tracked, or expired after CLOUDQ_JOB_TTL_S)"]
    code, _, err = cli(project, "cancel", "clijobs:app", "no-such-job")
    assert code == 1 and err.count("\n") == 1
    code, _, err = cli(project, "jobs", "clijobs:app", "--status", "nonsense")
    assert code == 2 and "invalid choice" in err


def test_without_a_store_the_commands_say_how_to_configure_one(project: Path) -> None:
    done = run_cli("jobs", "clijobs:app", cwd=project, PYTHONPATH=str(project), CLOUDQ_LOCAL_PATH=str(project / "q.db"), CLOUDQ_JOB_STORE="none")
    assert done.returncode == 2 and "CLOUDQ_JOB_STORE" in done.stderr and done.stderr.count("\n") == 1

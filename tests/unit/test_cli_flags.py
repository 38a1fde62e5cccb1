"""The numeric flags of ``cloudq worker`` and ``cloudq lambda-local``: a bad value is a one-line error, exit 2.

Before, ``-c 0`` silently became the default, ``-c -1`` was a traceback, ``-c 5000`` and ``--max-tasks -1``
passed, and ``lambda-local --timeout nan`` (or ``inf``) failed every invocation yet exited 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cloudq
from cloudq.cli import build_parser, main
from cloudq.cli.runtimes import MAX_CONCURRENCY, MIN_CONCURRENCY

pytestmark = pytest.mark.unit

APP = "cloudq.examples.shop:app"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", APP, "-c", "0"], "argument -c/--concurrency: must be 1..1000, got 0"),
        (["worker", APP, "-c", "-1"], "argument -c/--concurrency: must be 1..1000, got -1"),
        (["worker", APP, "--concurrency", "5000"], "argument -c/--concurrency: must be 1..1000, got 5000"),
        (["worker", APP, "-c", "abc"], "argument -c/--concurrency: invalid int value: 'abc'"),
        (["worker", APP, "--max-tasks", "-1"], "argument --max-tasks: must be at least 1, got -1"),
        (["worker", APP, "--max-tasks", "0"], "argument --max-tasks: must be at least 1, got 0"),
        (["lambda-local", APP, "--timeout", "nan"], "argument --timeout: must be a finite number of seconds, got nan"),
        (["lambda-local", APP, "--timeout", "inf"], "argument --timeout: must be a finite number of seconds, got inf"),
        (["lambda-local", APP, "--timeout", "x"], "argument --timeout: invalid float value: 'x'"),
    ],
)
def test_a_bad_flag_value_is_one_error_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """The parser refuses the value before any app is loaded: argparse's usage, then one ``error:`` line."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"cloudq {argv[0]}: error: {message}"
    assert err.count("error:") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "batch size must be 1..10000, got 0"),
        (["--batch-size", "-1"], "batch size must be 1..10000, got -1"),
        (["--batch-size", "10001"], "batch size must be 1..10000, got 10001"),
        (["--batching-window", "-1"], "batching window must be 0..300 s, got -1.0"),
        (["--batching-window", "nan"], "batching window must be 0..300 s, got nan"),
        (["--max-batches", "0"], "timeout must be > 0 seconds and max batches >= 1"),
        (["--timeout", "0"], "timeout must be > 0 seconds and max batches >= 1"),
    ],
)
def test_lambda_local_range_errors_stay_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """lambda-local's other numeric flags were already checked by the emulator: one ``cloudq: error:`` line."""
    monkeypatch.setenv("CLOUDQ_BROKER", "memory")
    monkeypatch.chdir(tmp_path)
    assert main(["lambda-local", APP, "--burst", *argv]) == 2
    assert capsys.readouterr().err == f"cloudq: error: {message}\n"


@pytest.mark.parametrize("value", ["1", "10", "1000"])
def test_concurrency_within_the_settings_bounds_is_taken_as_given(value: str) -> None:
    """The bounds themselves are valid: ``-c`` reaches the Worker as the int the user typed."""
    ns = build_parser().parse_args(["worker", APP, "-c", value, "--max-tasks", "1"])
    assert (ns.concurrency, ns.max_tasks) == (int(value), 1)


def test_the_concurrency_bounds_are_those_of_cloudq_concurrency() -> None:
    """The CLI repeats CLOUDQ_CONCURRENCY's bounds (to keep pydantic out of its start-up): they must agree."""
    metadata = cloudq.Settings.model_fields["concurrency"].metadata
    ge = next(m.ge for m in metadata if hasattr(m, "ge"))
    le = next(m.le for m in metadata if hasattr(m, "le"))
    assert (MIN_CONCURRENCY, MAX_CONCURRENCY) == (ge, le)


def test_the_cloudq_process_exits_2_with_no_traceback(tmp_path: Path) -> None:
    """As a user runs it: ``cloudq worker APP -c -1`` (a traceback before) is one error line and exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    out = subprocess.run([sys.executable, "-m", "cloudq", "worker", APP, "-c", "-1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == "cloudq worker: error: argument -c/--concurrency: must be 1..1000, got -1"
    assert "Traceback" not in out.stderr and out.stdout == ""

"""`cloudq status APP --watch`: a live table of the app's queues with the oldest age, DLQ depth and rates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudq.brokers.base import QueueStats
from cloudq.cli.watch import WatchRow, sample
from cloudq.queues import QueuePlan
from cloudq.brokers.base import QueueConfig

from .cli_env import APP, run_cli

pytestmark = pytest.mark.unit


def test_status_watch_renders_twice_and_exits_on_sigint(tmp_path: Path) -> None:
    """Two refreshes of the plain table (stdout is a pipe), each with the waiting job's age; SIGINT ends it, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    env["CLOUDQ_LOCAL_PATH"] = str(tmp_path / "q.db")
    enqueued = run_cli("enqueue", APP, "cloudq.examples.shop.send_welcome_email", "--args", '["ada@example.com"]', cwd=tmp_path, CLOUDQ_LOCAL_PATH=env["CLOUDQ_LOCAL_PATH"])
    assert enqueued.returncode == 0, enqueued.stderr
    child = subprocess.Popen(
        [sys.executable, "-m", "cloudq", "status", APP, "--watch", "--interval", "0.2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while sum(line.startswith("default ") for line in lines) < 2 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)

    assert child.returncode == 0, err
    assert sum(line.startswith("QUEUE") for line in lines) == 2, lines
    assert lines[0].startswith("cloudq status shop: every 0.2s, Ctrl-C to stop (")
    header = lines[1].split()
    assert header[:5] == ["QUEUE", "VISIBLE", "IN", "FLIGHT", "DELAYED"] and "OLDEST" in header and "DLQ" in header
    default = [line.split() for line in lines if line.startswith("default ")]
    assert default[0][1] == "1" and default[0][4].endswith("s")  # one waiting job, its age in seconds
    assert default[0][-2:] == ["-", "-"] and default[1][-2:] == ["+0.0", "+0.0"]  # rates from the second refresh on
    assert "Traceback" not in err


def plan(queue: str) -> QueuePlan:
    return QueuePlan(queue, f"p-{queue}", f"p-{queue}-dlq", QueueConfig())


def test_rates_are_per_second_since_the_previous_refresh() -> None:
    counts = {"p-a": QueueStats("p-a", True, 10, 2, 0, 75.0), "p-a-dlq": QueueStats("p-a-dlq", True, 3, 0, 0)}
    previous = {"a": WatchRow("a", True, 30, 0, 0, None, 1)}
    [row] = sample([plan("a")], counts.__getitem__, previous, 2.0)

    assert (row.visible_per_s, row.dlq_per_s, row.dlq) == (-10.0, 1.0, 3)
    assert row.cells() == ["a", "10", "2", "0", "75s", "3", "-10.0", "+1.0"]
    assert WatchRow("b", False, 0, 0, 0, None, 0).cells()[1] == "MISSING"


def test_watch_interval_must_be_positive(tmp_path: Path) -> None:
    result = run_cli("status", APP, "--watch", "--interval", "0", cwd=tmp_path)
    assert result.returncode == 2 and "must be a positive number of seconds" in result.stderr


def test_an_age_from_cloudwatch_fills_in_what_the_broker_does_not_report() -> None:
    counts = {"p-a": QueueStats("p-a", True, 1), "p-a-dlq": QueueStats("p-a-dlq", True)}
    [row] = sample([plan("a")], counts.__getitem__, {}, 0.0, {"p-a": 300.0})
    assert row.oldest_age_s == 300.0 and row.cells()[4] == "5m"


def test_cloudwatch_ages_that_fail_are_one_line_then_dashes(capsys: pytest.CaptureFixture[str]) -> None:
    """No CloudWatch (here: nothing listens on the endpoint): one line on stderr, no ages, no second try."""
    import cloudq
    from cloudq.cli.watch import CloudWatchAges

    ages = CloudWatchAges(cloudq.Settings(broker="sqs", endpoint_url="http://127.0.0.1:9", region="us-east-1"), every_s=0)
    try:
        assert ages(["q"]) == {} and ages(["q"]) == {}
    finally:
        ages.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("cloudq: oldest message age unavailable: CloudWatch GetMetricData failed: ")

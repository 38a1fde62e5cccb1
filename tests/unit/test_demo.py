"""``cloudq demo`` end to end in a subprocess, and the example shop app's tasks on the memory broker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cloudq
from cloudq.brokers.memory import MemoryBroker
from cloudq.examples import shop
from cloudq.runtimes.worker import Worker

pytestmark = pytest.mark.unit


def run_demo(cwd: Path, n: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    return subprocess.run(
        [sys.executable, "-m", "cloudq", "demo", "-n", str(n)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def number(label: str, output: str) -> int:
    match = re.search(rf"^\s*{label}\s+([\d,]+)", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    return int(match.group(1).replace(",", ""))


def test_demo_settles_every_job_and_prints_the_summary(tmp_path: Path) -> None:
    """50 jobs: all processed, at least one retried, exactly one dead-lettered and read back from its DLQ."""
    result = run_demo(tmp_path, 50)

    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert number("processed", out) == 50 and "50 of 50 jobs (48 succeeded)" in out and number("cancelled", out) == 1
    assert number("retried", out) >= 1
    assert number("dead-lettered", out) == 1
    assert number("jobs/s", out) > 0
    assert re.search(r"dead letter\s+queue default-dlq: task crm.notify_legacy, rejected", out)
    # a few jobs read back from the job store: results, the retried one's attempts, the dead letter, the cancelled one
    flat = " ".join(out.split())  # a narrow terminal folds the table's cells
    assert re.search(r'job\s+\w{8} billing.charge succeeded result \{"order": "order-0", "charged_cents": 100\}', flat)
    assert re.search(r"job\s+\w{8} search.update_index succeeded, 2 attempts", flat)
    assert re.search(r"job\s+\w{8} crm.notify_legacy dead_lettered rejected: legacy CRM", flat)
    assert re.search(r"job\s+\w{8} cloudq.examples.shop.send_welcome_email cancelled", flat)
    assert "CLOUDQ_BROKER=sqs" in out and "CLOUDQ_ENDPOINT_URL=http://127.0.0.1:4566" in out
    assert "cloudq worker cloudq.examples.shop:app" in out


def test_demo_output_is_clean_without_a_terminal(tmp_path: Path) -> None:
    """Piped output has no progress bar, no escape codes and no per-job log lines; stderr is empty."""
    result = run_demo(tmp_path, 20)

    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stderr == ""
    assert "━" not in result.stdout and "\x1b" not in result.stdout
    assert "job.succeeded" not in result.stdout and "job.dead_lettered" not in result.stdout


def test_demo_runs_again_in_the_same_directory(tmp_path: Path) -> None:
    """A second run starts from an empty demo.db: the same counts, one dead letter (not two)."""
    first, second = run_demo(tmp_path, 30), run_demo(tmp_path, 30)

    for result in (first, second):
        assert result.returncode == 0, result.stderr + result.stdout
        assert number("processed", result.stdout) == 30
        assert number("dead-lettered", result.stdout) == 1
        assert result.stdout.count("dead letter ") == 1
    assert (tmp_path / ".cloudq" / "demo.db").exists()
    assert not (tmp_path / ".cloudq" / "broker.db").exists()


def test_demo_rejects_too_few_jobs(tmp_path: Path) -> None:
    """Fewer than 3 jobs cannot show a retry, a dead letter and a success: exit 2 with a message."""
    result = run_demo(tmp_path, 2)

    assert result.returncode == 2
    assert "at least 3 jobs" in result.stderr


async def test_shop_tasks_on_the_memory_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each example task does what its docstring says: success, Retry once, Reject to the DLQ with the reason."""
    now = [1000.0]
    broker = MemoryBroker(clock=lambda: now[0])
    monkeypatch.setattr(shop.app, "settings", cloudq.Settings(broker="memory"))
    monkeypatch.setattr(shop.app, "_broker", broker)

    shop.send_welcome_email.delay("ada@example.com")
    shop.charge.delay("order-1", 1999)
    shop.charge.delay("order-2", 0)
    shop.update_search_index.delay("sku-test-memory")
    shop.notify_legacy_crm.delay("customer-1")
    # burst_retry_wait_s=0: the first burst does not wait for the retry (the broker runs on a fake clock)
    first = await asyncio.wait_for(Worker(shop.app, burst=True, burst_wait_s=0, burst_retry_wait_s=0).run(), 10)
    now[0] += 2  # past Retry(delay=1)
    second = await asyncio.wait_for(Worker(shop.app, burst=True, burst_wait_s=0).run(), 10)

    assert (first.succeeded, first.retried, first.dead_lettered) == (2, 1, 2)
    assert (second.succeeded, second.retried, second.dead_lettered) == (1, 0, 0)
    assert shop.charge.queue == "billing" and shop.charge.max_retries == 5 and shop.charge.timeout == 30
    reasons = {q: [a["cloudq-reason"] for a in broker.attributes(q)] for q in ("default-dlq", "billing-dlq")}
    assert reasons == {"default-dlq": ["rejected"], "billing-dlq": ["rejected"]}
    assert [json.loads(b)["task"] for b in broker.messages("default-dlq")] == ["crm.notify_legacy"]

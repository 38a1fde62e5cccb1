"""The operations commands against SQS on LocalStack: status, dlq peek, dlq redrive, purge."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cloudq.cli import main
from cloudq.runtimes.worker import Worker

from ..unit.test_cli_ops import APP  # the same app module as the unit tests of these commands
from .conftest import ensure_queues, receive_all


@pytest.fixture
def ops(make_settings: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh app module on LocalStack, configured only by CLOUDQ_* variables, as the CLI sees it."""
    settings = make_settings()
    name = f"ops_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CLOUDQ_APP", raising=False)
    for key in ("broker", "endpoint_url", "region", "queue_prefix", "wait_time_s", "visibility_timeout_s"):
        monkeypatch.setenv(f"CLOUDQ_{key.upper()}", str(getattr(settings, key)))
    module = importlib.import_module(name)
    module.SPEC = f"{name}:app"  # type: ignore[attr-defined]
    module.PREFIX = settings.queue_prefix  # type: ignore[attr-defined]
    yield module
    module.app.close()
    sys.modules.pop(name, None)


async def dead_letter_jobs(ops: ModuleType, n: int) -> None:
    """Create the queues, enqueue n charges that fail, and let a burst worker dead-letter them."""
    ensure_queues(ops.app)
    ops.charge.map([(f"c{i}", 100 * i) for i in range(n)])
    stats = await Worker(ops.app, burst=True).run()
    await ops.app.aclose()  # aioboto3 clients are bound to this test's loop
    assert stats.dead_lettered == n


def url(sqs_client: Any, queue: str) -> str:
    return str(sqs_client.get_queue_url(QueueName=queue)["QueueUrl"])


def test_status_counts_and_missing_queue_exit_code(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """status exits 1 naming missing queues; once they exist it reports SQS's visible/in-flight/delayed counts."""
    assert main(["status", ops.SPEC]) == 1
    assert f"missing queues: {ops.PREFIX}billing, {ops.PREFIX}billing-dlq" in capsys.readouterr().err

    ensure_queues(ops.app)
    ops.charge.map([("a", 1), ("b", 2)])
    ops.charge.with_options(delay=60).delay("later", 3)
    assert main(["status", ops.SPEC, "--json"]) == 0
    rows = {(r["queue"], r["role"]): r for r in json.loads(capsys.readouterr().out)}
    billing = rows["billing", "queue"]
    assert (billing["physical"], billing["exists"], billing["visible"], billing["delayed"]) == (f"{ops.PREFIX}billing", True, 2, 1)
    assert rows["billing", "dlq"]["exists"] and rows["default", "dlq"]["physical"] == f"{ops.PREFIX}default-dlq"

    assert main(["status", ops.SPEC]) == 0
    assert f"billing (dlq)  {ops.PREFIX}billing-dlq" in capsys.readouterr().out


async def test_peek_shows_the_reason_without_deleting(ops: ModuleType, sqs_client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """dlq peek shows task, args, attempts and reason; the dead letters stay, visible at once."""
    await dead_letter_jobs(ops, 2)
    capsys.readouterr()
    assert main(["dlq", "peek", ops.SPEC, "billing"]) == 0
    out = capsys.readouterr().out
    assert "2 shown" in out
    lines = [line for line in out.splitlines() if "billing.charge" in line]
    assert len(lines) == 2 and all("max_retries_exceeded" in line and "RuntimeError: card declined" in line for line in lines)
    assert any('["c1", 100]' in line for line in lines)

    assert main(["dlq", "peek", ops.SPEC, "billing"]) == 0  # a second look sees the same letters
    assert "2 shown" in capsys.readouterr().out
    dead = receive_all(sqs_client, url(sqs_client, f"{ops.PREFIX}billing-dlq"), 2, timeout_s=3)
    assert len(dead) == 2  # released at once, not hidden for a visibility timeout


async def test_redrive_moves_messages_back_and_a_worker_processes_them(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """--max copies that many; a plain redrive runs SQS's move task with progress; a worker then runs all."""
    await dead_letter_jobs(ops, 3)
    broker = ops.app.broker
    capsys.readouterr()
    assert main(["dlq", "redrive", ops.SPEC, "billing", "--max", "1"]) == 0
    assert f"moved 1 dead letter back to queue billing ({ops.PREFIX}billing)" in capsys.readouterr().out
    assert broker.stats(f"{ops.PREFIX}billing").visible == 1 and broker.stats(f"{ops.PREFIX}billing-dlq").visible == 2

    assert main(["dlq", "redrive", ops.SPEC, "billing"]) == 0
    out = capsys.readouterr().out
    assert "  moved 2 of about 2" in out and "moved 2 dead letters back" in out
    assert broker.calls["start_message_move_task"] == 1 and broker.calls["list_message_move_tasks"] >= 1

    ops.FAIL["on"] = False
    stats = await Worker(ops.app, burst=True).run()
    await ops.app.aclose()
    assert stats.succeeded == 3 and sorted(ops.DONE) == [("c0", 0), ("c1", 100), ("c2", 200)]
    for queue in ("billing", "billing-dlq"):
        s = broker.stats(f"{ops.PREFIX}{queue}")
        assert (s.visible, s.in_flight) == (0, 0)


def test_purge_with_yes(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """purge --yes calls PurgeQueue and reports the count it found before."""
    ensure_queues(ops.app)
    ops.charge.map([("a", 1), ("b", 2), ("c", 3)])
    assert main(["purge", ops.SPEC, "billing", "--yes"]) == 0
    assert f"purged 3 messages from {ops.PREFIX}billing" in capsys.readouterr().out
    assert ops.app.broker.calls["purge_queue"] == 1
    assert ops.app.broker.stats(f"{ops.PREFIX}billing").visible == 0


def test_peek_on_a_missing_dlq_is_exit_1(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """Before `queues ensure`, peek fails with QueueNotFound naming the queue."""
    assert main(["dlq", "peek", ops.SPEC, "billing"]) == 1
    assert f"'{ops.PREFIX}billing-dlq' does not exist" in capsys.readouterr().err

"""The operations commands on the local broker: status, dlq peek, dlq redrive, purge."""

from __future__ import annotations

import importlib
import io
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from cloudq.brokers.base import Delivery, QueueStats
from cloudq.brokers.memory import MemoryBroker
from cloudq.cli import main
from cloudq.cli.ops import describe_dead_letter, render_table, status_rows
from cloudq.queues import plan_queues
from cloudq.runtimes.worker import Worker

pytestmark = pytest.mark.unit

APP = '''
import cloudq
app = cloudq.App("ops")
FAIL = {"on": True}
DONE = []

@app.task(name="billing.charge", queue="billing", max_retries=0)
def charge(customer: str, cents: int) -> None:
    if FAIL["on"]:
        raise RuntimeError("card declined")
    DONE.append((customer, cents))
'''


@pytest.fixture
def ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh app module (its own name, so its Settings are read from this test's environment)."""
    name = f"ops_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CLOUDQ_APP", raising=False)
    monkeypatch.setenv("CLOUDQ_BROKER", "local")
    monkeypatch.setenv("CLOUDQ_LOCAL_PATH", str(tmp_path / "q.db"))
    monkeypatch.setenv("CLOUDQ_WAIT_TIME_S", "1")
    module = importlib.import_module(name)
    module.SPEC = f"{name}:app"  # type: ignore[attr-defined]
    yield module
    module.app.close()
    sys.modules.pop(name, None)


async def dead_letter_jobs(ops: ModuleType, n: int) -> None:
    """Create the queues, enqueue n charges that fail, and let a burst worker dead-letter them."""
    assert main(["queues", "ensure", ops.SPEC]) == 0
    ops.charge.map([(f"c{i}", 100 * i) for i in range(n)])
    stats = await Worker(ops.app, burst=True).run()
    assert stats.dead_lettered == n


def count(ops: ModuleType, queue: str) -> int:
    s = ops.app.broker.stats(queue)
    return s.visible + s.in_flight + s.delayed


def test_status_exits_1_naming_missing_queues_then_0_once_ensured(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """On a broker whose queues must be created (memory here, SQS in the integration tests), status
    lists every registry queue and DLQ, exits 1 naming the missing ones, 0 after `queues ensure`."""
    ops.app.use_broker(MemoryBroker())
    assert main(["status", ops.SPEC]) == 1
    out, err = capsys.readouterr()
    assert "billing-dlq" in out and "MISSING" in out
    assert "missing queues: billing, billing-dlq, default, default-dlq" in err and f"cloudq queues ensure {ops.SPEC}" in err

    main(["queues", "ensure", ops.SPEC])
    ops.charge.map([("a", 1), ("b", 2)])
    capsys.readouterr()
    assert main(["status", ops.SPEC, "--json"]) == 0
    rows = {(r["queue"], r["role"]): r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {("billing", "queue"), ("billing", "dlq"), ("default", "queue"), ("default", "dlq")}
    assert rows["billing", "queue"] == {
        "queue": "billing", "role": "queue", "physical": "billing", "exists": True, "visible": 2, "in_flight": 0, "delayed": 0,
    }  # fmt: skip
    assert rows["billing", "dlq"]["physical"] == "billing-dlq" and rows["billing", "dlq"]["exists"]


async def test_peek_shows_task_args_attempts_and_reason_without_deleting(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """dlq peek prints each dead letter's task, args, attempts and recorded error, and leaves it in the DLQ."""
    await dead_letter_jobs(ops, 3)
    capsys.readouterr()
    assert main(["dlq", "peek", ops.SPEC, "billing", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "billing-dlq: dead letters of queue billing: 2 shown of about 3" in out
    lines = out.splitlines()[2:]
    assert len(lines) == 2 and all("billing.charge" in line and "max_retries_exceeded" in line for line in lines)
    # jobs dead-letter in the order they finish (they run concurrently), so any two of the three show
    shown = [args for args in ('["c0", 0]', '["c1", 100]', '["c2", 200]') if any(args in line for line in lines)]
    assert len(shown) == 2 and all("RuntimeError: card declined" in line for line in lines)
    assert count(ops, "billing-dlq") == 3 and ops.app.broker.stats("billing-dlq").visible == 3


async def test_redrive_moves_dead_letters_back_and_a_worker_runs_them(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """dlq redrive --max moves that many, a plain redrive the rest; a worker then runs them as fresh jobs."""
    await dead_letter_jobs(ops, 3)
    capsys.readouterr()
    assert main(["dlq", "redrive", ops.SPEC, "billing", "--max", "2"]) == 0
    assert "moved 2 dead letters back to queue billing (billing)" in capsys.readouterr().out
    assert count(ops, "billing-dlq") == 1 and count(ops, "billing") == 2
    assert main(["dlq", "redrive", ops.SPEC, "billing"]) == 0
    assert "moved 1 dead letter back" in capsys.readouterr().out

    ops.FAIL["on"] = False
    stats = await Worker(ops.app, burst=True).run()
    assert stats.succeeded == 3 and sorted(ops.DONE) == [("c0", 0), ("c1", 100), ("c2", 200)]
    assert count(ops, "billing") == count(ops, "billing-dlq") == 0


def test_purge_with_yes_deletes_everything(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """purge --yes deletes every message of the queue and says how many."""
    main(["queues", "ensure", ops.SPEC])
    ops.charge.map([("a", 1), ("b", 2), ("c", 3)])
    assert main(["purge", ops.SPEC, "billing", "--yes"]) == 0
    assert "purged 3 messages from billing" in capsys.readouterr().out
    assert count(ops, "billing") == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code", "left"), [("y\n", 0, 0), ("yes\n", 0, 0), ("n\n", 1, 2), ("", 1, 2)])
def test_purge_asks_on_a_terminal(ops: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answer: str, code: int, left: int) -> None:
    """Without --yes, purge asks; only y/yes purges, anything else exits 1 with the messages kept."""
    main(["queues", "ensure", ops.SPEC])
    ops.charge.map([("a", 1), ("b", 2)])
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    assert main(["purge", ops.SPEC, "billing"]) == code
    assert "purge about 2 messages from billing?" in capsys.readouterr().err
    assert count(ops, "billing") == left


def test_purge_without_a_terminal_or_yes_refuses_with_exit_2(ops: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With stdin not a terminal and no --yes, purge deletes nothing and exits 2."""
    main(["queues", "ensure", ops.SPEC])
    ops.charge.delay("a", 1)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert main(["purge", ops.SPEC, "billing"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert count(ops, "billing") == 1


async def test_purge_dlq(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """purge --dlq empties the queue's dead-letter queue, not the queue."""
    await dead_letter_jobs(ops, 2)
    assert main(["purge", ops.SPEC, "billing", "--dlq", "--yes"]) == 0
    assert "purged 2 messages from billing-dlq" in capsys.readouterr().out
    assert count(ops, "billing-dlq") == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dlq", "peek", "{app}", "nowhere"], "queue 'nowhere' is not used by app 'ops'; its queues: billing, default"),
        (["dlq", "peek", "{app}", "billing", "extra"], "expected [APP] QUEUE"),
        (["purge", "{app}", "nowhere", "--yes"], "is not used by app"),
    ],
)
def test_bad_queue_is_exit_2(ops: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """A queue the app does not use, or an extra argument, is bad input."""
    assert main([a.format(app=ops.SPEC) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_peek_on_a_missing_dlq_is_exit_1(ops: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """On a broker whose queues must be created, peeking before they exist is a runtime failure naming the queue."""
    ops.app.use_broker(MemoryBroker())
    assert main(["dlq", "peek", ops.SPEC, "default"]) == 1
    assert "'default-dlq' does not exist" in capsys.readouterr().err


def test_app_from_cloudq_app_env(ops: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With only QUEUE given, CLOUDQ_APP names the app."""
    main(["queues", "ensure", ops.SPEC])
    monkeypatch.setenv("CLOUDQ_APP", ops.SPEC)
    assert main(["dlq", "peek", "billing"]) == 0
    assert "0 shown of about 0" in capsys.readouterr().out


# -- pure helpers --------------------------------------------------------------------------------
def test_status_rows_pair_each_queue_with_its_dlq(ops: ModuleType) -> None:
    """Rows come queue then DLQ, in plan order, with the broker's counts."""
    counts = {"billing": QueueStats("billing", True, 1, 2, 3)}
    rows = status_rows(plan_queues(ops.app), lambda q: counts.get(q, QueueStats(q, exists=False)))
    assert [(r.queue, r.role, r.exists) for r in rows] == [
        ("billing", "queue", True), ("billing", "dlq", False), ("default", "queue", False), ("default", "dlq", False),
    ]  # fmt: skip
    assert rows[0].cells() == ["billing", "billing", "1", "2", "3", "yes"] and rows[1].cells()[0] == "billing (dlq)"


def test_render_table_aligns_columns() -> None:
    """Columns are padded to their widest cell, with no trailing spaces."""
    assert render_table(("A", "BB"), [["xxx", "1"], ["y", "22"]]) == "A    BB\nxxx  1\ny    22"


def test_describe_dead_letter_of_a_foreign_body_and_no_cloudq_reason() -> None:
    """A body that is no envelope shows as is; without cloudq attributes attempts is the receive count."""
    cells = describe_dead_letter(Delivery("q-dlq", "m1", "", "not json\nat all " + "x" * 80, 7))
    assert cells[:2] == ["m1", "?"] and cells[2].startswith("not json at all x") and cells[2].endswith("...")
    assert len(cells[2]) == 40 and cells[3:] == ["7", "-", "-", "-"]


def test_describe_dead_letter_with_kwargs_and_reason() -> None:
    """An envelope shows its task, args and kwargs; the error joins cloudq's type and message."""
    body = json.dumps({"task": "t", "args": [1], "kwargs": {"k": "v"}})
    attributes = {"cloudq-reason": "rejected", "cloudq-attempts": "1", "cloudq-error-type": "Reject", "cloudq-error": "no"}
    cells = describe_dead_letter(Delivery("q-dlq", "m1", "", body, 1, attributes))
    assert cells[1:6] == ["t", '[1] {"k": "v"}', "1", "rejected", "Reject: no"]


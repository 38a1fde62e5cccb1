"""The chaos suite's job-store check: a run of a job the store had seen succeed is a violation, a run of a
job whose end state was never written is an allowed duplicate, and skips are attributed like duplicates.
The journals are written by hand here, or by the store taps around a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaos.idempotency import read_back, store_checks, store_figures
from chaos.jobs import GroupStoreTap, StoreTap
from chaos.journal import Journal
from chaos.ledger import Ledger
from chaos.plan import PlannedJob
from cloudq.jobs.sqlite import SqliteJobStore
from cloudq.jobs.state import Finish

KEYS = {"m1": 1}


def _journal(directory: Path, worker: str, *records: dict[str, Any]) -> None:
    directory.mkdir(exist_ok=True)
    with (directory / f"{worker}.jsonl").open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def _claim(attempt: int, t0: float, answered: str | None) -> dict[str, Any]:
    return {"e": "claim", "j": "job-1", "a": attempt, "p": answered, "t0": t0, "t": t0 + 0.01}


def _run(attempt: int, t: float) -> dict[str, Any]:
    return {"e": "run", "k": 1, "m": "m1", "a": attempt, "ok": True, "t": t}


def _fin(attempt: int, t: float) -> dict[str, Any]:
    return {"e": "fin", "j": "job-1", "a": attempt, "s": "succeeded", "t": t}


def _figures(directory: Path, sigkilled: set[str]) -> dict[str, Any]:
    ledger = Ledger(directory)
    ledger.feed()
    return store_figures(ledger, KEYS, sigkilled, set())


def test_a_run_claimed_after_the_store_recorded_success_is_a_violation(tmp_path: Path) -> None:
    """w1's success was written at 2.0; w2's claim, asked at 2.5, answered running (a store that forgot) and ran."""
    _journal(tmp_path, "w1", _claim(1, 1.0, None), _run(1, 1.5), _fin(1, 2.0))
    _journal(tmp_path, "w2", _claim(2, 2.5, "running"), _run(2, 3.0))
    figures = _figures(tmp_path, sigkilled={"w1"})
    assert figures["store_violations"] == 1
    assert "job 1 ran again (worker w2, attempt 2)" in figures["store_violation_examples"][0]


def test_a_claim_that_answered_succeeded_and_still_ran_is_a_violation(tmp_path: Path) -> None:
    """No fin record (w1 was killed between its write and the journal line): the claim's answer is proof enough."""
    _journal(tmp_path, "w1", _claim(1, 1.0, None), _run(1, 1.5))
    _journal(tmp_path, "w2", _claim(2, 2.5, "succeeded"), _run(2, 3.0))
    assert _figures(tmp_path, sigkilled={"w1"})["store_violations"] == 1


def test_a_duplicate_of_a_job_killed_before_its_end_state_was_written_is_allowed(tmp_path: Path) -> None:
    """w1 ran job 1 and was SIGKILLed before the store heard of it; w2's claim found it running and ran it."""
    _journal(tmp_path, "w1", _claim(1, 1.0, None), _run(1, 1.5))
    _journal(tmp_path, "w2", _claim(2, 20.0, "running"), _run(2, 20.5), _fin(2, 21.0))
    figures = _figures(tmp_path, sigkilled={"w1"})
    assert figures["store_violations"] == 0
    assert figures["duplicates_by_store_state"] == {"running": 1}


def test_a_claim_asked_before_the_success_was_written_is_no_violation(tmp_path: Path) -> None:
    """Two deliveries at once (a visibility that ran out): w2 asked at 1.8, before w1's write at 2.0 returned."""
    _journal(tmp_path, "w1", _claim(1, 1.0, None), _run(1, 1.5), _fin(1, 2.0))
    _journal(tmp_path, "w2", _claim(2, 1.8, "running"), _run(2, 2.2), _fin(2, 2.4))
    assert _figures(tmp_path, sigkilled=set())["store_violations"] == 0


def test_skips_are_attributed_by_why_their_message_came_back(tmp_path: Path) -> None:
    """w1 ran and recorded job 1, then died before its delete: w2's delivery is skipped (outcome duplicate)."""
    _journal(tmp_path, "w1", _claim(1, 1.0, None), _run(1, 1.5), _fin(1, 2.0))
    _journal(tmp_path, "w2", _claim(2, 20.0, "succeeded"), {"e": "out", "m": "m1", "a": 2, "o": "duplicate", "t": 20.1})
    killed = _figures(tmp_path, sigkilled={"w1"})
    assert (killed["store_skips"], killed["skips_by_cause"], killed["store_violations"]) == (1, {"sigkill": 1}, 0)
    # Had w1 lived, its message should have been deleted: the skip hides a finished job left undeleted.
    alive = _figures(tmp_path, sigkilled=set()) | {"store_end_state": {"good_not_succeeded": 0, "good": {}, "good_not_succeeded_keys": []}}
    assert [ok for ok, _ in store_checks(alive, dropped=0)] == [True, False, True]


def test_the_taps_journal_what_the_store_answered_and_wrote(tmp_path: Path) -> None:
    """Through the taps (one call, and a group commit) a real store's claims and writes land in the journal as
    the ledger reads them; the store read back says which good jobs are not succeeded."""
    store = SqliteJobStore(":memory:", ttl_s=3600, kind="memory")
    journal = Journal(str(tmp_path), "w1")
    StoreTap(store, journal).claim("job-1", task="chaos.sync", queue="q", attempt=1, enqueued_at=None, record=True)
    end = Finish("succeeded", "chaos.sync", "q", 1, None)
    grouped = GroupStoreTap(store, journal)
    grouped.apply([("finish", ("job-1", end), {}), ("claim", ("job-2",), {"task": "chaos.sync", "queue": "q", "attempt": 1, "enqueued_at": None, "record": True})])
    grouped.claim("job-1", task="chaos.sync", queue="q", attempt=2, enqueued_at=None, record=True)
    ledger = Ledger(tmp_path)
    ledger.feed()
    assert {k: v[1] for k, v in ledger.claims.items()} == {("w1", 1, 1): None, ("w1", 2, 1): None, ("w1", 1, 2): "succeeded"}
    assert dict(ledger.store_writes) == {"succeeded": 1}
    assert set(ledger.store_succeeded_at) == {1}
    plan = [PlannedJob(1, "sync", ""), PlannedJob(2, "sync", ""), PlannedJob(3, "reject", "")]
    back = read_back(store, plan)
    assert (back["good"], back["poison"], back["good_not_succeeded_keys"]) == ({"succeeded": 1, "running": 1}, {"absent": 1}, [2])


def test_a_skip_received_before_the_delete_returned_is_a_visibility_that_ran_out(tmp_path: Path) -> None:
    """w1 recorded job 1 and deleted it at 25.0 (an outage held the delete and the heartbeat); w2 had received
    it again at 20.0. Received after the delete instead, it would be a message that came back once deleted."""
    for name, again_at in (("early", 20.0), ("late", 30.0)):
        directory = tmp_path / name
        _journal(directory, "w1", {"e": "recv", "m": "m1", "a": 1, "t": 0.5}, _claim(1, 1.0, None), _run(1, 1.5), _fin(1, 2.0))
        _journal(directory, "w1", {"e": "ack", "m": "m1", "a": 1, "t": 25.0})
        skip = [_claim(2, again_at + 0.05, "succeeded"), {"e": "out", "m": "m1", "a": 2, "o": "duplicate", "t": again_at + 0.1}]
        _journal(directory, "w2", {"e": "recv", "m": "m1", "a": 2, "t": again_at}, *skip)
    assert _figures(tmp_path / "early", sigkilled=set())["skips_by_cause"] == {"visibility_expired": 1}
    assert _figures(tmp_path / "late", sigkilled=set())["skips_by_cause"] == {"after_delete": 1}

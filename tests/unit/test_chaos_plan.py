"""The chaos suite's pure parts: the same seed gives the same jobs and faults, and the ledger counts a
delivery as stranded, settled or duplicated exactly as chaos/README.md says."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from chaos.ledger import Ledger
from chaos.plan import GOOD, POISON_REASONS, SHARES, fault_schedule, job_plan
from cloudq.envelope import Envelope
from cloudq.errors import EnvelopeError


def test_the_job_plan_is_the_seeds_and_holds_every_kind() -> None:
    """Same seed, same kinds in the same order; every kind of the mix appears; good and poison partition it."""
    plan = job_plan(3000, seed=7)
    assert [j.kind for j in plan] == [j.kind for j in job_plan(3000, seed=7)]
    assert [j.kind for j in plan] != [j.kind for j in job_plan(3000, seed=8)]
    kinds = Counter(j.kind for j in plan)
    assert set(kinds) == GOOD | set(POISON_REASONS) and set(SHARES) <= set(kinds)
    assert sorted(j.key for j in plan) == list(range(3000))


def test_poison_bodies_are_what_they_claim() -> None:
    """Malformed JSON does not decode; an unknown task and surplus arguments are valid envelopes."""
    by_kind = {j.kind: j for j in job_plan(3000, seed=1)}
    try:
        Envelope.decode(by_kind["malformed"].body)
        raise AssertionError("malformed body decoded")
    except EnvelopeError:
        pass
    assert Envelope.decode(by_kind["unknown_task"].body).task == "chaos.unknown"
    assert len(Envelope.decode(by_kind["bad_arguments"].body).args) == 2


def test_the_sqs_schedule_has_every_fault_and_no_sigterm_in_an_outage() -> None:
    """Kills, two outages with a worker started in the first, 30 s of throttling, a deploy that starts and
    is scheduled to finish its window before the second outage."""
    faults = fault_schedule(80, seed=16, network=True)
    assert faults == fault_schedule(80, seed=16, network=True)
    kinds = Counter(f.kind for f in faults)
    assert kinds["kill"] >= 4 and kinds["down"] == kinds["up"] == 2 and kinds["spawn"] == kinds["deploy"] == 1
    downs = [f.at_s for f in faults if f.kind == "down"]
    ups = [f.at_s for f in faults if f.kind == "up"]
    assert [round(u - d, 6) for d, u in zip(downs, ups)] == [10.0, 10.0]
    spawn = next(f.at_s for f in faults if f.kind == "spawn")
    assert downs[0] < spawn < ups[0]
    on, off = (f.at_s for f in faults if f.kind == "throttle")
    assert round(off - on, 6) == 30.0
    deploy = next(f.at_s for f in faults if f.kind == "deploy")
    assert not any(d <= deploy <= u for d, u in zip(downs, ups))


def test_the_local_schedule_has_kills_around_a_deploy_and_no_network_faults() -> None:
    kinds = Counter(f.kind for f in fault_schedule(40, seed=16, network=False))
    assert set(kinds) == {"kill", "deploy"} and kinds["deploy"] == 1


def _journal(directory: Path, worker: str, *records: dict[str, object]) -> None:
    with (directory / f"{worker}.jsonl").open("a") as f:
        for record in records:
            f.write(json.dumps({"t": 1.0, **record}) + "\n")


def test_the_ledger_tells_stranded_from_settled_and_attributes_duplicates(tmp_path: Path) -> None:
    """w1 settles m1, releases m2 and leaves m3 unsettled; w2 ran job 1 before a SIGKILL, w3 ran it again."""
    _journal(tmp_path, "w1", *({"e": "recv", "m": m, "a": 1} for m in ("m1", "m2", "m3")))
    _journal(tmp_path, "w1", {"e": "run", "k": 0, "m": "m1", "a": 1, "ok": True}, {"e": "out", "m": "m1", "a": 1, "o": "ack"})
    _journal(tmp_path, "w1", {"e": "ack", "m": "m1", "a": 1}, {"e": "vis", "m": "m2", "a": 1, "s": 0})
    _journal(tmp_path, "w2", {"e": "recv", "m": "m4", "a": 1}, {"e": "run", "k": 1, "m": "m4", "a": 1, "ok": True, "t": 2.0})
    _journal(tmp_path, "w3", {"e": "recv", "m": "m4", "a": 2}, {"e": "run", "k": 1, "m": "m4", "a": 2, "ok": True, "t": 3.0})
    (tmp_path / "w3.jsonl").open("a").write('{"e":"run","k":9')  # cut by a SIGKILL: skipped
    ledger = Ledger(tmp_path)
    ledger.feed()
    ledger.feed()  # nothing new: nothing counted twice
    assert ledger.unsettled("w1") == {("m3", 1)}
    assert ledger.unsettled("w2") == {("m4", 1)}
    assert sorted(ledger.ok_runs) == [0, 1]
    assert ledger.duplicate_causes(sigkilled={"w2"}, delete_failed=set()) == (Counter({"sigkill": 1}), 1)
    assert ledger.duplicate_causes(sigkilled=set(), delete_failed=set()) == (Counter({"unexplained": 1}), 1)


def test_a_visibility_that_ran_out_is_explained_only_in_a_run_with_network_faults() -> None:
    """A duplicate whose message came back while its worker's heartbeat and delete could not reach SQS
    (visibility_expired) passes in a run that injected outages, throttling or resets; in a run without
    network faults it is a failure, as any duplicate but a SIGKILL's is."""
    from chaos.report import _explained

    assert _explained({"faults": {"outage": 1, "sigkill": 2}}) == {"sigkill", "visibility_expired"}
    assert _explained({"faults": {"throttled:RequestThrottled": 3}}) == {"sigkill", "visibility_expired"}
    assert _explained({"faults": {"sigkill": 2, "sigterm (rolling deploy)": 3}}) == {"sigkill"}
    assert _explained({"faults": {"outage": 0}}) == {"sigkill"}

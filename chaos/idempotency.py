"""The job store's part of a chaos run: no job the store saw succeed ever runs again.

With a job store (``CLOUDQ_JOB_STORE``), the consumer claims each job before it runs: a job whose record
says ``succeeded`` is acked without running (outcome ``duplicate``: a *skip*); any other job becomes
``running``. After the run, the end state is written, and only then is the message deleted. So a SIGKILL
between the store's write and the delete costs a skip, not a run, and the only duplicate runs left are
of jobs whose worker died between the task's return and that write: their record still says ``running``.

From the journals (:class:`chaos.jobs.StoreTap`): when each claim was asked (``t0``) and what the store
answered, and when the store first had each job succeeded (a ``fin`` record, written once the write
returned, or a claim that answered ``succeeded``). A run is a **violation** if its claim answered
``succeeded`` or was asked after that moment: the store had seen the job succeed and it ran again. Both
are ``time.time()`` of processes on one machine, so "after" needs no clock agreement beyond that.

Duplicate runs are counted again by the state their claim found (``running``: the run before was cut
before its end state was written; ``absent``: the store had no record; ``no_claim``: no claim record,
the store call failed and was dropped), and skips by why their message came back, as duplicates are.
At the end the store is read back through cloudq's JobStore API: every good job must be ``succeeded``
there (short of one ``job.state_dropped`` warning per job that is not).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from chaos.ledger import Ledger, Run

if TYPE_CHECKING:
    from chaos.plan import PlannedJob

__all__ = ["read_back", "store_checks", "store_figures"]

_SKIP_CAUSES_OK = frozenset({"sigkill", "delete_failed", "visibility_expired"})
_SHOWN = 10


def _violation(ledger: Ledger, key: int, run: Run) -> str | None:
    """Why ``run`` of job ``key`` breaks the store's promise, or None if it does not."""
    succeeded_at = ledger.store_succeeded_at.get(key)
    claim = ledger.claims.get((run.worker, key, run.delivery[1]))
    if claim is None or succeeded_at is None:
        return None
    asked_at, answered = claim
    if answered != "succeeded" and asked_at <= succeeded_at:
        return None
    return (
        f"job {key} ran again (worker {run.worker}, attempt {run.delivery[1]}): its claim was asked at {asked_at:.6f}"
        f" and answered {answered!r}; the store had it succeeded by {succeeded_at:.6f}"
    )


def _skip_causes(ledger: Ledger, keys: dict[str, int], sigkilled: set[str], delete_failed: set[str]) -> Counter[str]:
    """Each skip by why its message came back: what happened to the delivery of the same job that finished
    (ran to success, or was skipped) last before it. ``no_run_before``: nothing had succeeded yet."""
    finished: dict[int, list[Run]] = {}
    for run in ledger.skips:
        key = keys.get(run.delivery[0])
        if key is not None:
            finished.setdefault(key, []).append(run)
    causes: Counter[str] = Counter()
    for key, skips in finished.items():
        done = sorted(ledger.ok_runs.get(key, []) + skips, key=lambda r: r.t)
        for skip in skips:
            before = [r for r in done if r.t < skip.t]
            causes[ledger.came_back(before[-1], skip, sigkilled, delete_failed) if before else "no_run_before"] += 1
    return causes


def store_figures(ledger: Ledger, keys: dict[str, int], sigkilled: set[str], delete_failed: set[str]) -> dict[str, Any]:
    """The journal's side: violations, duplicate runs by the state their claim found, skips by cause."""
    violations: list[str] = []
    by_state: Counter[str] = Counter()
    for key, ok in ledger.ok_runs.items():
        for run in sorted(ok + ledger.failed.get(key, []), key=lambda r: r.t):
            if (why := _violation(ledger, key, run)) is not None:
                violations.append(why)
        for run in sorted(ok, key=lambda r: r.t)[1:]:
            claim = ledger.claims.get((run.worker, key, run.delivery[1]))
            by_state["no_claim" if claim is None else claim[1] or "absent"] += 1
    return {
        "store_violations": len(violations),
        "store_violation_examples": violations[:_SHOWN],
        "duplicates_by_store_state": dict(by_state),
        "store_skips": len(ledger.skips),
        "skips_by_cause": dict(_skip_causes(ledger, keys, sigkilled, delete_failed)),
        "store_claims": len(ledger.claims),
        "store_writes": dict(ledger.store_writes),
    }


def read_back(store: Any, plan: list[PlannedJob]) -> dict[str, Any]:
    """The store's end state of every job, read through the JobStore API (one listing)."""
    states = {state.id: state.status for state in store.list(limit=len(plan) + 1000)}
    good = [job for job in plan if job.good]
    not_succeeded = [job.key for job in good if states.get(f"job-{job.key}") != "succeeded"]
    return {
        "good": dict(Counter(states.get(f"job-{job.key}", "absent") for job in good)),
        "poison": dict(Counter(states.get(f"job-{job.key}", "absent") for job in plan if not job.good)),
        "good_not_succeeded": len(not_succeeded),
        "good_not_succeeded_keys": not_succeeded[:_SHOWN],
    }


def store_checks(r: dict[str, Any], dropped: int) -> list[tuple[bool, str]]:
    """(passed, message) of each store check; ``dropped`` is the job.state_dropped warnings logged."""
    skips_odd = {cause: n for cause, n in r["skips_by_cause"].items() if cause not in _SKIP_CAUSES_OK}
    end = r["store_end_state"]
    return [
        (r["store_violations"] == 0, f"{r['store_violations']} runs of jobs the job store had seen succeed: {r['store_violation_examples']}"),
        (not skips_odd, f"skipped duplicates whose message came back for no reason a fault explains: {skips_odd}"),
        (
            end["good_not_succeeded"] <= dropped,
            f"{end['good_not_succeeded']} good jobs not succeeded in the job store ({dropped} job.state_dropped logged): {end['good']}, e.g. {end['good_not_succeeded_keys']}",
        ),
    ]

"""The figures of a chaos run and the checks that fail it.

Checks (each failure is one line in ``failures``): no good job lost; no worker crash (an exit the
suite's signals do not explain, or a traceback in a worker's output); every poison message in the DLQ
with its reason and no good job there; nothing stranded by a SIGTERM; no duplicate run but those a
SIGKILL explains; the queue empty at the end; the run finished within its timeout. With a job store,
those of :mod:`chaos.idempotency` too: no job the store had seen succeed ran again.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from chaos.idempotency import read_back, store_checks, store_figures
from chaos.plan import POISON_REASONS

if TYPE_CHECKING:
    from chaos.run import _Run

__all__ = ["figures"]

_DLQ_PEEK = 100_000


def _log_events(run: _Run) -> tuple[Counter[str], dict[str, set[str]], list[str]]:
    """Warning and error events across the worker logs, the workers that logged each, and any line
    that is not a JSON log record (a traceback printed by a crash)."""
    events: Counter[str] = Counter()
    by_worker: dict[str, set[str]] = {}
    stray: list[str] = []
    for path in sorted((run.dir / "logs").glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = str(json.loads(line)["event"])
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    stray.append(f"{path.stem}: {line[:200]}")
                continue
            events[event] += 1
            by_worker.setdefault(event, set()).add(path.stem)
    return events, by_worker, stray


def _dlq(run: _Run) -> dict[str, Any]:
    """What the DLQ holds, against what the plan says must be there."""
    by_body = {job.body: job for job in run.plan}
    found: Counter[int] = Counter()
    wrong_reason: list[str] = []
    good_there: list[int] = []
    unknown = 0
    for delivery in run.broker.peek(run.dlq, _DLQ_PEEK):
        job = by_body.get(delivery.body)
        if job is None:
            unknown += 1
            continue
        found[job.key] += 1
        if job.good:
            good_there.append(job.key)
        elif delivery.attributes.get("cloudq-reason") != POISON_REASONS[job.kind]:
            wrong_reason.append(f"{job.kind} {job.key}: {delivery.attributes.get('cloudq-reason')!r}")
    poison = [job for job in run.plan if not job.good]
    dead_letters = Counter({run_key: n for mid, n in run.ledger.dead_lettered.items() if (run_key := run.keys.get(mid)) is not None})
    return {
        "messages": sum(found.values()) + unknown,
        "poison_expected": len(poison),
        "poison_with_reason": sum(1 for job in poison if found[job.key]) - len(wrong_reason),
        "poison_missing": sorted(job.key for job in poison if not found[job.key]),
        "wrong_reason": wrong_reason,
        "good_jobs_there": sorted(good_there),
        "extra_copies": sum(n - 1 for n in found.values() if n > 1),
        # Why: dead-lettered again (its delete after the DLQ send was lost: a SIGKILL, a failed delete), or
        # one dead letter sent twice (botocore retried a SendMessage whose answer a reset or an outage cut).
        "extra_copies_by_cause": {
            "dead_lettered_again": sum(n - 1 for n in dead_letters.values() if n > 1),
            "send_retried": sum(max(0, found[key] - dead_letters[key]) for key in found),
        },
        "unknown_bodies": unknown,
    }


def _workers(run: _Run, events_by_worker: dict[str, set[str]]) -> tuple[dict[str, Any], int]:
    pool, ledger = run.pool, run.ledger
    sigkilled = {w.name for w in pool.all if w.signalled == "SIGKILL"}
    sigtermed = [w for w in pool.all if w.signalled == "SIGTERM"]
    strands = {w.name: len(ledger.unsettled(w.name)) for w in sigtermed}
    strands = {name: n for name, n in strands.items() if n}
    for name in events_by_worker.get("sqs.give_back_failed", set()):
        strands[name] = strands.get(name, 0) + 1  # a receive cancelled in flight whose give-back failed
    exits = [w.exited_at - w.signalled_at for w in sigtermed if w.exited_at and w.signalled_at]
    crashes = [f"{w.name} exit {w.returncode} after {w.signalled or 'no signal'}" for w in pool.all if w.crashed]
    figures = {
        "spawned": len(pool.all),
        "sigkilled": len(sigkilled),
        "sigkilled_workers": sorted(sigkilled),  # to attribute again from the journals later
        "sigtermed": len(sigtermed),
        "sigterm_during_start_up": sum(1 for w in sigtermed if w.died_of_sigterm),
        "started_while_down": sum(1 for w in pool.all if w.started_while_down),
        "crashes": crashes,
        "stranded_by_sigterm": sum(strands.values()),
        "stranded_by_worker": strands,
        "in_hand_at_sigkill": sum(len(ledger.unsettled(name)) for name in sigkilled),
        "sigterm_exit_s_max": round(max(exits), 2) if exits else None,
        "sigterm_exit_s_median": round(sorted(exits)[len(exits) // 2], 2) if exits else None,
    }
    return figures, len(crashes)


def figures(run: _Run, wall_start: float) -> dict[str, Any]:
    config, ledger = run.config, run.ledger
    events, events_by_worker, stray = _log_events(run)
    workers, crashes = _workers(run, events_by_worker)
    sigkilled = {w.name for w in run.pool.all if w.signalled == "SIGKILL"}
    delete_failed = events_by_worker.get("worker.ack_failed", set())
    duplicates, duplicated_jobs = ledger.duplicate_causes(sigkilled, delete_failed)
    good = [job for job in run.plan if job.good]
    lost = sorted(job.key for job in good if job.key not in ledger.ok_runs)
    stats = run.broker.stats(run.queue)
    dlq = _dlq(run)
    faults = Counter(run.faults)
    if run.proxy is not None:
        faults.update(run.proxy.faults)
    result: dict[str, Any] = {
        "run": config.label,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_start)),
        "jobs": len(run.plan),
        "kinds": dict(Counter(job.kind for job in run.plan)),
        "workers": config.workers,
        "seed": config.seed,
        "job_store": run.store.kind if run.store is not None else "none",
        "duration_s": config.duration_s,
        "drained": run.done_at is not None,
        "drain_s": round(run.done_at - run.started, 1) if run.done_at else None,
        "last_job_s": round(run.last_ok_at - wall_start, 1) if run.last_ok_at else None,
        "faults": dict(sorted(faults.items())),
        "lost": len(lost),
        "lost_keys": lost[:20],
        "duplicate_runs": sum(duplicates.values()),
        "duplicated_jobs": duplicated_jobs,
        "duplicates_by_cause": dict(duplicates),
        "failed_runs": ledger.failed_runs,
        "outcomes": dict(ledger.outcomes),
        **workers,
        "dlq": dlq,
        "left_in_queue": {"visible": stats.visible, "in_flight": stats.in_flight, "delayed": stats.delayed},
        "proxy_calls": dict(sorted(run.proxy.calls.items())) if run.proxy else None,
        "log_events": dict(events.most_common()),
        "stray_output": stray[:20],
    }
    if run.store is not None:
        result |= store_figures(ledger, run.keys, sigkilled, delete_failed)
        result["store_end_state"] = read_back(run.store, run.plan)
    result["failures"] = _failures(result, crashes, stray, events["job.state_dropped"])
    return result


_NETWORK_FAULTS = frozenset({"outage", "throttled", "latency", "reset", "5xx"})


def _explained(r: dict[str, Any]) -> set[str]:
    """Causes a duplicate run may have in this run: a SIGKILL always; a message whose visibility ran out
    while its worker's heartbeat and delete could not reach SQS only in a run that injected network faults
    (an outage longer than what was left of a visibility is SQS's at-least-once, not a worker's fault:
    the smoke run's 6 s visibility with 2 s outages allows it, the defaults' 30 s with 10 s outages barely)."""
    faulted = any(count > 0 and name.split(":")[0] in _NETWORK_FAULTS for name, count in r["faults"].items())
    return {"sigkill", "visibility_expired"} if faulted else {"sigkill"}


def _failures(r: dict[str, Any], crashes: int, stray: list[str], dropped: int) -> list[str]:
    dlq = r["dlq"]
    checks = [
        (r["drained"], "did not drain within the timeout"),
        (r["lost"] == 0, f"{r['lost']} good jobs lost (never ran to success): {r['lost_keys']}"),
        (crashes == 0, f"{crashes} worker crashes: {r['crashes']}"),
        (not stray, f"{len(stray)} lines of worker output that are not log records (tracebacks?): {stray[:3]}"),
        (not dlq["poison_missing"], f"{len(dlq['poison_missing'])} poison messages missing from the DLQ: {dlq['poison_missing'][:10]}"),
        (not dlq["wrong_reason"], f"poison in the DLQ without its reason: {dlq['wrong_reason'][:10]}"),
        (not dlq["good_jobs_there"], f"good jobs in the DLQ: {dlq['good_jobs_there'][:10]}"),
        (r["stranded_by_sigterm"] == 0, f"{r['stranded_by_sigterm']} deliveries stranded by a SIGTERM: {r['stranded_by_worker']}"),
        (set(r["duplicates_by_cause"]) <= _explained(r), f"duplicate runs not explained by a SIGKILL or a network fault: {r['duplicates_by_cause']}"),
        (sum(r["left_in_queue"].values()) == 0, f"messages left in the queue: {r['left_in_queue']}"),
        *(store_checks(r, dropped) if r["job_store"] != "none" else []),
    ]
    return [message for ok, message in checks if not ok]

"""``python -m chaos``: the chaos suite (what ``make chaos`` runs). See chaos/README.md.

For each target (``sqs``, ``sqs+dynamodb``, ``local``), the same jobs twice: a baseline without faults,
then the run with faults; prints the figures side by side and one JSON line, and exits 1 if a check failed
in any run, 2 for a set-up problem. With the job store (the default; ``--no-job-store`` for none), the
local broker's runs keep job state in its file, and SQS gets a second pair of runs, ``sqs+dynamodb``:
``--store-jobs`` jobs with the DynamoDB store on a moto_server (``--dynamodb``, ``$CLOUDQ_CHAOS_DYNAMODB``),
fewer because moto serves far fewer calls per second than the rest of the suite (see chaos/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from chaos.run import ROOT, RunConfig, run

_ROWS = [
    ("jobs", "jobs"), ("workers spawned", "spawned"), ("drain s (queue empty)", "drain_s"), ("last job done s", "last_job_s"),
    ("lost", "lost"), ("duplicate runs", "duplicate_runs"), ("duplicates by cause", "duplicates_by_cause"),
    ("crashes", "crashes"), ("SIGKILLs", "sigkilled"), ("SIGTERMs", "sigtermed"), ("SIGTERM'd during start-up", "sigterm_during_start_up"), ("in hand at SIGKILL", "in_hand_at_sigkill"),
    ("stranded by SIGTERM", "stranded_by_sigterm"), ("SIGTERM exit s (median/max)", "sigterm_exit"),
    ("started while down", "started_while_down"), ("failed runs (planned)", "failed_runs"), ("DLQ", "dlq_summary"),
    ("left in queue", "left_in_queue"),
]  # fmt: skip
_STORE_ROWS = [
    ("job store", "job_store"), ("store: ran again after success", "store_violations"),
    ("store: dup runs, state seen", "duplicates_by_store_state"), ("store: skipped duplicates", "store_skips"),
    ("store: skips by cause", "skips_by_cause"), ("store: good jobs succeeded", "store_good_succeeded"),
]  # fmt: skip
_SUMMARY = (
    "drain_s", "lost", "duplicate_runs", "duplicates_by_cause", "crashes", "stranded_by_sigterm", "faults",
    "job_store", "store_violations", "duplicates_by_store_state", "store_skips", "skips_by_cause", "failures",
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--jobs", "-n", type=int, default=30_000, help="jobs per run (default 30000)")
    p.add_argument("--workers", "-k", type=int, default=6, help="worker processes (default 6)")
    p.add_argument("--seed", type=int, default=16, help="seed of the job mix and the fault schedule (default 16)")
    p.add_argument("--duration", type=float, help="seconds the fault schedule spans (default: 90%% of the baseline's drain, so every fault lands while jobs run; 120 without a baseline)")
    p.add_argument("--broker", choices=["sqs", "local", "both"], default="both")
    p.add_argument("--endpoint", default=os.environ.get("CLOUDQ_CHAOS_ENDPOINT"), help="LocalStack (default $CLOUDQ_CHAOS_ENDPOINT)")
    p.add_argument("--timeout", type=float, default=1800.0, help="longest a run may take to drain, in seconds")
    p.add_argument("--outage", type=float, default=10.0, help="seconds of each outage (default 10)")
    p.add_argument("--throttle", type=float, default=30.0, help="seconds of 10%% throttled calls (default 30)")
    p.add_argument("--visibility", type=int, default=15, help="workers' visibility timeout, seconds (default 15)")
    p.add_argument("--no-baseline", action="store_true", help="skip the run without faults")
    p.add_argument(
        "--job-store", action=argparse.BooleanOptionalAction, default=True,
        help="job state on (the default): the local broker's runs keep it in its file, and with SQS the sqs+dynamodb runs keep it in DynamoDB at --dynamodb; each checks that no job the store saw succeed runs again",
    )  # fmt: skip
    p.add_argument("--store-jobs", type=int, default=3000, help="jobs per sqs+dynamodb run (default 3000: moto_server takes about 2 calls per job at 50-150 calls/s)")
    p.add_argument("--dynamodb", default=os.environ.get("CLOUDQ_CHAOS_DYNAMODB"), help="moto_server (DynamoDB) for the sqs+dynamodb runs (default $CLOUDQ_CHAOS_DYNAMODB)")
    p.add_argument("--out", type=Path, default=ROOT / ".chaos", help="journals, logs and figures.json of each run (default .chaos/)")
    return p


def _cell(figures: dict[str, Any] | None, key: str) -> str:
    if figures is None:
        return "-"
    if key == "sigterm_exit":
        return f"{figures['sigterm_exit_s_median']}/{figures['sigterm_exit_s_max']}"
    if key == "dlq_summary":
        d = figures["dlq"]
        return f"{d['poison_with_reason']}/{d['poison_expected']} poison with reason, {len(d['good_jobs_there'])} good, {d['extra_copies']} extra copies {json.dumps(d['extra_copies_by_cause'])}"
    if key == "crashes":
        return str(len(figures["crashes"]))
    if key == "store_good_succeeded":
        end = figures["store_end_state"]
        return f"{end['good'].get('succeeded', 0)}/{sum(end['good'].values())}"
    value = figures[key]
    return json.dumps(value) if isinstance(value, dict) else str(value)


def _print_table(target: str, baseline: dict[str, Any] | None, faulted: dict[str, Any]) -> None:
    print(f"\n== {target} (job store: {faulted['job_store']}): {faulted['jobs']} jobs, {faulted['workers']} workers, seed {faulted['seed']}, faults over {faulted['duration_s']} s")
    print(f"{'':30} {'baseline':>14}  with faults")
    for label, key in _ROWS + (_STORE_ROWS if faulted["job_store"] != "none" else []):
        print(f"{label:30} {_cell(baseline, key):>14}  {_cell(faulted, key)}")
    if baseline and baseline["drain_s"] and faulted["drain_s"]:
        print(f"{'drain time with / without':30} {faulted['drain_s'] / baseline['drain_s']:>14.2f}x")
    print(f"faults injected: {json.dumps(faulted['faults'])}")
    for name, figures in (("baseline", baseline), ("faults", faulted)):
        for failure in (figures or {}).get("failures", []):
            print(f"FAIL [{target} {name}] {failure}")


def _duration(given: float | None, baseline: dict[str, Any] | None) -> float:
    """The fault schedule's span: as given, else 90% of the baseline's drain (the faults then slow it)."""
    if given:
        return given
    if baseline and baseline["drain_s"]:
        return round(0.9 * baseline["drain_s"], 1)
    return 120.0


def _reachable(endpoint: str | None, health_path: str) -> bool:
    if not endpoint:
        return False
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{endpoint}{health_path}", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _targets(ns: argparse.Namespace, brokers: list[str]) -> list[tuple[str, str, int]]:
    """(broker, job store, jobs) of each pair of runs."""
    targets = []
    if "sqs" in brokers:
        targets.append(("sqs", "none", ns.jobs))
        if ns.job_store:
            targets.append(("sqs", "dynamodb", ns.store_jobs))
    if "local" in brokers:
        targets.append(("local", "local" if ns.job_store else "none", ns.jobs))
    return targets


async def _main(ns: argparse.Namespace) -> int:
    brokers = ["sqs", "local"] if ns.broker == "both" else [ns.broker]
    if "sqs" in brokers and not _reachable(ns.endpoint, "/_localstack/health"):
        print(f"chaos: no LocalStack at {ns.endpoint!r}; set CLOUDQ_CHAOS_ENDPOINT or --endpoint (or use make chaos)", file=sys.stderr)
        return 2
    if "sqs" in brokers and ns.job_store and not _reachable(ns.dynamodb, "/moto-api/"):
        print(f"chaos: no moto_server at {ns.dynamodb!r} for the sqs+dynamodb runs; set CLOUDQ_CHAOS_DYNAMODB or --dynamodb, or --no-job-store (or use make chaos)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    for broker, store, jobs in _targets(ns, brokers):
        config = RunConfig(
            broker, jobs, ns.workers, ns.seed, ns.duration or 0.0, faults=False, endpoint=ns.endpoint,
            timeout_s=ns.timeout, outage_s=ns.outage, throttle_s=ns.throttle, out_dir=ns.out, visibility_s=ns.visibility,
            job_store=store, dynamodb_endpoint=ns.dynamodb,
        )  # fmt: skip
        baseline = None if ns.no_baseline else await run(config)
        faulted = await run(dataclasses.replace(config, faults=True, duration_s=_duration(ns.duration, baseline)))
        _print_table(config.target, baseline, faulted)
        results[config.target] = {"baseline": baseline, "faults": faulted}
    failed = any(r and r["failures"] for pair in results.values() for r in pair.values())
    print(json.dumps({b: {k: v and {x: v[x] for x in _SUMMARY if x in v} for k, v in pair.items()} for b, pair in results.items()}))
    print("chaos: FAILED" if failed else "chaos: all checks passed")
    return 1 if failed else 0


def main() -> int:
    return asyncio.run(_main(_parser().parse_args()))


if __name__ == "__main__":
    sys.exit(main())

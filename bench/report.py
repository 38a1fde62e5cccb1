"""Turns measured rounds into the printed table and the final JSON line (medians across rounds)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.common import Phase, median, percentile

if TYPE_CHECKING:
    from bench.cli_drain import CliRound, MapRound

__all__ = ["Report"]


def summarize(phases: Sequence[Phase]) -> dict[str, Any]:
    """Median rate over rounds; calls per task over all rounds; latencies pooled."""
    tasks = sum(p.tasks for p in phases)
    calls: Counter[str] = Counter()
    for p in phases:
        calls.update(p.calls)
    out: dict[str, Any] = {
        "tasks_per_s": round(median(p.rate for p in phases), 1),
        "rounds_tasks_per_s": [round(p.rate, 1) for p in phases],
        "tasks": tasks,
    }
    if calls:
        out["calls_per_task"] = {op: round(n / tasks, 3) for op, n in sorted(calls.items())}
        out["calls_per_task_total"] = round(sum(calls.values()) / tasks, 3)
    logged = [p.log_calls for p in phases if p.log_calls is not None]
    if logged and len(logged) == len(phases):
        log_total: Counter[str] = Counter()
        for counts in logged:
            log_total.update(counts)
        out["localstack_log_calls"] = dict(sorted(log_total.items()))
        out["localstack_log_agrees"] = dict(log_total) == dict(calls)
    cpu = [p.cpu_s / p.tasks for p in phases if p.cpu_s is not None and p.tasks]
    if cpu:
        out["cpu_ms_per_task"] = round(median(cpu) * 1000, 3)
    ls_cpu = [p.localstack_cpu_s / p.tasks for p in phases if p.localstack_cpu_s is not None and p.tasks]
    if ls_cpu:
        out["localstack_cpu_ms_per_task"] = round(median(ls_cpu) * 1000, 3)
    latencies = [s for p in phases for s in p.latencies_s]
    if latencies:
        out["latency_ms"] = {
            "p50": round(median(latencies) * 1000, 2),
            "p95": round(percentile(latencies, 0.95) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
        }
    return out


def summarize_cli(rounds: Sequence[CliRound]) -> dict[str, Any]:
    """Medians over rounds of one side of the CLI drain; API calls per job over all rounds."""
    out: dict[str, Any] = {
        "jobs_per_s": round(median(r.rate for r in rounds), 1),
        "rounds_jobs_per_s": [round(r.rate, 1) for r in rounds],
        "startup_s": round(median(r.startup_s for r in rounds), 3),
        "rounds_startup_s": [round(r.startup_s, 3) for r in rounds],
        "cpu_ms_per_job": round(median(r.cpu_ms_per_job for r in rounds), 3),
        "sys_ms_per_job": round(median(r.sys_ms_per_job for r in rounds), 3),
        "cores": round(median(r.cores for r in rounds), 2),
        "cpu_startup_s": round(median(r.cpu_startup_s for r in rounds), 3),
        "cpu_total_s": round(median(r.cpu_total_s for r in rounds), 2),
        "exit_s": round(median(r.exit_s for r in rounds), 3),
        "maxrss_mb": round(median(r.maxrss_kb for r in rounds) / 1024, 1),
    }
    ls = [r.localstack_cpu_s / r.jobs for r in rounds if r.localstack_cpu_s is not None]
    if ls and len(ls) == len(rounds):
        out["localstack_cpu_ms_per_job"] = round(median(ls) * 1000, 3)
    logged = [r.log_calls for r in rounds if r.log_calls is not None]
    if logged and len(logged) == len(rounds):
        total: Counter[str] = Counter()
        for counts in logged:
            total.update(counts)
        jobs = sum(r.jobs for r in rounds)
        out["calls_per_job"] = {op: round(n / jobs, 3) for op, n in sorted(total.items())}
        out["calls_per_job_total"] = round(sum(total.values()) / jobs, 3)
    notes = [r.notes for r in rounds if r.notes]
    if notes:
        out["notes"] = notes[0]
    return out


def ratio(cloudq: dict[str, Any], other: dict[str, Any]) -> float:
    return round(cloudq["tasks_per_s"] / other["tasks_per_s"], 3) if other["tasks_per_s"] else 0.0


class Report:
    """Collects the sections as they finish, then prints them."""

    def __init__(self, header: dict[str, Any]) -> None:
        self.data: dict[str, Any] = {"config": header}
        self.lines: list[str] = []

    # -- sections ------------------------------------------------------------------------------
    def sqs_drain(self, raw: Sequence[Phase], cloudq: Sequence[Phase], raw_threads: int, concurrency: int) -> None:
        r, c = summarize(raw), summarize(cloudq)
        section = {"raw": r, "cloudq": c, "ratio": ratio(c, r), "raw_threads": raw_threads}
        section["goals"] = {
            "rate_ratio>=0.90": section["ratio"] >= 0.90,
            "calls_per_task<=0.35": c.get("calls_per_task_total", 99) <= 0.35,
        }
        self.data["sqs_drain"] = section
        self._title("SQS drain on LocalStack: no-op jobs, from a full queue until all are deleted")
        self._row(f"raw boto3 ({raw_threads} thread{'s' if raw_threads > 1 else ''} x 10 messages)", r, None)
        self._row(f"cloudq Worker (concurrency {concurrency})", c, section["ratio"])
        self._goals(section["goals"])

    def producer(self, delay: dict[str, list[Phase]] | None, bulk: dict[str, list[Phase]] | None) -> None:
        section: dict[str, Any] = {}
        self._title("Producer on LocalStack")
        if delay:
            r, c = summarize(delay["raw"]), summarize(delay["cloudq"])
            section["delay"] = {"raw": r, "cloudq": c, "ratio": ratio(c, r)}
            section.setdefault("goals", {})["delay_within_10%"] = section["delay"]["ratio"] >= 0.90
            self._row("raw send_message, one at a time", r, None)
            self._row("cloudq .delay(), one at a time", c, section["delay"]["ratio"])
        if bulk:
            r, c = summarize(bulk["raw"]), summarize(bulk["cloudq"])
            section["map"] = {"raw": r, "cloudq": c, "ratio": ratio(c, r)}
            section.setdefault("goals", {})["map_calls_per_task<=0.1"] = c.get("calls_per_task_total", 99) <= 0.1
            self._row("raw SendMessageBatch of 10", r, None)
            self._row("cloudq .map()", c, section["map"]["ratio"])
        self._goals(section.get("goals", {}))
        self.data["producer"] = section

    def local(self, huey: dict[str, list[Phase]], cloudq: dict[str, list[Phase]], concurrency: int) -> None:
        section: dict[str, Any] = {}
        self._title("Local broker (SQLite) vs Huey SqliteHuey, same machine, no network")
        labels = {
            "enqueue_one": ("enqueue one at a time: huey task()", "enqueue one at a time: cloudq .delay()"),
            "enqueue_map": ("enqueue N: huey .map() (one insert each)", "enqueue N: cloudq .map() (one transaction)"),
            "drain": ("drain: huey consumer, 1 worker thread", f"drain: cloudq Worker, concurrency {concurrency}"),
        }
        for key, (huey_label, cloudq_label) in labels.items():
            h, c = summarize(huey[key]), summarize(cloudq[key])
            section[key] = {"huey": h, "cloudq": c, "ratio": ratio(c, h)}
            self._row(huey_label, h, None)
            self._row(cloudq_label, c, section[key]["ratio"])
        section["goals"] = {"drain_ratio>=1.0": section["drain"]["ratio"] >= 1.0}
        self._goals(section["goals"])
        self.data["local"] = section

    def job_state(self, local: dict[str, list[Phase]], remote: dict[str, list[Phase]] | None, concurrency: int) -> None:
        """Drain with the job store off and on; store calls per job on the 'on' rows."""
        section: dict[str, Any] = {}
        self._title(f"Job state: Worker drain, concurrency {concurrency}, store off vs on (store calls per job)")
        off, on = summarize(local["none"]), summarize(local["local"])
        section["local"] = {"off": off, "on": on, "ratio": ratio(on, off)}
        self._row("local broker, CLOUDQ_JOB_STORE=none", off, None)
        self._row("local broker, CLOUDQ_JOB_STORE=local", on, section["local"]["ratio"])
        if remote is not None:
            off, on = summarize(remote["none"]), summarize(remote["dynamodb"])
            section["dynamodb"] = {"off": off, "on": on, "ratio": ratio(on, off)}
            self._row("SQS, CLOUDQ_JOB_STORE=none", off, None)
            self._row("SQS + moto DynamoDB (reported, no goal)", on, section["dynamodb"]["ratio"])
        section["goals"] = {"local_store_ratio>=0.80": section["local"]["ratio"] >= 0.80}
        self._goals(section["goals"])
        self.data["jobs"] = section

    def cli_drain(self, rounds: dict[str, list[CliRound]], concurrency: int) -> None:
        """Spawned consumers: ``cloudq worker`` (and its middleware variant) against the raw loop's process."""
        sides = {side: summarize_cli(r) for side, r in rounds.items() if r}
        raw = sides["raw"]
        for side, s in sides.items():
            if side != "raw":
                s["ratio"] = round(s["jobs_per_s"] / raw["jobs_per_s"], 3) if raw["jobs_per_s"] else 0.0
                s["startup_over_raw_ms"] = round((s["startup_s"] - raw["startup_s"]) * 1000)
                s["cpu_ms_per_job_over_raw"] = round(s["cpu_ms_per_job"] - raw["cpu_ms_per_job"], 3)
                s["cores_over_raw"] = round(s["cores"] - raw["cores"], 2)
        section: dict[str, Any] = {**sides, "jobs": rounds["raw"][0].jobs, "concurrency": concurrency}
        cloudq = sides["cloudq"]
        goals = {"rate_ratio>=0.90": cloudq["ratio"] >= 0.90, "startup_within_150ms": cloudq["startup_over_raw_ms"] <= 150}
        if "cloudq-core" in sides:  # the worker as the Docker image runs it (no rich for structlog to import)
            goals["startup_within_150ms_core_deps"] = sides["cloudq-core"]["startup_over_raw_ms"] <= 150
        if "cloudq+mw" in sides:
            mw = sides["cloudq+mw"]
            section["middleware_ratio"] = round(mw["jobs_per_s"] / cloudq["jobs_per_s"], 3) if cloudq["jobs_per_s"] else 0.0
            goals["middleware_ratio>=0.95"] = section["middleware_ratio"] >= 0.95
        section["goals"] = goals
        self.data["cli_drain"] = section
        self.lines += [
            "", f"SQS drain, spawned processes: `cloudq worker -c {concurrency}` vs a raw boto3 loop, {section['jobs']} no-op sync jobs each",
            f"  {'':34} {'jobs/s':>7} {'vs ref':>7} {'start s':>8} {'+ms':>5}  {'CPU ms/job (sys)':>16} {'cores':>5} {'+cores':>6}"
            f"  {'CPU@1st s':>9} {'CPU all s':>9} {'LS ms/job':>9}  calls/job",
        ]  # fmt: skip
        labels = {"raw": "raw boto3 loop (1 thread x 10)", "cloudq": "cloudq worker (CLI)", "cloudq+mw": "cloudq worker + no-op middleware", "cloudq-core": "cloudq worker, core deps (no rich)"}
        for side, s in sides.items():
            vs = f"{s['ratio']:7.0%}" if "ratio" in s else f"{'(ref)':>7}"
            extra = f"{s['startup_over_raw_ms']:5d}" if "ratio" in s else f"{'':5}"
            more = f"{s['cores_over_raw']:+6.2f}" if "ratio" in s else f"{'':6}"
            ls = f"{s['localstack_cpu_ms_per_job']:9.3f}" if "localstack_cpu_ms_per_job" in s else f"{'':9}"
            self.lines.append(
                f"  {labels[side]:34} {s['jobs_per_s']:7.0f} {vs} {s['startup_s']:8.3f} {extra}  {s['cpu_ms_per_job']:8.3f} ({s['sys_ms_per_job']:.3f}) {s['cores']:5.2f} {more}"
                f"  {s['cpu_startup_s']:9.3f} {s['cpu_total_s']:9.2f} {ls}  {s.get('calls_per_job_total', '')}"
            )  # fmt: skip
        if "middleware_ratio" in section:
            self.lines.append(f"  with middleware vs without: {section['middleware_ratio']:.0%}")
        self._goals(goals)

    def observability(self, rounds: dict[str, list[CliRound]], concurrency: int) -> None:
        """Section obs: the worker with EMF metrics and with the OTel SDK against the worker with neither."""
        sides = {side: summarize_cli(r) for side, r in rounds.items() if r}
        ref = sides["cloudq"]
        for side, s in sides.items():
            if side != "cloudq":
                s["ratio"] = round(s["jobs_per_s"] / ref["jobs_per_s"], 3) if ref["jobs_per_s"] else 0.0
                # Round i of every side ran in the same window (the sides rotate within it): the median of the
                # per-window ratios cancels the load that other processes put on a shared machine over time.
                s["paired_ratio"] = round(median(a.rate / b.rate for a, b in zip(rounds[side], rounds["cloudq"]) if b.rate), 3)
                s["cpu_ms_per_job_over_ref"] = round(s["cpu_ms_per_job"] - ref["cpu_ms_per_job"], 3)
        emf, otel = sides["cloudq+emf"], sides["cloudq+otel"]
        goals = {"emf_paired_ratio>=0.95": emf["paired_ratio"] >= 0.95, "otel_paired_ratio>=0.85": otel["paired_ratio"] >= 0.85}
        jobs = rounds["cloudq"][0].jobs
        self.data["observability"] = {**sides, "jobs": jobs, "concurrency": concurrency, "rounds": len(rounds["cloudq"]), "goals": goals}
        self.lines += [
            "", f"Observability, spawned `cloudq worker -c {concurrency}`: {jobs} no-op sync jobs per round, {len(rounds['cloudq'])} rounds per side",
            f"  {'':44} {'jobs/s':>7} {'vs ref':>7} {'paired':>7}  {'CPU ms/job':>10} {'+ms':>7}  rounds jobs/s",
        ]  # fmt: skip
        labels = {"cloudq": "metrics none, tracing off", "cloudq+emf": "CLOUDQ_METRICS=emf", "cloudq+otel": "OTel SDK, batch processor, no-op exporter"}
        for side, s in sides.items():
            vs = f"{s['ratio']:7.0%} {s['paired_ratio']:7.0%}" if "ratio" in s else f"{'(ref)':>7} {'':7}"
            more = f"{s['cpu_ms_per_job_over_ref']:+7.3f}" if "ratio" in s else f"{'':7}"
            self.lines.append(f"  {labels[side]:44} {s['jobs_per_s']:7.0f} {vs}  {s['cpu_ms_per_job']:10.3f} {more}  {s['rounds_jobs_per_s']}")
        self.lines.append("  (vs ref: median rate over median rate; paired: median of the rounds' ratios, each round's sides run back to back)")
        self._goals(goals)

    def map_fresh(self, rounds: dict[str, list[MapRound]]) -> None:
        """``.map()`` in a fresh process against raw SendMessageBatch in one, three ways of timing it."""
        windows = {
            "script": ("spawn", "done", "whole script: spawn -> last batch sent (imports included)"),
            "after_import": ("imported", "done", "after imports: client, queue URL and every batch"),
            "warm": ("first", "done", "warm: after the first 10 jobs"),
        }
        section: dict[str, Any] = {}
        for key, (start, end, _) in windows.items():
            for side, rs in rounds.items():
                jobs = [r.jobs - (10 if start == "first" else 0) for r in rs]
                section.setdefault(key, {})[side] = {
                    "jobs_per_s": round(median(j / r.seconds(start, end) for j, r in zip(jobs, rs)), 1),
                    "seconds": round(median(r.seconds(start, end) for r in rs), 3),
                    "cpu_ms_per_job": round(median(r.cpu_s(start, end) / j * 1000 for j, r in zip(jobs, rs)), 3),
                    "rounds_jobs_per_s": [round(j / r.seconds(start, end), 1) for j, r in zip(jobs, rs)],
                }
            raw, cq = section[key]["raw"], section[key]["cloudq"]
            section[key]["ratio"] = round(cq["jobs_per_s"] / raw["jobs_per_s"], 3) if raw["jobs_per_s"] else 0.0
        first = {side: round(median(r.seconds("imported", "first") for r in rs) * 1000, 1) for side, rs in rounds.items()}
        section["first_10_ms"] = first
        ls = {side: [r.localstack_cpu_s / r.jobs for r in rs if r.localstack_cpu_s is not None] for side, rs in rounds.items()}
        if all(ls.values()):
            section["localstack_cpu_ms_per_job"] = {side: round(median(v) * 1000, 3) for side, v in ls.items()}
        section["goals"] = {"after_import_ratio>=0.90": section["after_import"]["ratio"] >= 0.90}
        self.data["map_fresh"] = section
        n = rounds["raw"][0].jobs
        self.lines += ["", f".map() of {n} jobs in a fresh process vs raw SendMessageBatch of 10 in one (cloudq / raw)",
                       f"  {'':58} {'raw/s':>7} {'cloudq/s':>8} {'ratio':>6}  {'CPU ms/job raw, cloudq':>22}"]  # fmt: skip
        for key, (_, _, label) in windows.items():
            raw, cq = section[key]["raw"], section[key]["cloudq"]
            self.lines.append(
                f"  {label:58} {raw['jobs_per_s']:7.0f} {cq['jobs_per_s']:8.0f} {section[key]['ratio']:6.0%}  {raw['cpu_ms_per_job']:10.3f}, {cq['cpu_ms_per_job']:.3f}"
            )
        self.lines.append(f"  first 10 jobs after imports (client, GetQueueUrl, cloudq's lazy imports): raw {first['raw']:.0f} ms, cloudq {first['cloudq']:.0f} ms")
        if "localstack_cpu_ms_per_job" in section:
            ls_ms = section["localstack_cpu_ms_per_job"]
            self.lines.append(f"  LocalStack CPU ms/job over the whole child: raw {ls_ms['raw']:.3f}, cloudq {ls_ms['cloudq']:.3f}")
        self._goals(section["goals"])

    def startup_phases(self, phases: dict[str, dict[str, float]]) -> None:
        """Start-up to first job split into phases (:mod:`bench.startup`), median ms per side."""
        from bench.startup import text

        self.data["startup_phases_ms"] = phases
        self.lines += ["", *text(phases).splitlines()]

    def error(self, section: str, message: str) -> None:
        self.data.setdefault("errors", {})[section] = message
        self._title(section)
        self.lines.append(f"  FAILED: {message}")

    # -- text ----------------------------------------------------------------------------------
    def _title(self, text: str) -> None:
        cpu = "CPU ms/task: bench+LS"
        self.lines += ["", text, f"  {'':44} {'tasks/s':>8} {'vs ref':>7} {'p50 ms':>7}  {cpu:>21}  API calls per task"]

    def _row(self, label: str, s: dict[str, Any], vs: float | None) -> None:
        vs_text = f"{vs:7.0%}" if vs is not None else f"{'(ref)':>7}"
        latency = f"{s['latency_ms']['p50']:7.2f}" if "latency_ms" in s else f"{'':7}"
        cpu = f"{s['cpu_ms_per_task']:.3f}" if "cpu_ms_per_task" in s else ""
        if "localstack_cpu_ms_per_task" in s:
            cpu += f" + {s['localstack_cpu_ms_per_task']:.3f}"
        calls = "  ".join(f"{op} {n:.3f}" for op, n in s.get("calls_per_task", {}).items())
        if calls:
            calls += f"  = {s['calls_per_task_total']:.3f}"
            if s.get("localstack_log_agrees") is False:
                calls += f"  (LocalStack log: {s['localstack_log_calls']})"
        self.lines.append(f"  {label:44} {s['tasks_per_s']:8.0f} {vs_text} {latency}  {cpu:>21}  {calls}")

    def _goals(self, goals: dict[str, bool]) -> None:
        if goals:
            self.lines.append("  goals: " + ", ".join(f"{name} {'ok' if ok else 'MISSED'}" for name, ok in goals.items()))

    def text(self) -> str:
        config = self.data["config"]
        head = "cloudq bench: " + " ".join(f"{k}={v}" for k, v in config.items())
        note = "(median of alternating rounds; LocalStack shares the CPU: compare rows, not absolute figures)"
        return "\n".join([head, note, *self.lines])

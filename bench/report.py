"""Turns measured rounds into the printed table and the final JSON line (medians across rounds)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.common import Phase, median, percentile

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

"""CloudWatch Embedded Metric Format: metrics as JSON lines on stdout, no PutMetricData call ever.

CloudWatch Logs turns each line that carries ``_aws.CloudWatchMetrics`` into metrics (Lambda does it for
stdout out of the box; on ECS, the awslogs driver with the CloudWatch agent or Firelens does). A line's
dimension values are keys at its root, so one flush writes one line per set of dimension values (per
queue and task, say), each with all the metrics recorded for it since the last flush::

    {"_aws": {"Timestamp": 1764633600000, "CloudWatchMetrics": [{"Namespace": "cloudq",
       "Dimensions": [["app", "queue", "task"], ["app", "queue"]],
       "Metrics": [{"Name": "jobs_succeeded", "Unit": "Count"}, {"Name": "job_duration_ms", "Unit": "Milliseconds"}]}]},
     "app": "shop", "queue": "default", "task": "shop.send_welcome_email",
     "jobs_succeeded": 42, "job_duration_ms": {"Values": [1.2, 3.4], "Counts": [40, 2], "Min": 1.2, "Max": 3.4, "Count": 42, "Sum": 54.8}}

Job metrics are declared with two dimension sets, so CloudWatch also keeps a per-queue total that
alarms can watch (``cloudq infra render`` adds them). Durations are distributions: values rounded to
two significant digits with their counts (at most 100 values a line, as EMF allows; more spill into
another line with the same dimensions, which CloudWatch adds up). Aggregated in memory and written by
:meth:`EmfSink.flush`: the worker every ``CLOUDQ_METRICS_INTERVAL_S`` and at exit, the Lambda handler
once per invocation, before it returns.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from cloudq.observability.metrics import JOB_DIMENSIONS, METRICS, QUEUE_DIMENSIONS, Metric

__all__ = ["EmfSink", "bucket"]

MAX_VALUES = 100  # EMF: values of one metric in one line


def bucket(value: float) -> float:
    """``value`` to two significant digits (0.0123 -> 0.012, 187 -> 190): enough for percentiles, and a
    few hundred distinct values at most between a microsecond and an hour."""
    if not math.isfinite(value) or value <= 0:
        return 0.0
    digits = 1 - math.floor(math.log10(value))
    return round(value, digits) if digits > 0 else float(round(value, digits))


class _Distribution:
    """Raw values until the flush: one list append per record on the job path, the bucketing and the
    statistics once per flush (a minute of a busy worker is some tens of thousands of floats)."""

    __slots__ = ("values", "exact")

    def __init__(self, exact: bool) -> None:
        self.values: list[float] = []
        self.exact = exact

    def chunks(self) -> list[dict[str, Any]]:
        """EMF values/counts objects of at most MAX_VALUES values; with one chunk, the exact statistics."""
        values = self.values
        counts: dict[float, int] = {}
        for value in values if self.exact else map(bucket, values):
            counts[value] = counts.get(value, 0) + 1
        items = sorted(counts.items())
        out = [
            {"Values": [float(v) for v, _ in items[start : start + MAX_VALUES]], "Counts": [c for _, c in items[start : start + MAX_VALUES]]}
            for start in range(0, len(items), MAX_VALUES)
        ]
        if len(out) > 1:  # a statistic set describes the line it is on: each chunk gets its own
            return [_with_stats(chunk) for chunk in out]
        out[0].update(Min=round(min(values), 3), Max=round(max(values), 3), Count=len(values), Sum=round(sum(values), 3))
        return out


def _with_stats(chunk: dict[str, Any]) -> dict[str, Any]:
    values, counts = chunk["Values"], chunk["Counts"]
    return {
        "Values": values, "Counts": counts, "Min": min(values), "Max": max(values), "Count": sum(counts),
        "Sum": round(sum(v * c for v, c in zip(values, counts)), 3),
    }  # fmt: skip


def _dimension_sets(names: tuple[str, ...]) -> list[list[str]]:
    """The metric's own dimensions, plus the per-queue roll-up for job metrics (what alarms watch)."""
    if names[: len(JOB_DIMENSIONS)] == JOB_DIMENSIONS:
        return [list(names), list(QUEUE_DIMENSIONS)]
    return [list(names)]


class EmfSink:
    """Aggregates records by dimension values; :meth:`flush` writes one EMF line per group to ``stream``
    (stdout, looked up at each flush) and starts over."""

    def __init__(self, namespace: str, *, stream: TextIO | None = None, clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self._stream = stream
        self._clock = clock
        # (dimension names, their values) -> metric name -> a count or a distribution
        self._groups: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, Any]] = {}

    def record(self, metric: Metric, labels: tuple[str, ...], value: float) -> None:
        group = self._groups.get((metric.dimensions, labels))
        if group is None:
            group = self._groups[(metric.dimensions, labels)] = {}
        if metric.kind == "counter":
            group[metric.name] = group.get(metric.name, 0) + value
            return
        dist = group.get(metric.name)
        if dist is None:
            dist = group[metric.name] = _Distribution(exact=metric.unit == "Count")
        dist.values.append(value)

    def lines(self) -> list[str]:
        """The EMF lines of everything recorded since the last flush, and forget it."""
        groups, self._groups = self._groups, {}
        stamp = int(self._clock() * 1000)
        out = []
        for (names, labels), values in groups.items():
            out += [json.dumps(doc, separators=(",", ":")) for doc in self._documents(stamp, names, labels, values)]
        return out

    def _documents(self, stamp: int, names: tuple[str, ...], labels: tuple[str, ...], values: dict[str, Any]) -> list[dict[str, Any]]:
        counters = {name: v for name, v in values.items() if not isinstance(v, _Distribution)}
        chunked = {name: v.chunks() for name, v in values.items() if isinstance(v, _Distribution)}
        docs = []
        for i in range(max([1, *(len(c) for c in chunked.values())])):
            fields: dict[str, Any] = dict(counters) if i == 0 else {}
            fields.update((name, chunks[i]) for name, chunks in chunked.items() if i < len(chunks))
            if not fields:
                continue
            directive = {
                "Namespace": self.namespace,
                "Dimensions": _dimension_sets(names),
                "Metrics": [{"Name": name, "Unit": METRICS[name].unit} for name in fields],
            }
            docs.append({"_aws": {"Timestamp": stamp, "CloudWatchMetrics": [directive]}, **dict(zip(names, labels)), **fields})
        return docs

    def flush(self) -> None:
        lines = self.lines()
        if lines:
            stream = self._stream or sys.stdout
            stream.write("\n".join(lines) + "\n")  # one write: no other output lands inside a line
            stream.flush()

    def close(self) -> None:
        self.flush()

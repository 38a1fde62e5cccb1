"""Section ``obs``, the producer half: what tracing costs one ``.map()`` of N jobs, in process, on the memory broker.

``python -m bench.obs_map [--jobs 1000] [--rounds 15]`` runs it alone (no LocalStack needed).

Two sides, alternating round by round (A B B A ...), each round a fresh App and memory broker:

- ``off``: no tracing middleware (``CLOUDQ_TRACING=none``);
- ``otel``: :class:`cloudq.observability.tracing.TracingMiddleware` on an SDK TracerProvider with a
  BatchSpanProcessor whose exporter drops every batch (as the drain half, :mod:`bench.obs_drain`).

Timed: the one ``task.map([()] * N)`` call, wall (``perf_counter``) and CPU (``process_time``, every thread of this
process: the batch processor's included when it ran in the window). Untimed, after each traced round: the
processor is flushed, so that its queue (2048 spans) never fills and starts dropping, which would be cheaper.
The memory broker keeps the producer's own work in view: there is no network call to hide it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

from bench.common import median

__all__ = ["MapTiming", "map_rounds", "summarize", "text"]

SIDES = ("off", "otel")


@dataclass(frozen=True, slots=True)
class MapTiming:
    jobs: int
    wall_s: float
    cpu_s: float


def _provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return provider


def _app(side: str, provider: Any) -> Any:
    import cloudq

    middleware: list[Any] = []
    if side == "otel":
        from cloudq.observability.tracing import TracingMiddleware

        middleware.append(TracingMiddleware(provider))
    app = cloudq.App("bench-map", settings=cloudq.Settings(broker="memory", tracing="none", job_store="none"), middleware=middleware)
    app.task(name="bench.noop")(lambda: None)
    return app


def _round(side: str, jobs: int, provider: Any) -> MapTiming:
    app = _app(side, provider)
    task = app.get_task("bench.noop")
    items = [()] * jobs
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        refs = task.map(items)
        timing = MapTiming(len(refs), time.perf_counter() - wall, time.process_time() - cpu)
    finally:
        app.close()
    provider.force_flush()
    return timing


def map_rounds(jobs: int = 1000, rounds: int = 15) -> dict[str, list[MapTiming]]:
    """One untimed warm-up per side, then ``rounds`` timed ``.map()`` calls per side, alternating."""
    provider = _provider()
    try:
        for side in SIDES:
            _round(side, jobs, provider)
        out: dict[str, list[MapTiming]] = {side: [] for side in SIDES}
        for i in range(rounds):
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                out[side].append(_round(side, jobs, provider))
        return out
    finally:
        provider.shutdown()


def summarize(rounds: dict[str, list[MapTiming]]) -> dict[str, Any]:
    """Median ms per ``.map()`` and µs per job per side; traced over off, from the medians and paired by round."""
    out: dict[str, Any] = {"jobs": rounds["off"][0].jobs, "rounds": len(rounds["off"])}
    for side, timings in rounds.items():
        out[side] = {
            "wall_ms": round(median(t.wall_s for t in timings) * 1000, 2),
            "cpu_ms": round(median(t.cpu_s for t in timings) * 1000, 2),
            "us_per_job": round(median(t.wall_s / t.jobs for t in timings) * 1e6, 2),
            "rounds_wall_ms": [round(t.wall_s * 1000, 1) for t in timings],
        }
    off, otel = out["off"], out["otel"]
    out["otel_over_off_wall"] = round(otel["wall_ms"] / off["wall_ms"], 3) if off["wall_ms"] else 0.0
    out["otel_over_off_cpu"] = round(otel["cpu_ms"] / off["cpu_ms"], 3) if off["cpu_ms"] else 0.0
    out["otel_paired_wall"] = round(median(a.wall_s / b.wall_s for a, b in zip(rounds["otel"], rounds["off"]) if b.wall_s), 3)
    out["otel_extra_us_per_job"] = round(otel["us_per_job"] - off["us_per_job"], 2)
    return out


def text(summary: dict[str, Any]) -> str:
    lines = [
        f".map() of {summary['jobs']} jobs in process, memory broker, {summary['rounds']} rounds per side (no goal)",
        f"  {'':46} {'wall ms':>8} {'CPU ms':>8} {'us/job':>7}",
    ]
    labels = {"off": "tracing off", "otel": "TracingMiddleware, OTel SDK, no-op exporter"}
    for side in SIDES:
        s = summary[side]
        lines.append(f"  {labels[side]:46} {s['wall_ms']:8.2f} {s['cpu_ms']:8.2f} {s['us_per_job']:7.2f}")
    lines.append(
        f"  traced/off: wall {summary['otel_over_off_wall']:.2f}x (paired {summary['otel_paired_wall']:.2f}x), "
        f"CPU {summary['otel_over_off_cpu']:.2f}x, {summary['otel_extra_us_per_job']:+.2f} us per job"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.obs_map", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per .map() (default 1000)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per side (default 15)")
    args = parser.parse_args(argv)
    from bench.common import quiet_logs

    quiet_logs()
    summary = summarize(map_rounds(args.jobs, args.rounds))
    print(text(summary))
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

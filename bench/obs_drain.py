"""Section ``obs``: what metrics and tracing cost a ``cloudq worker``, side by side with neither (issue 13).

Spawned processes, as in the ``cli`` section (:mod:`bench.cli_drain`), each round a fresh queue of N no-op sync
jobs drained by ``cloudq worker bench.cli_app:app -c C --max-tasks N``; the sides rotate round by round:

- ``cloudq``: CLOUDQ_METRICS unset (none) and no tracer provider (tracing off): the reference;
- ``cloudq+emf``: ``CLOUDQ_METRICS=emf`` (EMF lines on stdout at exit; the drain is shorter than the 60 s
  interval, so all the aggregation and one flush are in the run);
- ``cloudq+otel``: ``BENCH_OTEL=1``, which makes :mod:`bench.cli_app` install the OpenTelemetry SDK's
  TracerProvider with a BatchSpanProcessor and an exporter that drops every batch, plus ``CLOUDQ_TRACING=otel``:
  every job gets its CONSUMER span (the bench's bodies carry no traceparent, so each is a root span).

Goals: the drain rate with EMF at least 95% of the reference, with the OTel SDK at least 85%.
"""

from __future__ import annotations

from typing import Any

from bench.cli_drain import CliBench, CliRound, rotate

__all__ = ["SIDES", "obs_rounds"]

SIDES = ("cloudq", "cloudq+emf", "cloudq+otel")


def obs_rounds(cli: CliBench, jobs: int, concurrency: int, rounds: int) -> dict[str, list[CliRound]]:
    """One untimed warm-up per side, then ``rounds`` timed rounds per side, rotating."""
    for side in SIDES:
        cli.drain_round(side, 20, concurrency, f"owarm-{side.replace('+', '-')}")
    drains: dict[str, list[Any]] = {side: [] for side in SIDES}
    for i, side in enumerate(rotate(rounds, SIDES)):
        drains[side].append(cli.drain_round(side, jobs, concurrency, f"o{i}-{side.replace('+', '-')}"))
    return drains

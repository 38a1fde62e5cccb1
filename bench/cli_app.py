"""The app a spawned ``cloudq worker bench.cli_app:app`` runs in the CLI drain bench (:mod:`bench.cli_drain`).

Settings come from ``CLOUDQ_*`` as for any user's worker. The one task is a sync no-op that records when it
ran (:func:`bench.jobclock.tick`), under the name the raw producer's bodies use.

``BENCH_OTEL=1`` sets up the OpenTelemetry SDK with a no-op exporter first (section ``obs``, :mod:`bench.obs_drain`).

``BENCH_MIDDLEWARE=1`` installs one no-op middleware that overrides every hook with a pass-through (so the
chain really calls it for each job; a bare ``cloudq.Middleware()`` would be skipped, costing nothing). Issue 10:
the drain with it should be at least 95% of the drain without. Until cloudq has the middleware API this is skipped, and the job clock
notes ``middleware: false`` so the report says the variant measured nothing.
"""

from __future__ import annotations

import os

import cloudq
from bench import jobclock

__all__ = ["app", "noop"]

TASK_NAME = "bench.noop"  # the same as bench.sqs_drain.TASK_NAME, without importing that module here



def _install_otel_sdk() -> None:
    """BENCH_OTEL=1 (section obs): the SDK's TracerProvider with a batch processor whose exporter drops
    every batch, set globally before the App is built, as ``opentelemetry-instrument`` would."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)


if os.environ.get("BENCH_OTEL") == "1":
    _install_otel_sdk()

app = cloudq.App("bench")


@app.task(name=TASK_NAME)
def noop() -> None:
    jobclock.tick()


def _install_middleware() -> bool:
    base = getattr(cloudq, "Middleware", None)
    if base is None or not hasattr(app, "add_middleware"):
        return False

    class PassThrough(base):  # type: ignore[misc, valid-type]
        def on_enqueue(self, envelope: object) -> object:
            return envelope

        async def on_job(self, job: object, call_next: object) -> object:
            return await call_next()  # type: ignore[operator]

        def on_outcome(self, job: object, outcome: object) -> None:
            return None

    app.add_middleware(PassThrough())
    return True


if os.environ.get("BENCH_MIDDLEWARE") == "1":
    jobclock.note("middleware", _install_middleware())

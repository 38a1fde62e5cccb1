"""Tracing (cloudq[otel]) on the memory broker with the SDK's in-memory exporter: the producer's context travels
in the envelope's headers, the consumer span is its child in the worker and the Lambda handler, fates are span
events, and a traceparent that is malformed or hostile starts a new trace without any error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from structlog.testing import capture_logs

import cloudq
from cloudq.brokers.base import OutgoingMessage
from cloudq.envelope import Envelope
from cloudq.observability.tracing import TracingMiddleware, parent_context, xray_link
from cloudq.runtimes.aws_lambda import LambdaHandler
from cloudq.runtimes.worker import Worker

from .test_lambda_handler import FakeContext, record

pytestmark = pytest.mark.unit

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


@pytest.fixture
def app(exporter: InMemorySpanExporter) -> cloudq.App:
    """An app traced into ``exporter`` through its own provider (never the global one, which would turn
    CLOUDQ_TRACING=auto on for every other test's app)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = cloudq.App("traced", settings=cloudq.Settings(broker="memory", tracing="none", retry_backoff_s=0.5), middleware=[TracingMiddleware(provider)])
    tracer = provider.get_tracer("test")

    @app.task(name="t.ok")
    def ok() -> None:
        with tracer.start_as_current_span("inside the task"):
            pass

    @app.task(name="t.flaky", max_retries=1)
    def flaky() -> None:
        raise ValueError("boom")

    app.tracer = tracer  # type: ignore[attr-defined]
    return app


def drain(app: cloudq.App) -> None:
    async def run() -> None:
        await Worker(app, burst=True).run()

    asyncio.run(run())


def spans(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == kind]


def test_the_consumer_span_is_a_child_of_the_producer_span(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    """.delay() under a request span: its PRODUCER span is that span's child, the CONSUMER span the producer's,
    with the messaging conventions; the task's own span nests under the consumer span, in its thread."""
    with app.tracer.start_as_current_span("web request"):  # type: ignore[attr-defined]
        ref = app.get_task("t.ok").delay()
    drain(app)
    [request] = [s for s in exporter.get_finished_spans() if s.name == "web request"]
    [producer] = spans(exporter, SpanKind.PRODUCER)
    [consumer] = spans(exporter, SpanKind.CONSUMER)
    [inner] = [s for s in exporter.get_finished_spans() if s.name == "inside the task"]

    assert producer.parent is not None and producer.parent.span_id == request.context.span_id
    assert consumer.context.trace_id == request.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id and consumer.parent.is_remote
    assert inner.parent is not None and inner.parent.span_id == consumer.context.span_id
    assert consumer.name == "process default" and producer.name == "send t.ok"
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "aws_sqs", "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.destination.name": "default", "messaging.message.id": ref.message_id, "cloudq.job_id": ref.id,
        "cloudq.task": "t.ok", "cloudq.attempt": 1, "cloudq.outcome": "ack",
    }  # fmt: skip


def test_a_map_batch_is_one_producer_span_parent_of_every_job(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    app.get_task("t.ok").map([()] * 4)
    drain(app)
    [producer] = spans(exporter, SpanKind.PRODUCER)
    consumers = spans(exporter, SpanKind.CONSUMER)

    assert (producer.attributes or {})["messaging.batch.message_count"] == 4
    assert len(consumers) == 4 and all(c.parent is not None and c.parent.span_id == producer.context.span_id for c in consumers)


def test_failures_are_recorded_and_retries_and_dead_letters_are_span_events(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    app.get_task("t.flaky").delay()
    drain(app)
    first, second = sorted(spans(exporter, SpanKind.CONSUMER), key=lambda s: (s.attributes or {})["cloudq.attempt"])

    assert [e.name for e in first.events] == ["exception", "cloudq.retry"]
    assert [e.name for e in second.events] == ["exception", "cloudq.dead_letter"]
    assert (second.events[1].attributes or {})["cloudq.reason"] == "max_retries_exceeded"
    assert not first.status.is_ok and not second.status.is_ok
    assert first.context.trace_id == second.context.trace_id  # both runs continue the producer's trace


def test_a_delivery_that_never_runs_still_gets_its_span(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    app.broker.send("default", [OutgoingMessage(Envelope("t.nobody", headers={"traceparent": VALID}).encode())])
    drain(app)
    [consumer] = spans(exporter, SpanKind.CONSUMER)

    assert consumer.parent is not None and consumer.parent.span_id == 0x00F067AA0BA902B7
    assert [e.name for e in consumer.events] == ["exception", "cloudq.dead_letter"]


HOSTILE = [
    "garbage",
    "",
    VALID.upper(),
    "ff" + VALID[2:],
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
    VALID + "-extra",
    VALID + "\n" + VALID,
    " " + VALID,
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" * 1000,
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
]


@pytest.mark.parametrize("traceparent", HOSTILE, ids=range(len(HOSTILE)))
def test_a_malformed_or_hostile_traceparent_starts_a_new_trace(app: cloudq.App, exporter: InMemorySpanExporter, traceparent: str) -> None:
    """The job runs and succeeds; its span is a root of a trace of its own; nothing is logged as an error."""
    headers = {"traceparent": traceparent, "tracestate": "x=" + "a" * 10_000}
    app.broker.send("default", [OutgoingMessage(Envelope("t.ok", headers=headers).encode())])
    with capture_logs() as logs:
        drain(app)
    [consumer] = spans(exporter, SpanKind.CONSUMER)

    assert consumer.parent is None
    assert (consumer.attributes or {})["cloudq.outcome"] == "ack"
    assert [e for e in logs if e["log_level"] == "error"] == []


def test_an_oversized_tracestate_is_dropped_and_the_parent_kept() -> None:
    context = parent_context({"traceparent": VALID, "tracestate": "k=" + "v" * 600})
    assert context is not None
    span_context = trace.get_current_span(context).get_span_context()
    assert span_context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736 and len(span_context.trace_state) == 0
    kept = parent_context({"traceparent": VALID, "tracestate": "k=v"})
    assert kept is not None and dict(trace.get_current_span(kept).get_span_context().trace_state) == {"k": "v"}


def test_the_lambda_handler_continues_the_trace_and_links_the_xray_header(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    """An SQS record whose body carries a traceparent and whose system attributes carry AWSTraceHeader."""
    rec = record(Envelope("t.ok", headers={"traceparent": VALID}).encode(), queue="default")
    rec["attributes"]["AWSTraceHeader"] = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    handler = LambdaHandler(app, configure_logs=False)
    try:
        assert handler({"Records": [rec]}, FakeContext()) == {"batchItemFailures": []}
    finally:
        handler.close()
    [consumer] = spans(exporter, SpanKind.CONSUMER)

    assert consumer.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert consumer.parent is not None and consumer.parent.span_id == 0x00F067AA0BA902B7
    [link] = consumer.links
    assert (link.context.trace_id, link.context.span_id) == (0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8)


@pytest.mark.parametrize("header", [None, "", "Root=1-abc", "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8", "Parent=x"])
def test_an_xray_header_that_does_not_parse_is_no_link(header: Any) -> None:
    assert xray_link(header) is None


def test_tracing_auto_turns_on_only_with_a_global_tracer_provider() -> None:
    """CLOUDQ_TRACING=auto: the test process has opentelemetry imported but no global provider: no tracing."""
    app = cloudq.App("auto", settings=cloudq.Settings(broker="memory"))
    assert len(app.middleware) == 0
    forced = cloudq.App("forced", settings=cloudq.Settings(broker="memory", tracing="otel"))
    assert [type(m).__name__ for m in forced.middleware.items] == ["TracingMiddleware"]

"""Tracing (cloudq[otel]) on the memory broker with the SDK's in-memory exporter: the producer's context travels
in the envelope's headers (a .map: one creation context per job, linked from the batch's send span), the
consumer span is its child in the worker and the Lambda handler, the send span covers the broker's send and
records its failure, fates are span events, and a traceparent that is malformed or hostile starts a new trace
without any error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.testing import capture_logs

import cloudq
import cloudq.testing
from cloudq.brokers.base import OutgoingMessage
from cloudq.brokers.memory import MemoryBroker
from cloudq.envelope import Envelope
from cloudq.errors import BrokerUnavailable
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


def creates_of(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The PRODUCER create spans of .map (one per job)."""
    return [s for s in spans(exporter, SpanKind.PRODUCER) if (s.attributes or {})["messaging.operation.type"] == "create"]


def batch_sends(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The PRODUCER send spans of batches (one per .map, linking to its create spans)."""
    return [s for s in spans(exporter, SpanKind.PRODUCER) if "messaging.batch.message_count" in (s.attributes or {})]


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


def test_a_map_is_a_create_span_per_job_and_one_send_span_linking_them(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    """.map() of N under a request span, as the messaging conventions have batch sends: N PRODUCER create spans
    (one per job, children of the request), one PRODUCER send span linking to each of them (the issue's
    contract: one PRODUCER span per .map batch with links; the conventions would make it CLIENT), and each job's
    CONSUMER span the child of its own job's create span."""
    with app.tracer.start_as_current_span("web request"):  # type: ignore[attr-defined]
        refs = app.get_task("t.ok").map([()] * 5)
    drain(app)
    [request] = [s for s in exporter.get_finished_spans() if s.name == "web request"]
    creates = creates_of(exporter)
    [send] = batch_sends(exporter)
    consumers = spans(exporter, SpanKind.CONSUMER)
    create_of = {(c.attributes or {})["cloudq.job_id"]: c for c in creates}

    assert sorted(create_of) == sorted(ref.id for ref in refs) and len(creates) == 5
    assert {c.name for c in creates} == {"create t.ok"} and send.name == "send t.ok"
    assert all(c.parent is not None and c.parent.span_id == request.context.span_id for c in [*creates, send])
    assert [link.context.span_id for link in send.links] == [create_of[ref.id].context.span_id for ref in refs]
    assert dict(send.attributes or {}) == {
        "messaging.system": "aws_sqs", "messaging.operation.type": "send", "messaging.operation.name": "send",
        "messaging.destination.name": "default", "messaging.batch.message_count": 5, "cloudq.task": "t.ok",
    }  # fmt: skip
    assert (create_of[refs[0].id].attributes or {})["messaging.operation.type"] == "create"
    assert len(consumers) == 5
    for consumer in consumers:
        own = create_of[(consumer.attributes or {})["cloudq.job_id"]]
        assert consumer.parent is not None and consumer.parent.is_remote
        assert (consumer.parent.trace_id, consumer.parent.span_id) == (own.context.trace_id, own.context.span_id)


async def test_an_async_map_has_the_same_spans(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    refs = await app.get_task("t.ok").amap([()] * 3)
    creates = creates_of(exporter)
    [send] = batch_sends(exporter)

    assert sorted((c.attributes or {})["cloudq.job_id"] for c in creates) == sorted(r.id for r in refs)
    assert {link.context.span_id for link in send.links} == {c.context.span_id for c in creates}


def test_without_create_spans_a_map_is_one_producer_span_parent_of_every_job(exporter: InMemorySpanExporter) -> None:
    """TracingMiddleware(create_spans=False), the conventions' switch: one PRODUCER span whose context every job carries."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = cloudq.App("lean", settings=cloudq.Settings(broker="memory", tracing="none"), middleware=[TracingMiddleware(provider, create_spans=False)])
    app.task(name="t.ok")(lambda: None)
    app.get_task("t.ok").map([()] * 4)
    drain(app)
    [producer] = spans(exporter, SpanKind.PRODUCER)
    consumers = spans(exporter, SpanKind.CONSUMER)

    assert (producer.attributes or {})["messaging.batch.message_count"] == 4 and not spans(exporter, SpanKind.CLIENT)
    assert len(consumers) == 4 and all(c.parent is not None and c.parent.span_id == producer.context.span_id for c in consumers)


class RecordingBroker(MemoryBroker):
    """A memory broker whose send notes when it ran (the SDK's clock, time_ns) and the span current in it, and
    fails with ``fail`` when that is set."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[tuple[int, int, Any]] = []
        self.fail: Exception | None = None

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        started, current = time.time_ns(), trace.get_current_span()
        if self.fail is not None:
            self.sends.append((started, time.time_ns(), current))
            raise self.fail
        ids = super().send(queue, messages)
        self.sends.append((started, time.time_ns(), current))
        return ids


@pytest.fixture
def recording(exporter: InMemorySpanExporter) -> tuple[cloudq.App, RecordingBroker]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broker = RecordingBroker()
    app = cloudq.App("sent", settings=cloudq.Settings(broker="memory", tracing="none"), broker=broker, middleware=[TracingMiddleware(provider)])
    app.task(name="t.ok")(lambda: None)
    return app, broker


SENDS: dict[str, Callable[[cloudq.Task[Any, Any]], Any]] = {
    "delay": lambda task: task.delay(),
    "map": lambda task: task.map([()] * 3),
    "adelay": lambda task: asyncio.run(task.adelay()),
    "amap": lambda task: asyncio.run(task.amap([()] * 3)),
}


@pytest.mark.parametrize("how", SENDS)
def test_the_send_span_is_open_and_current_while_the_broker_sends(recording: tuple[cloudq.App, RecordingBroker], exporter: InMemorySpanExporter, how: str) -> None:
    """The send span started before the broker's send began and ended after it returned (ordered on the SDK's own
    clock, not timed), and it was the current span inside the send, not yet ended."""
    app, broker = recording
    SENDS[how](app.get_task("t.ok"))
    [send] = [s for s in exporter.get_finished_spans() if s.name == "send t.ok"]
    [(started, returned, current)] = broker.sends

    assert send.start_time is not None and send.end_time is not None
    assert send.start_time <= started <= returned <= send.end_time
    assert current.get_span_context().span_id == send.context.span_id
    assert send.status.is_ok
    assert not trace.get_current_span().get_span_context().is_valid  # current only during the send


@pytest.mark.parametrize("how", SENDS)
def test_a_failing_send_marks_the_send_span_as_error_and_the_enqueue_still_raises(
    recording: tuple[cloudq.App, RecordingBroker], exporter: InMemorySpanExporter, how: str
) -> None:
    app, broker = recording
    broker.fail = BrokerUnavailable("SQS said 503")
    with pytest.raises(BrokerUnavailable, match="SQS said 503"):
        SENDS[how](app.get_task("t.ok"))
    [send] = [s for s in exporter.get_finished_spans() if s.name == "send t.ok"]
    [(_, returned, _)] = broker.sends

    assert send.status.status_code is StatusCode.ERROR and send.status.description == "BrokerUnavailable: SQS said 503"
    [event] = send.events
    assert event.name == "exception" and (event.attributes or {})["exception.type"].endswith("BrokerUnavailable")
    assert send.end_time is not None and returned <= send.end_time
    assert broker.stats("default").visible == 0
    assert not trace.get_current_span().get_span_context().is_valid


def test_in_eager_mode_a_jobs_own_map_nests_under_its_consumer_span(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    """cloudq.testing.eager runs each job inside its send: the sends nest (each its own scope), and the inner
    .map's spans hang under the outer job's consumer span, each inner job's consumer span under its create span."""

    @app.task(name="t.outer")
    def outer() -> None:
        app.get_task("t.ok").map([(), ()])

    with cloudq.testing.eager(app):
        outer.delay()
    [outer_send] = [s for s in spans(exporter, SpanKind.PRODUCER) if s.name == "send t.outer"]
    [outer_job] = [s for s in spans(exporter, SpanKind.CONSUMER) if (s.attributes or {})["cloudq.task"] == "t.outer"]
    creates = [s for s in spans(exporter, SpanKind.PRODUCER) if s.name == "create t.ok"]
    [inner_send] = batch_sends(exporter)
    inner_jobs = [s for s in spans(exporter, SpanKind.CONSUMER) if (s.attributes or {})["cloudq.task"] == "t.ok"]

    assert outer_job.parent is not None and outer_job.parent.span_id == outer_send.context.span_id
    assert all(s.parent is not None and s.parent.span_id == outer_job.context.span_id for s in [*creates, inner_send])
    assert sorted(s.parent.span_id for s in inner_jobs if s.parent) == sorted(c.context.span_id for c in creates)


def test_a_send_span_outside_cloudqs_producer_still_marks_the_enqueue(exporter: InMemorySpanExporter) -> None:
    """on_enqueue called with no on_send around it (a hand-made chain): one span, its context in the headers."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    envelope = TracingMiddleware(provider).on_enqueue(Envelope("t.ok"))
    [producer] = spans(exporter, SpanKind.PRODUCER)

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(NonRecordingSpan(producer.context)))
    assert dict(envelope.headers) == carrier and carrier["traceparent"].startswith(f"00-{producer.context.trace_id:032x}-")


def test_the_headers_are_what_the_w3c_propagator_writes_tracestate_included(app: cloudq.App, exporter: InMemorySpanExporter) -> None:
    """cloudq formats traceparent/tracestate itself (once per job of a .map): the same text as OpenTelemetry's
    W3C propagator, for a delay and for each job of a map, with the caller's tracestate carried on."""
    parent = parent_context({"traceparent": VALID, "tracestate": "vendor=abc,other=1"})
    token = otel_context.attach(parent)  # type: ignore[arg-type]
    try:
        app.get_task("t.ok").delay()
        app.get_task("t.ok").map([()] * 2)
    finally:
        otel_context.detach(token)
    deliveries = asyncio.run(app.broker.receive("default", max_messages=10, wait_s=0))  # type: ignore[attr-defined]
    by_job = {Envelope.decode(d.body).id: dict(Envelope.decode(d.body).headers) for d in deliveries}
    carriers = {}
    for span in [s for s in spans(exporter, SpanKind.PRODUCER) if "cloudq.job_id" in (s.attributes or {})]:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(NonRecordingSpan(span.context)))
        carriers[(span.attributes or {})["cloudq.job_id"]] = carrier
    assert by_job == carriers and len(by_job) == 3
    assert all(c["tracestate"] == "vendor=abc,other=1" for c in carriers.values())


def test_two_tracing_middlewares_each_keep_to_their_own_send(exporter: InMemorySpanExporter) -> None:
    """Two TracingMiddleware in one chain (say the App's and one's own): each makes its own spans of the send
    once, and the jobs carry the contexts of the inner one's create spans (the last on_enqueue writes the headers)."""
    providers = [TracerProvider(), TracerProvider()]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = cloudq.App("twice", settings=cloudq.Settings(broker="memory", tracing="none"), middleware=[TracingMiddleware(p) for p in providers])
    app.task(name="t.ok")(lambda: None)
    refs = app.get_task("t.ok").map([()] * 2)
    deliveries = asyncio.run(app.broker.receive("default", max_messages=10, wait_s=0))  # type: ignore[attr-defined]
    sends = batch_sends(exporter)
    inner = {s.context.span_id for s in creates_of(exporter) if s.resource is providers[1].resource}
    carried = {int(Envelope.decode(d.body).headers["traceparent"][36:52], 16) for d in deliveries}

    assert len(sends) == 2 and len(creates_of(exporter)) == 4 and len(refs) == 2 and not spans(exporter, SpanKind.CLIENT)
    assert carried == inner and len(inner) == 2


def test_without_an_sdk_nothing_is_added_to_the_headers() -> None:
    """The API alone (no tracer provider): no spans, so no traceparent, and the send goes through."""
    app = cloudq.App("bare", settings=cloudq.Settings(broker="memory", tracing="none"), middleware=[TracingMiddleware(trace.NoOpTracerProvider())])
    app.task(name="t.ok")(lambda: None)
    app.get_task("t.ok").map([()] * 2)
    app.get_task("t.ok").delay()
    deliveries = asyncio.run(app.broker.receive("default", max_messages=10, wait_s=0))  # type: ignore[attr-defined]
    assert len(deliveries) == 3 and all("traceparent" not in Envelope.decode(d.body).headers for d in deliveries)


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

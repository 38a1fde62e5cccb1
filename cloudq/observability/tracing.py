"""OpenTelemetry trace propagation through the queue: a PRODUCER span per enqueue, a CONSUMER span per job.

Needs the ``otel`` extra (``pip install 'cloudq[otel]'``, the API; bring your own SDK and exporter);
imported only when tracing is on (``CLOUDQ_TRACING=otel``, or ``auto`` with a global tracer provider
set when the App is built), so a cold start without it pays nothing.

* **Producer** (``on_send``, ``on_enqueue``), as the messaging conventions have batch sends. A ``.delay``
  (any send of one job) is one PRODUCER span ``send <task>``, whose context is the message's creation
  context. A ``.map`` of N jobs is N PRODUCER spans ``create <task>`` (``messaging.operation.type=create``,
  one per job, ``cloudq.job_id``; instant: they mark the message's creation), each job carrying its own
  span's context, plus one PRODUCER span ``send <task>`` (``messaging.batch.message_count``) that links to
  every creation context (the SDK keeps 128 links per span by default: ``OTEL_SPAN_LINK_COUNT_LIMIT``).
  The conventions make that send span CLIENT when create spans exist; cloudq's contract is a PRODUCER span
  per enqueue, one per ``.map`` batch with links, so every send span is PRODUCER and the two are told apart
  by ``messaging.operation.type`` (``create``/``send``) and name.
  The create and send spans are children of the caller's context (outside any span each job starts a
  trace of its own), so each consumer span is the child of its own message's context, and the batch
  is one span. That is N + 1 spans, and the SDK spends some 20 µs on each (more than cloudq's own
  work per job of a ``.map`` on the memory broker; a few per cent of SQS's):
  ``TracingMiddleware(create_spans=False)``, the conventions' switch, makes a batch one PRODUCER span
  whose context every job carries (the consumer spans are then siblings).
  The send span opens in ``on_send``, before the first ``on_enqueue``, and ends once the broker call
  has returned: it times the whole send (signing, S3 offload, the job-state write, the SQS calls), is
  current during it (spans made inside, such as an instrumented boto3 call of ``.delay``, nest under
  it; the async send's calls may run on cloudq's I/O threads, which do not carry it), and a send that
  raises is recorded on it (the exception, status error) before the enqueue raises as ever. The W3C
  ``traceparent``/``tracestate`` go into each envelope's ``headers``: no SQS message attribute is
  spent (SQS allows 10).
* **Consumer** (``on_job``/``on_outcome``): one CONSUMER span ``process <queue>`` per delivery, child of
  the producer's context, current while the task runs (the task's own spans nest under it, in its
  thread too), with the messaging semantic conventions (``messaging.system=aws_sqs``, destination
  name, message id) and ``cloudq.job_id``, ``cloudq.task``, ``cloudq.attempt``. An exception is
  recorded; a retry, a dead letter and a re-send are span events, and the span ends once the fate is
  carried out. SQS's ``AWSTraceHeader`` (X-Ray) is linked when the message has one. A delivery that
  never ran (invalid body, unknown task, ETA ahead) still gets its span, with the outcome.
* **Untrusted headers.** Anyone who can send to the queue writes the headers: a ``traceparent`` that
  is not exactly W3C version 00 (55 characters of lowercase hex and dashes, non-zero ids) is ignored
  and the job starts a new trace; a ``tracestate`` over 512 characters is dropped. Never an error.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cloudq.errors import ConfigurationError, TaskSignal
from cloudq.middleware import CallNext, Middleware

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ConfigurationError("CLOUDQ_TRACING=otel needs opentelemetry-api: pip install 'cloudq[otel]'") from exc

if TYPE_CHECKING:
    from cloudq.envelope import Envelope
    from cloudq.job import Job
    from cloudq.retry import Outcome

__all__ = ["TracingMiddleware", "parent_context", "xray_link"]

MESSAGING_SYSTEM = "aws_sqs"
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}\Z")
_TRACESTATE_MAX = 512
_XRAY = re.compile(r"Root=1-([0-9a-f]{8})-([0-9a-f]{24});Parent=([0-9a-f]{16})(?:;Sampled=([01]))?")

# The span of the job this asyncio task is processing, from on_job to on_outcome.
_current: ContextVar[tuple[Any, Any] | None] = ContextVar("cloudq_tracing_span", default=None)
# The sends in progress (on_send), by the middleware that opened each: the W3C headers of each of its jobs by
# job id, for that middleware's on_enqueue (two in one chain each find their own).
_sending: ContextVar[dict[TracingMiddleware, dict[str, dict[str, str]]]] = ContextVar("cloudq_tracing_send", default={})  # noqa: B039 - never mutated


def parent_context(headers: Mapping[str, str]) -> Context | None:
    """The producer's context from an envelope's headers; None (a new trace) for anything not W3C-valid."""
    traceparent = headers.get("traceparent")
    if not isinstance(traceparent, str) or not _TRACEPARENT.match(traceparent):
        return None
    # Parsed here rather than by TraceContextTextMapPropagator.extract, which checks the same format
    # (ours is stricter) at several times the cost: this runs for every job.
    tracestate = headers.get("tracestate")
    state = TraceState.from_header([tracestate]) if isinstance(tracestate, str) and tracestate and len(tracestate) <= _TRACESTATE_MAX else None
    span_context = SpanContext(
        int(traceparent[3:35], 16), int(traceparent[36:52], 16), is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:55], 16)), trace_state=state,
    )  # fmt: skip
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())  # as extract(): on an empty context


def xray_link(header: str | None) -> Link | None:
    """A link to the X-Ray trace of SQS's ``AWSTraceHeader`` system attribute, when it parses."""
    found = _XRAY.search(header) if header else None
    if found is None:
        return None
    trace_id, span_id = int(found[1] + found[2], 16), int(found[3], 16)
    if not trace_id or not span_id:
        return None
    flags = TraceFlags(TraceFlags.SAMPLED if found[4] == "1" else TraceFlags.DEFAULT)
    return Link(SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags), {"cloudq.link": "AWSTraceHeader"})


class TracingMiddleware(Middleware):
    """Spans around enqueues and jobs; ``tracer_provider`` defaults to the global one (set it before or after)."""

    def __init__(self, tracer_provider: Any = None, *, create_spans: bool = True) -> None:
        from cloudq import __version__

        self.tracer = trace.get_tracer("cloudq", __version__, tracer_provider=tracer_provider)
        self.create_spans = create_spans

    # -- producer -------------------------------------------------------------------------------
    def on_send(self, queue: str, envelopes: Sequence[Envelope]) -> _SendScope:
        return _SendScope(self, queue, envelopes)

    def on_enqueue(self, envelope: Envelope) -> Envelope:
        return self.on_enqueue_batch([envelope])[0]

    def on_enqueue_batch(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Each envelope with its creation context's headers, made by the ``on_send`` around it."""
        carriers = _sending.get().get(self)
        if carriers is None:  # not inside this middleware's on_send (not cloudq's producer): spans that mark the enqueue only
            with self.on_send("", envelopes):
                return self.on_enqueue_batch(envelopes)
        if not carriers:  # tracing is a no-op here (the API without an SDK)
            return list(envelopes)
        return [envelope.with_headers(**carriers[envelope.id]) if envelope.id in carriers else envelope for envelope in envelopes]

    def _start_send(self, queue: str, envelopes: Sequence[Envelope]) -> tuple[Any, dict[str, dict[str, str]]]:
        """The send span (not yet current) and each job's headers, by job id."""
        first = envelopes[0]
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM, "messaging.operation.type": "send", "messaging.operation.name": "send",
            "cloudq.task": first.task,
        }  # fmt: skip
        if queue:
            attributes["messaging.destination.name"] = queue
        if len(envelopes) == 1:
            attributes["cloudq.job_id"] = first.id
        else:
            attributes["messaging.batch.message_count"] = len(envelopes)
        if len(envelopes) == 1 or not self.create_spans:  # the send span's context is every job's creation context
            span = self.tracer.start_span(f"send {first.task}", kind=SpanKind.PRODUCER, attributes=attributes)
            carrier = _carrier(span.get_span_context())
            return span, ({envelope.id: carrier for envelope in envelopes} if carrier else {})
        ambient = otel_context.get_current()
        carriers, links = self._create_spans(ambient, queue, envelopes)
        span = self.tracer.start_span(f"send {first.task}", context=ambient, kind=SpanKind.PRODUCER, attributes=attributes, links=links)
        return span, carriers

    def _create_spans(self, ambient: Context, queue: str, envelopes: Sequence[Envelope]) -> tuple[dict[str, dict[str, str]], list[Link]]:
        """One instant PRODUCER ``create`` span per job, children of the caller's context: their
        headers by job id, and the links of the send span to them."""
        name = f"create {envelopes[0].task}"
        base: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM, "messaging.operation.type": "create", "messaging.operation.name": "create",
            "cloudq.task": envelopes[0].task,
        }  # fmt: skip
        if queue:
            base["messaging.destination.name"] = queue
        now = time.time_ns()  # one clock read for all: they are instants of one call
        carriers: dict[str, dict[str, str]] = {}
        links: list[Link] = []
        for envelope in envelopes:
            span = self.tracer.start_span(name, context=ambient, kind=SpanKind.PRODUCER, attributes={**base, "cloudq.job_id": envelope.id}, start_time=now)
            span.end(end_time=now)
            span_context = span.get_span_context()
            if not span_context.is_valid:  # a no-op tracer: the others would be no better
                break
            carriers[envelope.id] = _carrier(span_context)
            links.append(Link(span_context))
        return carriers, links

    # -- consumer -------------------------------------------------------------------------------
    def _start(self, job: Job) -> Any:
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM, "messaging.operation.type": "process", "messaging.operation.name": "process",
            "messaging.destination.name": job.queue, "messaging.message.id": job.message_id,
            "cloudq.job_id": job.id, "cloudq.task": job.task, "cloudq.attempt": job.attempt,
        }  # fmt: skip
        link = xray_link(getattr(job, "aws_trace_header", None))
        return self.tracer.start_span(
            f"process {job.queue}", context=parent_context(job.headers), kind=SpanKind.CONSUMER,
            attributes=attributes, links=[link] if link is not None else None,
        )  # fmt: skip

    async def on_job(self, job: Job, call_next: CallNext) -> Any:
        span = self._start(job)
        _current.set((job, span))
        token = otel_context.attach(trace.set_span_in_context(span))  # what use_span does, without its generator
        try:
            return await call_next()
        except asyncio.CancelledError:
            span.set_attribute("cloudq.outcome", "cancelled")
            span.end()  # no on_outcome follows a cancelled run
            _current.set(None)
            raise
        except Exception as exc:
            if not isinstance(exc, TaskSignal):
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))
            raise
        finally:
            otel_context.detach(token)

    def on_outcome(self, job: Job, outcome: Outcome) -> None:
        entry = _current.get()
        if entry is not None and entry[0] is job:
            _current.set(None)
            span = entry[1]
        else:  # nothing ran: an invalid body, an unknown task, an ETA still ahead
            span = self._start(job)
            if outcome.error is not None and not isinstance(outcome.error, TaskSignal):
                span.record_exception(outcome.error)
        _annotate(span, job, outcome)
        span.end()


class _SendScope:
    """One send's spans, from ``on_send``'s entry to the broker call's return: the send span is current
    in between, the jobs' headers wait in ``_sending`` for ``on_enqueue``, a send that raises is recorded."""

    __slots__ = ("_context", "_envelopes", "_middleware", "_queue", "_sending", "_span")

    def __init__(self, middleware: TracingMiddleware, queue: str, envelopes: Sequence[Envelope]) -> None:
        self._middleware, self._queue, self._envelopes = middleware, queue, envelopes
        self._span: Any = None
        self._sending: Token[dict[TracingMiddleware, dict[str, dict[str, str]]]] | None = None
        self._context: object = None

    def __enter__(self) -> None:
        carriers: dict[str, dict[str, str]] = {}
        if self._envelopes:
            self._span, carriers = self._middleware._start_send(self._queue, self._envelopes)
        self._sending = _sending.set({**_sending.get(), self._middleware: carriers})
        if self._span is not None:
            self._context = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._sending is not None:
            _sending.reset(self._sending)
        span = self._span
        if span is None:
            return
        otel_context.detach(self._context)  # type: ignore[arg-type]
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))
        span.end()


def _carrier(span_context: SpanContext) -> dict[str, str]:
    """The W3C headers of a span context, as TraceContextTextMapPropagator.inject writes them (at a
    fraction of its cost: a ``.map`` formats one per job); none for an invalid context."""
    if not span_context.is_valid:
        return {}
    carrier = {"traceparent": f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"}
    if span_context.trace_state:
        carrier["tracestate"] = span_context.trace_state.to_header()
    return carrier


def _annotate(span: Any, job: Job, outcome: Outcome) -> None:
    span.set_attribute("cloudq.outcome", outcome.kind)
    if outcome.kind == "retry":
        span.add_event("cloudq.retry", {"cloudq.attempt": job.attempt, "cloudq.delay_s": outcome.delay_s})
    elif outcome.kind == "dead_letter":
        reason = outcome.reason.get("cloudq-reason", "unknown")
        span.add_event("cloudq.dead_letter", {"cloudq.attempt": job.attempt, "cloudq.reason": reason})
        span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {reason}"))
    elif outcome.kind == "reschedule":
        span.add_event("cloudq.reschedule", {"cloudq.delay_s": outcome.delay_s})

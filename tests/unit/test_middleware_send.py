"""Middleware's on_send on the memory broker: a context manager held around the whole send of one .delay/.map/
app.send_task (sync and async alike), entered before on_enqueue and left after the broker call; it sees a failed
send but cannot swallow it, fails the enqueue when it raises on entry, and is only logged when it raises on exit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq.brokers.base import OutgoingMessage
from cloudq.brokers.memory import MemoryBroker
from cloudq.errors import BrokerUnavailable

pytestmark = pytest.mark.unit


class Broker(MemoryBroker):
    """Notes each send in the shared list; raises ``fail`` when it is set."""

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self.log, self.fail = calls, None  # type: ignore[var-annotated]

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        self.log.append(("broker", queue, len(messages)))
        if self.fail is not None:
            raise self.fail
        return super().send(queue, messages)


class Sender(cloudq.Middleware):
    """Records its on_send entry and exit (with the error the send raised, if any) and its on_enqueue."""

    def __init__(self, name: str, calls: list[tuple[Any, ...]], *, swallow: bool = False) -> None:
        self.name, self.calls, self.swallow = name, calls, swallow

    def on_enqueue(self, envelope: cloudq.Envelope) -> cloudq.Envelope:
        self.calls.append((self.name, "enqueue"))
        return envelope

    @contextmanager
    def on_send(self, queue: str, envelopes: Sequence[cloudq.Envelope]) -> Iterator[None]:
        self.calls.append((self.name, "send-in", queue, len(envelopes)))
        try:
            yield
        except Exception as exc:
            self.calls.append((self.name, "send-out", type(exc).__name__))
            if not self.swallow:
                raise
        else:
            self.calls.append((self.name, "send-out", None))


def make_app(calls: list[tuple[Any, ...]], *middleware: cloudq.Middleware) -> tuple[cloudq.App, Broker]:
    broker = Broker(calls)
    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory", queue_prefix="shop-"), broker=broker, middleware=middleware)
    app.task(name="t")(lambda *args: None)
    return app, broker


SENDS: dict[str, tuple[Callable[[cloudq.App], Any], str, int]] = {
    "delay": (lambda app: app.get_task("t").delay(), "default", 1),
    "map": (lambda app: app.get_task("t").map([1, 2]), "default", 2),
    "adelay": (lambda app: asyncio.run(app.get_task("t").adelay()), "default", 1),
    "amap": (lambda app: asyncio.run(app.get_task("t").amap([1, 2])), "default", 2),
    "app.send_task": (lambda app: app.send_task("t", (1,), queue="other"), "other", 1),
}


@pytest.mark.parametrize("how", SENDS)
def test_on_send_is_held_around_the_whole_send_first_outermost(how: str) -> None:
    """Entered first to last before any on_enqueue, with the logical queue and the jobs; left last to first after
    the broker call (which is given the physical queue)."""
    calls: list[tuple[Any, ...]] = []
    app, _ = make_app(calls, Sender("a", calls), Sender("b", calls))
    send, queue, jobs = SENDS[how]
    send(app)
    assert calls == [
        ("a", "send-in", queue, jobs), ("b", "send-in", queue, jobs),
        *[("a", "enqueue")] * jobs, *[("b", "enqueue")] * jobs,
        ("broker", f"shop-{queue}", jobs),
        ("b", "send-out", None), ("a", "send-out", None),
    ]  # fmt: skip


@pytest.mark.parametrize("how", ["delay", "amap"])
def test_on_send_sees_a_failed_send_and_cannot_swallow_it(how: str) -> None:
    """The broker's error is thrown into every on_send (last to first); one that swallows it changes nothing:
    the enqueue raises the broker's error, as without middleware."""
    calls: list[tuple[Any, ...]] = []
    app, broker = make_app(calls, Sender("a", calls), Sender("b", calls, swallow=True))
    broker.fail = BrokerUnavailable("SQS said 503")  # type: ignore[assignment]
    with pytest.raises(BrokerUnavailable, match="SQS said 503"):
        SENDS[how][0](app)
    assert calls[-2:] == [("b", "send-out", "BrokerUnavailable"), ("a", "send-out", "BrokerUnavailable")]


def test_an_on_send_that_raises_on_entry_fails_the_enqueue_and_sends_nothing() -> None:
    """The middleware already entered sees that error on its way out; no on_enqueue runs, no message is sent."""

    class Refuse(cloudq.Middleware):
        def on_send(self, queue: str, envelopes: Sequence[cloudq.Envelope]) -> Any:
            raise ValueError("no sends today")

    calls: list[tuple[Any, ...]] = []
    app, broker = make_app(calls, Sender("a", calls), Refuse(), Sender("c", calls))
    with pytest.raises(ValueError, match="no sends today"):
        app.get_task("t").map([1, 2, 3])
    assert calls == [("a", "send-in", "default", 3), ("a", "send-out", "ValueError")]
    assert broker.stats("shop-default").visible == 0


class Broken(cloudq.Middleware):
    """Its on_send raises on the way out."""

    @contextmanager
    def on_send(self, queue: str, envelopes: Sequence[cloudq.Envelope]) -> Iterator[None]:
        try:
            yield
        finally:
            raise RuntimeError("metrics down")


def test_an_on_send_that_raises_on_exit_is_logged_and_the_jobs_are_sent() -> None:
    """The messages are in the queue: the enqueue returns its refs (raising would invite a second send), the
    error is logged once as middleware.failed, and the middleware outside it still leaves normally."""
    calls: list[tuple[Any, ...]] = []
    app, broker = make_app(calls, Sender("a", calls), Broken())
    with capture_logs() as logs:
        refs = app.get_task("t").map([1, 2])
    assert len(refs) == 2 and all(ref.message_id for ref in refs)
    assert broker.stats("shop-default").visible == 2
    assert calls[-1] == ("a", "send-out", None)
    [failed] = [e for e in logs if e["event"] == "middleware.failed"]
    assert (failed["hook"], failed["middleware"], failed["error"]) == ("on_send", "Broken", "RuntimeError: metrics down")


def test_after_a_failed_send_an_exit_error_is_logged_and_the_send_error_raised() -> None:
    calls: list[tuple[Any, ...]] = []
    app, broker = make_app(calls, Broken())
    broker.fail = BrokerUnavailable("SQS said 503")  # type: ignore[assignment]
    with capture_logs() as logs, pytest.raises(BrokerUnavailable):
        app.get_task("t").delay()
    assert [e["hook"] for e in logs if e["event"] == "middleware.failed"] == ["on_send"]


def test_without_any_on_send_the_producer_holds_nothing_open() -> None:
    """Only middleware that overrides on_send is entered: with none, the chain hands the producer no scope."""
    calls: list[tuple[Any, ...]] = []

    class EnqueueOnly(cloudq.Middleware):
        def on_enqueue(self, envelope: cloudq.Envelope) -> cloudq.Envelope:
            return envelope

    app, _ = make_app(calls, EnqueueOnly(), cloudq.Middleware())
    assert app.middleware.sending("default", [cloudq.Envelope("t")]) is None
    app.add_middleware(Sender("s", calls))
    assert app.middleware.sending("default", [cloudq.Envelope("t")]) is not None

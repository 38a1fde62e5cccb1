"""lambda-local stopped (SIGTERM) in the middle of a poll: what its receives took is visible again at once."""

from __future__ import annotations

import pytest

import cloudq
from cloudq.brokers.memory import MemoryBroker
from cloudq.runtimes.lambda_local import EventSourceMapping

pytestmark = pytest.mark.unit


def test_a_stop_during_the_batching_window_gives_back_the_gathered_records() -> None:
    """Three records gathered while the window waits for more: a stop invokes nothing and leaves them visible."""
    broker = MemoryBroker()
    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory", wait_time_s=5), broker=broker)
    ran: list[int] = []

    @app.task(name="t")
    def t(i: int) -> None:
        ran.append(i)

    t.map([(1,), (2,), (3,)])
    mapping = EventSourceMapping(app, batch_size=10, batching_window_s=30)
    handler = app.lambda_handler
    handler.loop.call_later(0.3, mapping.stop)  # what the SIGTERM handler calls, on the handler's loop
    try:
        stats = mapping.run()
    finally:
        handler.close()
    assert stats.invocations == 0 and ran == []
    queue = broker.stats("default")
    assert (queue.visible, queue.in_flight) == (3, 0)


def test_a_stop_during_an_idle_long_poll_ends_the_run() -> None:
    """An empty queue's long poll is cancelled by the stop; the run returns with nothing taken."""
    broker = MemoryBroker()
    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory", wait_time_s=20), broker=broker)
    app.task(name="t")(lambda: None)
    mapping = EventSourceMapping(app)
    handler = app.lambda_handler
    handler.loop.call_later(0.2, mapping.stop)
    try:
        stats = mapping.run()
    finally:
        handler.close()
    assert stats.invocations == 0 and broker.stats("default").in_flight == 0

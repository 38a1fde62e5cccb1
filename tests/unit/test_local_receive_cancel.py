"""A receive on the local broker that is cancelled mid-way (a worker stopping) gives back what it took."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cloudq.brokers.base import OutgoingMessage
from cloudq.brokers.local import LocalBroker

pytestmark = pytest.mark.unit


async def test_a_cancelled_receive_makes_what_it_took_visible_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = LocalBroker(str(tmp_path / "b.db"))
    broker.send("q", [OutgoingMessage(str(i)) for i in range(3)])
    taken = threading.Event()
    real = broker.receive_now

    def slow_receive_now(*args: Any) -> Any:
        got = real(*args)  # the messages are now invisible for 30 s...
        taken.set()
        time.sleep(0.2)  # ...and the thread is still busy when its caller is cancelled
        return got

    monkeypatch.setattr(broker, "receive_now", slow_receive_now)
    receiving = asyncio.create_task(broker.receive("q", max_messages=10, wait_s=0, visibility_timeout_s=30))
    await asyncio.to_thread(taken.wait, 5)
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving

    monkeypatch.setattr(broker, "receive_now", real)
    again = await broker.receive("q", max_messages=10, wait_s=0)
    assert sorted(d.body for d in again) == ["0", "1", "2"]
    assert [d.receive_count for d in again] == [2, 2, 2]
    broker.close()

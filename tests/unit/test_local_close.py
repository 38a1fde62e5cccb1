"""Closing the local broker waits for a call still running in its thread (its caller was cancelled)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cloudq.brokers.base import OutgoingMessage
from cloudq.brokers.local import LocalBroker

pytestmark = pytest.mark.unit


async def test_aclose_waits_for_a_release_whose_caller_was_cancelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker cancelled mid-release, then closing the broker: the release still lands (the message is visible)."""
    broker = LocalBroker(str(tmp_path / "b.db"))
    broker.send("q", [OutgoingMessage("job")])
    (delivery,) = await broker.receive("q", max_messages=1, wait_s=0, visibility_timeout_s=300)
    real = broker._change_visibility

    def slow_release(*args: object) -> None:
        time.sleep(0.3)  # the thread is still working when its caller is cancelled and the broker closed
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(broker, "_change_visibility", slow_release)
    release = asyncio.ensure_future(broker.change_visibility("q", [delivery], 0))
    await asyncio.sleep(0.05)
    release.cancel()
    await broker.aclose()
    reopened = LocalBroker(str(tmp_path / "b.db"))
    assert (reopened.stats("q").visible, reopened.stats("q").in_flight) == (1, 0)
    reopened.close()

"""A web app's request handler producing on the local broker never blocks its event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

import cloudq

pytestmark = pytest.mark.unit


async def test_adelay_waits_for_a_locked_database_without_blocking_the_loop(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock; adelay waits for it in a thread while the loop keeps serving."""
    path = tmp_path / "broker.db"
    app = cloudq.App("web", settings=cloudq.Settings(broker="local", local_path=str(path)))

    @app.task(name="emails.welcome")
    def welcome(email: str) -> None: ...

    welcome.delay("warm@example.com")  # the file and queue exist, as in a running app
    other = sqlite3.connect(path, isolation_level=None)  # stands for a second process writing
    other.execute("BEGIN IMMEDIATE")
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    sending = asyncio.create_task(welcome.adelay("ada@example.com"))
    await asyncio.sleep(0.3)
    assert not sending.done()  # still waiting for the write lock
    assert len(ticks) >= 10  # the loop kept running meanwhile
    other.execute("COMMIT")
    ref = await asyncio.wait_for(sending, 5)
    ticking.cancel()
    other.close()

    assert ref.task == "emails.welcome" and ref.queue == "default"
    assert app.broker.stats("default").visible == 2
    app.close()

"""A web app's request handler producing on the local broker never blocks its event loop."""

from __future__ import annotations

import asyncio
import sqlite3
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
    ticks_while_waiting = 0

    async def ticker() -> None:
        nonlocal ticks_while_waiting
        while True:
            await asyncio.sleep(0.01)
            if not sending.done():
                ticks_while_waiting += 1

    sending = asyncio.create_task(welcome.adelay("ada@example.com"))
    ticking = asyncio.create_task(ticker())
    # Event order, not speed: the loop turns 10 times while the send still waits for the lock. A send that
    # blocked the loop would let no tick run until SQLite gave up (then the send is done, with an error).
    while ticks_while_waiting < 10 and not sending.done():
        await asyncio.sleep(0.01)
    assert not sending.done() and ticks_while_waiting >= 10
    other.execute("COMMIT")
    ref = await asyncio.wait_for(sending, 5)
    ticking.cancel()
    other.close()

    assert ref.task == "emails.welcome" and ref.queue == "default"
    assert app.broker.stats("default").visible == 2
    app.close()

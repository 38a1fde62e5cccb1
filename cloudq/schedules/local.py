"""Firing periodic tasks without EventBridge: the local broker's scheduler.

On a laptop or a single VM there is no EventBridge, so the worker itself fires periodic tasks from the same
expressions (cron evaluated in the task's time zone). Several workers may share one SQLite file, so firing
is claimed in that file: each task has a row with the time it last fired, and a worker fires only after it
moved that time forward inside one ``BEGIN IMMEDIATE`` transaction. The second worker to look at the same
tick finds it already taken, so each tick fires exactly once however many workers run.

After a pause (a laptop asleep, every worker stopped) the missed ticks collapse into one catch-up firing,
not a burst: the claim moves the row to *now*, and the next tick is computed from there. A task seen for the
first time fires at its next tick, not at once, as cron does.

The claim commits before the job is sent: a worker killed between the two loses that one firing (at most
once, like a missed cron run) rather than ever firing it twice.

``cloudq schedules list`` on the local broker reads the same rows (:func:`local_statuses`), read-only: a
listing must neither create the file nor wait behind a worker's claim.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from cloudq.errors import BrokerError
from cloudq.logs import get_logger
from cloudq.producer import outgoing
from cloudq.schedules.plan import resource_name
from cloudq.tasks import SendOptions

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.schedules.deploy import ScheduleStatus
    from cloudq.schedules.periodic import PeriodicSpec

__all__ = ["LocalScheduler", "due", "last_fire_times", "local_statuses", "owner_of"]

logger = get_logger("cloudq.schedules")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS periodic_fires (
    owner TEXT NOT NULL,
    task TEXT NOT NULL,
    last_fire_at REAL NOT NULL,
    PRIMARY KEY (owner, task)
) WITHOUT ROWID
"""
_BUSY_TIMEOUT_MS = 10_000


def owner_of(app: App) -> str:
    """Whose rows these are: apps (and prefixes, one per environment) may share one file."""
    return f"{app.settings.queue_prefix}{app.name}"


def due(spec: PeriodicSpec, last: float, now: float) -> datetime | None:
    """The tick to fire now, if the schedule has one after ``last`` and not after ``now`` (epoch seconds)."""
    after = datetime.fromtimestamp(last, timezone.utc)
    fire = spec.schedule.next_fire_time(after, spec.tz)
    return fire if fire is not None and fire.timestamp() <= now else None


class LocalScheduler:
    """Claims and sends due firings of an app's periodic tasks; one per worker, sharing the broker's file."""

    def __init__(self, app: App, path: str | None = None, *, clock: Callable[[], float] = time.time, tick_s: float = 1.0) -> None:
        self.app = app
        self.path = path or app.settings.local_path
        self.clock = clock
        self.tick_s = tick_s
        self.owner = owner_of(app)
        self.fired = 0
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self._db.execute(_SCHEMA)

    def claim(self, spec: PeriodicSpec) -> datetime | None:
        """Take this task's due tick for this worker, or None if it is not due or another worker took it."""
        now = self.clock()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT last_fire_at FROM periodic_fires WHERE owner = ? AND task = ?", (self.owner, spec.name)).fetchone()
            fire = due(spec, row[0], now) if row else None
            if row is None or fire is not None:
                self._db.execute("INSERT OR REPLACE INTO periodic_fires VALUES (?, ?, ?)", (self.owner, spec.name, now))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return fire

    async def tick(self) -> int:
        """Fire every periodic task that is due; returns how many this worker fired."""
        fired = 0
        for spec in list(self.app.periodic_tasks.values()):
            fire = await asyncio.to_thread(self.claim, spec)
            if fire is not None:
                await self._send(spec, fire)
                fired += 1
        self.fired += fired
        return fired

    async def _send(self, spec: PeriodicSpec, fire: datetime) -> None:
        envelope = spec.envelope(resource_name(self.app.settings.queue_prefix, spec.name))
        _, message = outgoing(envelope, spec.queue, SendOptions(), self.app.wire.encode)
        await self.app.broker.asend(self.app.settings.queue_name(spec.queue), [message])
        logger.info("schedule.fired", task=spec.name, queue=spec.queue, job_id=envelope.id, fire_time=fire.isoformat())

    async def run(self, stopping: asyncio.Event) -> None:
        """Tick until ``stopping`` is set; a failed tick is logged and retried at the next one."""
        while not stopping.is_set():
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - the worker must keep consuming if firing fails
                logger.warning("schedule.tick_failed", error=f"{type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(stopping.wait(), self.tick_s)
            except asyncio.TimeoutError:
                pass

    async def run_until(self, stopping: asyncio.Event) -> None:
        """:meth:`run`, then close (the worker's scheduler task)."""
        try:
            await self.run(stopping)
        finally:
            self.close()

    def close(self) -> None:
        self._db.close()


# -- read-only, for `cloudq schedules list` ------------------------------------------------------
def last_fire_times(path: str, owner: str) -> dict[str, float]:
    """Task name -> when it last fired (epoch seconds) in the file at ``path``; no file or table yet: none."""
    file = Path(path)
    if not file.exists():
        return {}
    try:
        db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            rows = db.execute("SELECT task, last_fire_at FROM periodic_fires WHERE owner = ?", (owner,)).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):  # no worker has fired anything in this file yet
            return {}
        raise BrokerError(f"cannot read the schedule leases in {path}: {exc}") from exc
    return dict(rows)


def local_statuses(app: App, *, now: datetime | None = None, count: int = 3) -> list[ScheduleStatus]:
    """Each periodic task with its lease state in the local file and its next fire times, as the
    EventBridge listing shows them (:class:`~cloudq.schedules.deploy.ScheduleStatus`)."""
    from cloudq.schedules.deploy import ScheduleStatus

    now = now or datetime.now(timezone.utc)
    fired = last_fire_times(app.settings.local_path, owner_of(app))
    statuses = []
    for spec in sorted(app.periodic_tasks.values(), key=lambda s: s.name):
        name = resource_name(app.settings.queue_prefix, spec.name)
        fires = tuple(spec.schedule.next_fire_times(now, count, spec.tz))
        statuses.append(ScheduleStatus(spec.name, spec.schedule.expression, spec.tz, name, _lease_state(fired.get(spec.name), spec, now), None, fires))
    return statuses


def _lease_state(last: float | None, spec: PeriodicSpec, now: datetime) -> str:
    if last is None:
        return "local: not fired yet (a worker records it at start, then fires it at its next tick)"
    state = f"local: last fired {_at(last, spec.tz)}"
    return state + ("; due now (a running worker fires it within a second)" if due(spec, last, now.timestamp()) else "")


def _at(epoch_s: float, tz: str) -> str:
    zone = timezone.utc if tz.upper() == "UTC" else ZoneInfo(tz)
    return datetime.fromtimestamp(epoch_s, timezone.utc).astimezone(zone).isoformat(timespec="seconds")

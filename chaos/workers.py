"""Worker processes of a chaos run: ``cloudq worker chaos.jobs:app`` as ECS would run them.

Every exit is recorded with the signal the suite sent before it, if any: an exit the suite did not
ask for, or a non-zero exit after a SIGTERM, is a crash.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WorkerPool", "WorkerProcess"]

_TERM_WAIT_S = 60.0  # a SIGTERM'd worker must be gone by then (grace 10 s, plus start-up on a busy machine)


@dataclass(eq=False)
class WorkerProcess:
    name: str
    process: asyncio.subprocess.Process
    started: float
    started_while_down: bool = False
    signalled: str | None = None  # SIGKILL or SIGTERM, the last one the suite sent
    signalled_at: float | None = None
    exited_at: float | None = None
    returncode: int | None = None
    waiter: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.returncode is None

    @property
    def crashed(self) -> bool:
        """Exited, and not because of the suite's signal: SIGKILL kills; SIGTERM exits 0 once the worker
        has installed its handler, and kills it by the default action before (still the suite's doing)."""
        if self.returncode is None:
            return False
        if self.signalled == "SIGKILL":
            return self.returncode != -signal.SIGKILL
        return not (self.signalled == "SIGTERM" and self.returncode in (0, -signal.SIGTERM))

    @property
    def died_of_sigterm(self) -> bool:
        """SIGTERM'd while starting up, before the worker's handler was installed (it had taken no job)."""
        return self.signalled == "SIGTERM" and self.returncode == -signal.SIGTERM


class WorkerPool:
    """Spawns named workers (``w1``, ``w2``, ...), signals them, and keeps every one it ever ran."""

    def __init__(self, root: Path, env: dict[str, str], log_dir: Path, concurrency: int) -> None:
        self.root = root
        self.env = env
        self.log_dir = log_dir
        self.concurrency = concurrency
        self.all: list[WorkerProcess] = []
        self._count = 0
        log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def live(self) -> list[WorkerProcess]:
        return [w for w in self.all if w.alive and w.signalled is None]

    async def spawn(self, *, while_down: bool = False) -> WorkerProcess:
        self._count += 1
        name = f"w{self._count}"
        log = (self.log_dir / f"{name}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cloudq", "worker", "chaos.jobs:app", "-c", str(self.concurrency),
            cwd=self.root, env={**self.env, "CHAOS_WORKER": name}, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        worker = WorkerProcess(name, process, time.monotonic(), started_while_down=while_down)
        worker.waiter = asyncio.create_task(self._watch(worker))
        self.all.append(worker)
        return worker

    async def _watch(self, worker: WorkerProcess) -> None:
        worker.returncode = await worker.process.wait()
        worker.exited_at = time.monotonic()

    def send(self, worker: WorkerProcess, sig: signal.Signals) -> None:
        """Signal ``worker``; a SIGKILL is final: a later SIGTERM (a deploy reaching a worker a storm
        just killed) is not sent, so each exit keeps the signal that caused it."""
        if worker.signalled == "SIGKILL":
            return
        worker.signalled, worker.signalled_at = sig.name, time.monotonic()
        try:
            os.kill(worker.process.pid, sig)
        except ProcessLookupError:
            pass

    async def kill_and_replace(self, worker: WorkerProcess) -> WorkerProcess:
        """A SIGKILL storm's blow: the task dies, ECS starts another at once."""
        self.send(worker, signal.SIGKILL)
        return await self.spawn()

    async def terminate(self, worker: WorkerProcess) -> None:
        """SIGTERM, then wait for the exit (SIGKILL after ``_TERM_WAIT_S``, which is then a crash)."""
        self.send(worker, signal.SIGTERM)
        assert worker.waiter is not None
        if worker.signalled == "SIGKILL":
            await worker.waiter
            return
        try:
            await asyncio.wait_for(asyncio.shield(worker.waiter), _TERM_WAIT_S)
        except asyncio.TimeoutError:
            os.kill(worker.process.pid, signal.SIGKILL)
            await worker.waiter

    async def rolling_deploy(self, counts: Counter[str]) -> None:
        """Every live worker in turn: start its replacement, then SIGTERM it and wait for its exit;
        each SIGTERM is counted in ``counts`` as it is sent (the drain may end the deploy half-way)."""
        for worker in list(self.live):
            if worker.signalled is not None:  # killed by a storm meanwhile: already replaced
                continue
            await self.spawn()
            if worker.signalled is None:
                counts["sigterm (rolling deploy)"] += 1
                await self.terminate(worker)

    async def stop_all(self) -> None:
        """SIGTERM every worker still running and wait for them all (again, if one was spawned meanwhile)."""
        while running := [w for w in self.all if w.alive]:
            await asyncio.gather(*(self.terminate(w) for w in running))

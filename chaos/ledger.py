"""The ledger of a chaos run: the workers' journals folded into exact counts, as they are written.

:meth:`Ledger.feed` reads whatever the journals gained since its last call (whole lines only), so
the orchestrator can watch progress and the final figures come from the same fold.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Ledger", "Run"]

Receive = tuple[str, int]  # (message id, receive count): one delivery


@dataclass(frozen=True, slots=True)
class Run:
    t: float
    worker: str
    delivery: Receive


@dataclass
class Ledger:
    directory: Path
    ok_runs: dict[int, list[Run]] = field(default_factory=lambda: defaultdict(list))
    failed_runs: int = 0
    received: dict[str, set[Receive]] = field(default_factory=lambda: defaultdict(set))
    deleted: dict[str, set[Receive]] = field(default_factory=lambda: defaultdict(set))
    released: dict[str, set[Receive]] = field(default_factory=lambda: defaultdict(set))
    settled: dict[str, dict[Receive, str]] = field(default_factory=lambda: defaultdict(dict))
    dead_lettered: Counter[str] = field(default_factory=Counter)  # message id -> times the consumer dead-lettered it
    outcomes: Counter[str] = field(default_factory=Counter)
    _offsets: dict[Path, int] = field(default_factory=dict)

    def feed(self) -> None:
        for path in sorted(self.directory.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self._offsets[path] = offset + end
            for line in data[:end].splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by a SIGKILL (then followed by the next process's: never here)
                self._add(path.stem, record)

    def _add(self, worker: str, r: dict[str, Any]) -> None:
        event, delivery = r["e"], (r.get("m", ""), r.get("a", 0))
        if event == "run":
            if r["ok"]:
                self.ok_runs[r["k"]].append(Run(r["t"], worker, delivery))
            else:
                self.failed_runs += 1
        elif event == "recv":
            self.received[worker].add(delivery)
        elif event == "ack":
            self.deleted[worker].add(delivery)
        elif event == "vis" and r["s"] == 0:
            self.released[worker].add(delivery)
        elif event == "out":
            self.settled[worker][delivery] = r["o"]
            self.outcomes[r["o"]] += 1
            if r["o"] == "dead_letter":
                self.dead_lettered[delivery[0]] += 1

    def unsettled(self, worker: str) -> set[Receive]:
        """Deliveries ``worker`` received and neither ran to an outcome, deleted nor released: after a
        SIGTERM these are stranded (invisible until their visibility timeout); after a SIGKILL, lost
        with the process and back after the timeout."""
        return self.received[worker] - self.deleted[worker] - self.released[worker] - set(self.settled[worker])

    def duplicate_causes(self, sigkilled: set[str], delete_failed: set[str]) -> tuple[Counter[str], int]:
        """Runs beyond a job's first successful one, by why its message came back: the worker that ran it
        before was SIGKILLed before its delete, or its delete failed (``delete_failed`` workers logged
        worker.ack_failed), or neither (``unexplained``). Also returns the count of jobs run twice or more."""
        causes: Counter[str] = Counter()
        jobs = 0
        for runs in self.ok_runs.values():
            if len(runs) < 2:
                continue
            jobs += 1
            ordered = sorted(runs, key=lambda run: run.t)
            for before in ordered[:-1]:
                if before.delivery in self.deleted[before.worker]:
                    causes["after_delete"] += 1
                elif before.worker in sigkilled:
                    causes["sigkill"] += 1
                elif before.worker in delete_failed:
                    causes["delete_failed"] += 1
                else:
                    causes["unexplained"] += 1
        return causes, jobs

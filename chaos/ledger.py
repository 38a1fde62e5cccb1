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

__all__ = ["Ledger", "Run", "job_key"]

Receive = tuple[str, int]  # (message id, receive count): one delivery
Claimed = tuple[str, int, int]  # (worker, job key, attempt): one claim of the job store


def job_key(job_id: str) -> int | None:
    """The plan's key of a job id (``job-<key>``, :mod:`chaos.plan`); None for anything else."""
    head, _, key = job_id.partition("-")
    return int(key) if head == "job" and key.isdigit() else None


@dataclass(frozen=True, slots=True)
class Run:
    t: float
    worker: str
    delivery: Receive


@dataclass
class Ledger:
    directory: Path
    ok_runs: dict[int, list[Run]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[int, list[Run]] = field(default_factory=lambda: defaultdict(list))
    received: dict[str, set[Receive]] = field(default_factory=lambda: defaultdict(set))
    received_at: dict[Receive, float] = field(default_factory=dict)
    deleted: dict[str, set[Receive]] = field(default_factory=lambda: defaultdict(set))
    deleted_at: dict[Receive, float] = field(default_factory=dict)
    released: dict[str, set[Receive]] = field(default_factory=lambda: defaultdict(set))
    settled: dict[str, dict[Receive, str]] = field(default_factory=lambda: defaultdict(dict))
    dead_lettered: Counter[str] = field(default_factory=Counter)  # message id -> times the consumer dead-lettered it
    outcomes: Counter[str] = field(default_factory=Counter)
    skips: list[Run] = field(default_factory=list)  # deliveries the job store said not to run (outcome duplicate)
    claims: dict[Claimed, tuple[float, str | None]] = field(default_factory=dict)  # -> (asked at, state answered)
    store_succeeded_at: dict[int, float] = field(default_factory=dict)  # job key -> first time the store had it succeeded
    store_writes: Counter[str] = field(default_factory=Counter)  # end states written, by status
    _offsets: dict[Path, int] = field(default_factory=dict)

    @property
    def failed_runs(self) -> int:
        return sum(len(runs) for runs in self.failed.values())

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
            (self.ok_runs if r["ok"] else self.failed)[r["k"]].append(Run(r["t"], worker, delivery))
        elif event == "recv":
            self.received[worker].add(delivery)
            self.received_at[delivery] = r["t"]
        elif event == "ack":
            self.deleted[worker].add(delivery)
            self.deleted_at[delivery] = r["t"]
        elif event == "vis" and r["s"] == 0:
            self.released[worker].add(delivery)
        elif event == "out":
            self.settled[worker][delivery] = r["o"]
            self.outcomes[r["o"]] += 1
            if r["o"] == "dead_letter":
                self.dead_lettered[delivery[0]] += 1
            elif r["o"] == "duplicate":
                self.skips.append(Run(r["t"], worker, delivery))
        elif event in ("claim", "fin") and (key := job_key(r["j"])) is not None:
            self._add_store(worker, key, r)

    def _add_store(self, worker: str, key: int, r: dict[str, Any]) -> None:
        """A claim, or an end state written. The store had a job succeeded by the time a ``fin``
        succeeded record was written, and by the time a claim answered ``succeeded`` (the earlier of the
        two: a SIGKILL may cut the worker between its write and the journal line)."""
        if r["e"] == "claim":
            self.claims[(worker, key, r["a"])] = (r["t0"], r["p"])
            succeeded = r["p"] == "succeeded"
        else:
            self.store_writes[r["s"]] += 1
            succeeded = r["s"] == "succeeded"
        if succeeded and r["t"] < self.store_succeeded_at.get(key, float("inf")):
            self.store_succeeded_at[key] = r["t"]

    def unsettled(self, worker: str) -> set[Receive]:
        """Deliveries ``worker`` received and neither ran to an outcome, deleted nor released: after a
        SIGTERM these are stranded (invisible until their visibility timeout); after a SIGKILL, lost
        with the process and back after the timeout."""
        return self.received[worker] - self.deleted[worker] - self.released[worker] - set(self.settled[worker])

    def duplicate_causes(self, sigkilled: set[str], delete_failed: set[str]) -> tuple[Counter[str], int]:
        """Runs beyond a job's first successful one, by why its message came back (:meth:`came_back`).
        Also returns the count of jobs run twice or more."""
        causes: Counter[str] = Counter()
        jobs = 0
        for runs in self.ok_runs.values():
            if len(runs) < 2:
                continue
            jobs += 1
            ordered = sorted(runs, key=lambda run: run.t)
            for before, again in zip(ordered, ordered[1:]):
                causes[self.came_back(before, again, sigkilled, delete_failed)] += 1
        return causes, jobs

    def came_back(self, before: Run, again: Run, sigkilled: set[str], delete_failed: set[str]) -> str:
        """Why the message of ``before``, a delivery that finished, came back as ``again``: it was received
        again while ``before``'s worker still held it, its delete returning later (``visibility_expired``:
        a heartbeat an outage stopped, or a delete slower than the visibility); it was deleted and still came
        back (``after_delete``); its worker was SIGKILLed before the delete (``sigkill``); the delete failed
        (``delete_failed``: the worker logged worker.ack_failed); or none of these (``unexplained``)."""
        if before.delivery in self.deleted[before.worker]:
            returned = self.received_at.get(again.delivery)
            if returned is not None and returned < self.deleted_at[before.delivery]:
                return "visibility_expired"
            return "after_delete"
        if before.worker in sigkilled:
            return "sigkill"
        if before.worker in delete_failed:
            return "delete_failed"
        return "unexplained"

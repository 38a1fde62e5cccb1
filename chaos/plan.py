"""What a chaos run sends and when it strikes: the job mix and the fault schedule, both from one seed.

Pure: no I/O, so the same seed always gives the same jobs (kinds, bodies) and the same schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cloudq.envelope import Envelope

__all__ = ["GOOD", "POISON_REASONS", "Fault", "PlannedJob", "fault_schedule", "job_plan"]

# Shares of the mix; what is left is split between plain sync (60%) and async (40%) no-ops.
SHARES = {
    "fail_once": 0.02,
    "slow_sync": 0.005,
    "slow_async": 0.005,
    "retry": 0.005,
    "reject": 0.002,
    "unknown_task": 0.001,
    "malformed": 0.001,
    "bad_arguments": 0.001,
}
GOOD = frozenset({"sync", "async", "fail_once", "slow_sync", "slow_async", "retry"})
POISON_REASONS = {"reject": "rejected", "unknown_task": "unknown_task", "malformed": "invalid_envelope", "bad_arguments": "bad_arguments"}


@dataclass(frozen=True, slots=True)
class PlannedJob:
    key: int
    kind: str
    body: str

    @property
    def good(self) -> bool:
        return self.kind in GOOD


def _body(key: int, kind: str) -> str:
    if kind == "malformed":
        return f'{{"v":1,"task":"chaos.sync","args":[{key}]'  # cut short: not JSON
    if kind == "unknown_task":
        return Envelope("chaos.unknown", (key,), id=f"job-{key}").encode()
    if kind == "bad_arguments":
        return Envelope("chaos.sync", (key, "surplus"), id=f"job-{key}").encode()
    return Envelope(f"chaos.{kind}", (key,), id=f"job-{key}").encode()


def job_plan(n: int, seed: int) -> list[PlannedJob]:
    """``n`` jobs of mixed kinds; each kind of the mix appears at least once when ``n`` allows."""
    rng = random.Random(f"jobs-{seed}")
    kinds = [kind for kind, share in SHARES.items() for _ in range(max(1, round(n * share)))]
    kinds = kinds[: max(0, n // 2)]  # a tiny n keeps half its jobs plain
    kinds += ["sync" if rng.random() < 0.6 else "async" for _ in range(n - len(kinds))]
    rng.shuffle(kinds)
    return [PlannedJob(key, kind, _body(key, kind)) for key, kind in enumerate(kinds)]


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled action, ``at_s`` seconds after the workers start (later if the one before it ran long)."""

    at_s: float
    kind: str  # kill, down, up, spawn, throttle, noise, deploy
    value: float = 0.0

    def __str__(self) -> str:
        return f"{self.kind}{'' if not self.value else f' {self.value:g}'}"


def fault_schedule(duration_s: float, seed: int, *, network: bool, outage_s: float = 10.0, throttle_s: float = 30.0) -> list[Fault]:
    """The faults of one run over about ``duration_s``, in time order.

    Network faults (``network``; SQS through the proxy): background latency and connection resets, two
    outages of ``outage_s`` (a worker is started during the first), ``throttle_s`` of 10% throttled or
    5xx calls. Always: a SIGKILL storm (a worker every 2-5 s, replaced at once) and a rolling SIGTERM
    deploy, which on SQS runs while calls are throttled; on the local broker a second storm follows it.
    SIGTERMs are kept out of outages: a worker stopped while the endpoint is down cannot release what it
    holds, whatever it does. The deploy is struck in full before the next fault, however long it takes.
    """
    rng = random.Random(f"faults-{seed}")
    d = duration_s
    faults: list[Fault] = []

    def storm(start: float, end: float) -> None:
        t = start + rng.uniform(0, 2)
        while t < end:
            faults.append(Fault(t, "kill"))
            t += rng.uniform(2, 5)

    if network:
        faults.append(Fault(0.02 * d, "noise", 1))
        storm(0.06 * d, 0.3 * d)
        outage = 0.32 * d + rng.uniform(0, 1)
        faults += [Fault(outage, "down"), Fault(outage + min(3.0, outage_s / 2), "spawn"), Fault(outage + outage_s, "up")]
        throttle = max(0.47 * d, outage + outage_s + 2)
        faults += [Fault(throttle, "throttle", 0.10), Fault(throttle + throttle_s, "throttle", 0.0)]
        faults.append(Fault(throttle + min(5.0, throttle_s / 5), "deploy"))
        outage = max(0.85 * d, throttle + throttle_s + 2)
        faults += [Fault(outage, "down"), Fault(outage + outage_s, "up"), Fault(outage + outage_s + 1, "noise", 0)]
    else:
        storm(0.05 * d, 0.35 * d)
        faults.append(Fault(0.4 * d, "deploy"))
        storm(0.6 * d, 0.9 * d)
    return sorted(faults, key=lambda f: f.at_s)

"""Fixtures for the broker contract: one suite, run against every broker.

``broker`` is parametrized over :data:`BROKERS`. Each entry builds a broker from the
fixture's :class:`FakeClock` and a temporary directory, and says whether it follows that
clock or real time. ``advance(seconds)`` moves the fake clock for in-process brokers and
really sleeps for a real-time one, so a test reads the same for all of them.

Adding SQS (LocalStack) later, the hook:

1. write ``_sqs(clock, tmp_path)`` returning an ``SqsBroker`` for LocalStack; skip when
   LocalStack is down, fail instead when ``CI`` is set;
2. add ``"sqs": BrokerFactory(_sqs, real_time=True)`` to :data:`BROKERS`.

The tests already keep timeouts and delays to 1-2 seconds, call ``ensure_queue`` before
use, and use a fresh queue name per test (SQS queues cannot be flushed cheaply).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudq.brokers.base import Broker
from cloudq.brokers.local import LocalBroker
from cloudq.brokers.memory import MemoryBroker


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class BrokerFactory:
    build: Callable[[FakeClock, Path], Broker]
    real_time: bool = False


def _memory(clock: FakeClock, tmp_path: Path) -> Broker:
    return MemoryBroker(clock=clock)


def _local(clock: FakeClock, tmp_path: Path) -> Broker:
    return LocalBroker(str(tmp_path / "cloudq" / "broker.db"), clock=clock)


BROKERS: dict[str, BrokerFactory] = {
    "memory": BrokerFactory(_memory),
    "local": BrokerFactory(_local),
    # "sqs": BrokerFactory(_sqs, real_time=True),   <- the hook: see the module docstring
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(BROKERS))
def broker_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def broker(broker_name: str, clock: FakeClock, tmp_path: Path) -> Iterator[Broker]:
    built = BROKERS[broker_name].build(clock, tmp_path)
    yield built
    built.close()


@pytest.fixture
def advance(broker_name: str, clock: FakeClock) -> Callable[[float], None]:
    """Let ``seconds`` pass: on the fake clock, or for real on a real-time broker."""
    return time.sleep if BROKERS[broker_name].real_time else clock.advance


@pytest.fixture
def queue() -> str:
    """A fresh standard queue name per test."""
    return f"cloudq-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fifo_queue(queue: str) -> str:
    return f"{queue}.fifo"

"""Fixtures for the broker contract: one suite, run against every broker.

``broker`` is parametrized over :data:`BROKERS`. Each entry builds a broker from the
fixture's :class:`FakeClock` and a temporary directory, and says whether it follows that
clock or real time. ``advance(seconds)`` moves the fake clock for in-process brokers and
really sleeps for a real-time one, so a test reads the same for all of them.

The "sqs" entry is LocalStack over HTTP (marked integration): it follows real time and
creates queues on first use through a test adapter. The tests already keep timeouts and delays to 1-2 seconds, call ``ensure_queue`` before
use, and use a fresh queue name per test (SQS queues cannot be flushed cheaply).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from cloudq.brokers.base import AdminBroker, Broker, QueueConfig, QueueStats
from cloudq.brokers.local import LocalBroker
from cloudq.brokers.memory import MemoryBroker
from cloudq.brokers.sqs import SqsBroker
from cloudq.brokers.sqs_requests import ensure_queue_attributes
from cloudq.errors import QueueNotFound
from cloudq.settings import Settings


class ContractBroker(Broker, AdminBroker, Protocol):
    """What every cloudq broker is: the data plane and the admin plane the suite drives it with."""


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
    build: Callable[[FakeClock, Path], ContractBroker]
    real_time: bool = False


def _memory(clock: FakeClock, tmp_path: Path) -> ContractBroker:
    return MemoryBroker(clock=clock)


def _local(clock: FakeClock, tmp_path: Path) -> ContractBroker:
    return LocalBroker(str(tmp_path / "cloudq" / "broker.db"), clock=clock)


class _AutoCreatingSqsBroker(SqsBroker):
    """SQS on LocalStack, creating a missing queue on first use, as the in-process brokers do.

    A test adapter only: cloudq itself never creates queues at run time.
    """

    def queue_url(self, queue: str) -> str:
        try:
            return super().queue_url(queue)
        except QueueNotFound:
            attributes = ensure_queue_attributes(queue, QueueConfig(), None)
            self._urls[queue] = self._call(queue, "create_queue", {"QueueName": queue, "Attributes": attributes})["QueueUrl"]
            return self._urls[queue]

    async def aqueue_url(self, queue: str) -> str:
        return self.queue_url(queue)

    def stats(self, queue: str) -> QueueStats:
        """Reports a missing queue as missing, like the others, rather than creating it."""
        try:
            SqsBroker.queue_url(self, queue)
        except QueueNotFound:
            return QueueStats(queue, exists=False)
        return super().stats(queue)


def _sqs_factory(endpoint: str) -> Callable[[FakeClock, Path], ContractBroker]:
    def build(clock: FakeClock, tmp_path: Path) -> ContractBroker:
        return _AutoCreatingSqsBroker(Settings(broker="sqs", endpoint_url=endpoint, region="us-east-1"))

    return build


BROKERS: dict[str, BrokerFactory] = {
    "memory": BrokerFactory(_memory),
    "local": BrokerFactory(_local),
    "sqs": BrokerFactory(_memory, real_time=True),  # build replaced per test with the LocalStack endpoint
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.integration) if name == "sqs" else name for name in sorted(BROKERS)])
def broker_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def broker(broker_name: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ContractBroker]:
    """Each broker in turn; "sqs" is LocalStack over HTTP (skipped on a laptop without it, failing on CI)."""
    build = BROKERS[broker_name].build
    if broker_name == "sqs":
        build = _sqs_factory(request.getfixturevalue("localstack_endpoint"))
    built = build(clock, tmp_path)
    yield built
    await built.aclose()
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

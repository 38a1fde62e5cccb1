"""Fixtures for tests against a real LocalStack: apps on SQS with their own queues."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

import cloudq
from cloudq.queues import plan_queues
from cloudq.runtimes.worker import Worker

from ..aws_calls import AwsCalls


@pytest.fixture
def sqs_client(localstack_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client, to act as 'any boto3 program' and to inspect queues."""
    client = boto3.client("sqs", endpoint_url=localstack_endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> AwsCalls:
    """Every AWS call of the clients cloudq builds from now on (botocore event hooks; see tests/aws_calls.py)."""
    return AwsCalls().install(monkeypatch)


@pytest.fixture
def prefix(sqs_client: Any, unique_name: Callable[..., str]) -> Iterator[str]:
    """A queue prefix of this test's own; its queues are deleted afterwards."""
    name = f"{unique_name('q')}-"
    yield name
    for url in sqs_client.list_queues(QueueNamePrefix=name).get("QueueUrls", []):
        sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture
def make_settings(localstack_endpoint: str, unique_name: Callable[..., str]) -> Callable[..., cloudq.Settings]:
    """Settings on LocalStack with a queue prefix of the test's own (no two tests share a queue)."""
    prefix = unique_name("it") + "-"

    def make(**overrides: Any) -> cloudq.Settings:
        values: dict[str, Any] = {
            "broker": "sqs",
            "endpoint_url": localstack_endpoint,
            "region": "us-east-1",
            "queue_prefix": prefix,
            "wait_time_s": 1,
            "visibility_timeout_s": 10,
            "retry_backoff_s": 1,
            "max_retries": 1,
            "log_format": "json",
        }
        values.update(overrides)
        return cloudq.Settings(**values)

    return make


def ensure_queues(app: cloudq.App) -> None:
    """Create the registry's queues and DLQs, as `cloudq queues ensure` does."""
    for plan in plan_queues(app):
        app.broker.ensure_queue(plan.physical, plan.config)


async def run_worker_until(app: cloudq.App, done: Callable[[Worker], bool], *, timeout_s: float = 30, **kwargs: Any) -> Worker:
    """Run a worker until ``done(worker)`` holds, then stop it gracefully."""
    worker = Worker(app, **kwargs)
    runner = asyncio.create_task(worker.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not done(worker):
        if runner.done():
            runner.result()
            break
        if loop.time() > deadline:
            worker.stop("test timeout")
            await runner
            await app.aclose()
            raise AssertionError(f"worker did not reach the expected state in {timeout_s}s: {worker.stats}")
        await asyncio.sleep(0.05)
    worker.stop("test done")
    await asyncio.wait_for(runner, 30)
    await app.aclose()  # aioboto3 clients are bound to this test's loop
    return worker


def receive_all(sqs_client: Any, queue_url: str, expected: int, *, timeout_s: float = 10) -> list[dict[str, Any]]:
    """Receive ``expected`` messages (with attributes) from a queue, with long polls."""
    import time

    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        got = sqs_client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])  # fmt: skip
        messages += got
    return messages

"""The worker and the producer survive an SQS endpoint outage (connection refused) and resume when it comes back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlparse

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq.runtimes.worker import Worker

from ..aws_calls import AwsCalls
from .conftest import ensure_queues, receive_all


class TcpProxy:
    """A loopback TCP proxy to LocalStack that the test can take down and bring back on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers |= {writer, up_writer}
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        except (OSError, asyncio.CancelledError):  # the test tore the proxy down: nothing to report
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)


async def test_worker_keeps_polling_through_an_outage(make_settings: Any, localstack_endpoint: str) -> None:
    """With the endpoint refusing connections the worker logs and backs off; afterwards it runs the job."""
    proxy = TcpProxy(urlparse(localstack_endpoint).port or 4566)
    await proxy.start()
    direct = cloudq.App("shop", settings=make_settings())
    app = cloudq.App("shop", settings=make_settings(endpoint_url=f"http://127.0.0.1:{proxy.port}", queue_prefix=direct.settings.queue_prefix))
    ran: list[int] = []

    @app.task(name="t")
    def t(i: int) -> None:
        ran.append(i)

    direct.task(name="t")(lambda i: None)
    ensure_queues(direct)
    worker = Worker(app)
    with capture_logs() as logs:
        runner = asyncio.create_task(worker.run())
        await asyncio.sleep(1.5)
        await proxy.stop()
        direct.enqueue("t", 1)
        await asyncio.sleep(8)  # longer than botocore's own retries, so the worker sees the outage
        assert ran == [] and not runner.done()
        await proxy.start()
        for _ in range(300):
            if ran:
                break
            await asyncio.sleep(0.1)
        worker.stop()
        await asyncio.wait_for(runner, 30)
    await app.aclose()
    direct.close()
    assert ran == [1]
    assert any(e["event"] == "worker.broker_unavailable" for e in logs)


@pytest.mark.parametrize("path", ["delay", "adelay"])
async def test_the_producer_retries_through_an_outage(path: str, make_settings: Any, localstack_endpoint: str, sqs_client: Any, aws_calls: AwsCalls) -> None:
    """A send made while the endpoint refuses connections is retried (tenacity, after botocore's own retries)
    and goes through once the endpoint is back: the job arrives once, .delay() and .adelay() alike."""
    proxy = TcpProxy(urlparse(localstack_endpoint).port or 4566)
    await proxy.start()
    direct = cloudq.App("shop", settings=make_settings())
    direct.task(name="t")(lambda i: None)
    ensure_queues(direct)
    app = cloudq.App("shop", settings=make_settings(endpoint_url=f"http://127.0.0.1:{proxy.port}", queue_prefix=direct.settings.queue_prefix))
    t = app.task(name="t")(lambda i: None)

    def send(i: int) -> Awaitable[Any]:
        # The sync path in a thread: the proxy runs on this test's loop, which .delay() must not block.
        return asyncio.to_thread(t.delay, i) if path == "delay" else t.adelay(i)

    await send(0)  # the queue URL is resolved and the connections are open
    await proxy.stop()
    sending = asyncio.ensure_future(send(1))
    for _ in range(600):  # until two sends have failed against the closed port
        if len(aws_calls.of("SendMessage")) >= 3 or sending.done():
            break
        await asyncio.sleep(0.05)
    assert not sending.done() and len(aws_calls.of("SendMessage")) >= 3
    await proxy.start()
    ref = await asyncio.wait_for(sending, 60)
    await proxy.stop()
    await app.aclose()
    app.close()

    url = sqs_client.get_queue_url(QueueName=direct.settings.queue_name("default"))["QueueUrl"]
    bodies = [json.loads(m["Body"]) for m in receive_all(sqs_client, url, 2)]
    assert sorted(b["args"] for b in bodies) == [[0], [1]] and ref.id in {b["id"] for b in bodies}
    direct.close()

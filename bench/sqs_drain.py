"""SQS on LocalStack: a cloudq Worker draining N no-op jobs versus the best raw boto3 loop, side by side.

Each round gets a fresh queue. Filling it is timed too: cloudq fills with ``task.map`` (SendMessageBatch of
10), the raw side with its own SendMessageBatch calls, which is the producer section's ``.map`` comparison.

Same concurrency means the same number of messages in flight: cloudq runs ``concurrency`` jobs at once; the
raw loop runs ``ceil(concurrency / 10)`` threads, each holding up to 10 messages (receive 10 -> run them ->
DeleteMessageBatch), so at most ``concurrency`` rounded up to a multiple of 10.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bench.common import Deadline, LocalStackLog, Phase, QueueFactory, Window, diff_calls

__all__ = ["DrainRound", "SqsBench", "raw_body"]

TASK_NAME = "bench.noop"
RAW_WAIT_S = 1  # the same long-poll wait a cloudq worker uses in burst mode


def noop() -> None:
    """The job: nothing, so that the queue machinery is all that is measured."""


def raw_body() -> str:
    """What a raw producer sends for the same job: cloudq's envelope fields, built per message."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {"v": 1, "id": uuid.uuid4().hex, "task": TASK_NAME, "args": [], "kwargs": {}, "enqueued_at": now, "eta": None, "headers": {}},
        separators=(",", ":"),
    )


@dataclass
class DrainRound:
    side: str  # "cloudq" or "raw"
    fill: Phase
    drain: Phase | None  # None when only the fill (the ``.map`` comparison) was asked for


class SqsBench:
    """Runs the rounds; ``queues`` creates and later deletes every queue used."""

    def __init__(self, endpoint: str, client: Any, queues: QueueFactory, log: LocalStackLog, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.client = client
        self.queues = queues
        self.log = log
        self.timeout_s = timeout_s

    # -- cloudq -------------------------------------------------------------------------------
    def make_app(self, concurrency: int, prefix: str) -> tuple[Any, Any]:
        import cloudq

        settings = cloudq.Settings(
            broker="sqs", endpoint_url=self.endpoint, region="us-east-1", queue_prefix=prefix,
            concurrency=concurrency, shutdown_grace_s=2.0,
        )  # fmt: skip
        app = cloudq.App("bench", settings=settings)
        return app, app.task(name=TASK_NAME)(noop)

    def cloudq_round(self, n: int, concurrency: int, label: str, *, drain: bool = True) -> DrainRound:
        return asyncio.run(self._cloudq_round(n, concurrency, label, drain))

    async def _cloudq_round(self, n: int, concurrency: int, label: str, drain: bool) -> DrainRound:
        from cloudq.runtimes.worker import Worker

        prefix = self.queues.name(label) + "-"
        app, task = self.make_app(concurrency, prefix)
        physical = app.settings.queue_name("drain")
        self.queues.create(physical)
        try:
            app.broker.queue_url(physical)  # resolved before timing, as a long-lived producer has it cached
            if drain:
                # A running worker built its aioboto3 client and opened its connection long ago; an empty poll
                # of the still-empty queue does both before timing (aqueue_url would only hit the URL cache
                # filled above, leaving the client, 0.1-0.3 s, to the first receive in the timed window).
                await app.broker.receive(physical, max_messages=1, wait_s=0)
            fill = self._measure(app.broker.calls, n, lambda: task.with_options(queue="drain").map([()] * n))
            if not drain:
                return DrainRound("cloudq", fill, None)
            worker = Worker(app, ["drain"], concurrency=concurrency, max_tasks=n)
            before = dict(app.broker.calls)
            with Window(self.log) as window:
                stats = await asyncio.wait_for(worker.run(), self.timeout_s)
            if stats.succeeded != n:
                raise RuntimeError(f"cloudq worker ran {stats.succeeded} of {n} jobs")
            drained = window.phase(n, diff_calls(app.broker.calls, before))
        finally:
            await app.aclose()
        return DrainRound("cloudq", fill, drained)

    def _measure(self, calls: dict[str, int], n: int, run: Any) -> Phase:
        before = dict(calls)
        with Window(self.log) as window:
            run()
        return window.phase(n, diff_calls(calls, before))

    # -- raw boto3 ----------------------------------------------------------------------------
    def raw_round(self, n: int, concurrency: int, label: str, *, drain: bool = True) -> DrainRound:
        url = self.queues.create(self.queues.name(label))
        fill_calls: Counter[str] = Counter()
        fill = self._measure(fill_calls, n, lambda: self.raw_fill(url, n, fill_calls))
        if not drain:
            return DrainRound("raw", fill, None)
        return DrainRound("raw", fill, self.raw_drain(url, n, threads=max(1, -(-concurrency // 10))))

    def raw_fill(self, url: str, n: int, calls: Counter[str]) -> None:
        for start in range(0, n, 10):
            entries = [{"Id": str(i), "MessageBody": raw_body()} for i in range(min(10, n - start))]
            response = self.client.send_message_batch(QueueUrl=url, Entries=entries)
            calls["send_message_batch"] += 1
            if response.get("Failed"):
                raise RuntimeError(f"raw SendMessageBatch failed: {response['Failed']}")

    def raw_drain(self, url: str, n: int, threads: int) -> Phase:
        """``threads`` loops of ReceiveMessage(10, long poll) -> run -> DeleteMessageBatch until n are deleted."""
        deadline = Deadline(self.timeout_s)
        lock = threading.Lock()
        state = {"done": 0, "finished_at": 0.0}
        calls: Counter[str] = Counter()
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                while state["done"] < n and not deadline.expired():
                    got = self._raw_batch(url, calls, lock)
                    with lock:
                        state["done"] += got
                        if state["done"] >= n and not state["finished_at"]:
                            state["finished_at"] = time.perf_counter()
            except BaseException as exc:  # noqa: BLE001 - reported below, on the main thread
                errors.append(exc)

        workers = [threading.Thread(target=consume, name=f"raw-{i}", daemon=True) for i in range(threads)]
        with Window(self.log) as window:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(max(0.0, deadline.remaining()) + 5)
        if errors:
            raise RuntimeError(f"raw drain failed: {errors[0]!r}") from errors[0]
        if state["done"] < n:
            raise TimeoutError(f"raw drain deleted {state['done']} of {n} messages in {self.timeout_s:.0f} s")
        return window.phase(n, diff_calls(dict(calls), {}), seconds=state["finished_at"] - window.started)

    def _raw_batch(self, url: str, calls: Counter[str], lock: threading.Lock) -> int:
        response = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=RAW_WAIT_S)
        messages = response.get("Messages", [])
        with lock:
            calls["receive_message"] += 1
        if not messages:
            return 0
        for message in messages:
            body = json.loads(message["Body"])
            noop(*body.get("args", ()), **body.get("kwargs", {}))
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        response = self.client.delete_message_batch(QueueUrl=url, Entries=entries)
        with lock:
            calls["delete_message_batch"] += 1
        if response.get("Failed"):
            raise RuntimeError(f"raw DeleteMessageBatch failed: {response['Failed']}")
        return len(messages)

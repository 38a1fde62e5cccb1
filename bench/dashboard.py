"""``python -m bench.dashboard``: how fast the dashboard's queues page is served with 50 queues.

The page reads one GetQueueAttributes (SQS) or one COUNT query (local broker) per physical queue, each
registry queue and its dead-letter queue: 100 calls for 50 queues, run concurrently on the dashboard's
thread pool. Served by uvicorn over HTTP on 127.0.0.1, timed from the request to the last byte, on the local
broker and (with ``CLOUDQ_BENCH_ENDPOINT``) on LocalStack, each with the pool (10) and with one thread, side
by side in alternating rounds. The first request (which also looks up every queue URL on SQS) is reported
apart from the steady state. Targets from issue 14: under 300 ms on the local broker, under 1 s on LocalStack.

    CLOUDQ_BENCH_ENDPOINT=http://127.0.0.1:4566 .venv/bin/python -m bench.dashboard [--queues 50] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import cloudq
from bench.common import aws_defaults, quiet_logs
from cloudq.brokers import OutgoingMessage
from cloudq.queues import plan_queues


class Served:
    """uvicorn serving ``asgi`` on 127.0.0.1 from a thread, for the length of a ``with``."""

    def __init__(self, asgi: Any) -> None:
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def build_app(settings: cloudq.Settings, queues: int) -> cloudq.App:
    app = cloudq.App("bench-dashboard", settings=settings)
    for i in range(queues - 1):  # plus the default queue
        app.task(name=f"t{i:02d}", queue=f"q{i:02d}")(lambda: None)
    for plan in plan_queues(app):
        app.broker.ensure_queue(plan.physical, plan.config)  # type: ignore[attr-defined]
    for plan in plan_queues(app)[:10]:  # some counts to show
        app.broker.send(plan.physical, [OutgoingMessage("{}") for _ in range(3)])
    return app


def get_ms(url: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.perf_counter()
    with opener.open(url, timeout=30) as response:
        body = response.read()
        assert response.status == 200 and b'id="queues-table"' in body
    return (time.perf_counter() - started) * 1000


def measure(app: cloudq.App, rounds: int, pools: tuple[int, ...]) -> dict[str, Any]:
    from cloudq.dashboard import create_app
    from cloudq.dashboard.views import Calls

    asgi = create_app(app)
    dash = asgi.state.dashboard
    calls_of = getattr(app.broker, "calls", None)
    result: dict[str, Any] = {"queues": len(plan_queues(app))}
    with Served(asgi) as served:
        url = f"{served.url}/queues"
        result["first_ms"] = round(get_ms(url), 1)
        before = dict(calls_of) if calls_of is not None else None
        get_ms(url)
        if before is not None:
            result["sqs_calls_per_refresh"] = {k: v - before.get(k, 0) for k, v in calls_of.items() if v != before.get(k, 0)}  # type: ignore[union-attr]
        timings: dict[int, list[float]] = {pool: [] for pool in pools}
        executors = {pool: Calls(pool) for pool in pools}
        for i in range(rounds):
            for pool in pools if i % 2 == 0 else tuple(reversed(pools)):
                dash.calls = executors[pool]
                timings[pool].append(get_ms(url))
        for executor in executors.values():
            executor.close()
    for pool, values in timings.items():
        result[f"pool{pool}_median_ms"] = round(statistics.median(values), 1)
        result[f"pool{pool}_max_ms"] = round(max(values), 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=50, help="registry queues (each with its DLQ; default 50)")
    parser.add_argument("--rounds", type=int, default=10, help="requests per pool size, alternating (default 10)")
    args = parser.parse_args(argv)
    quiet_logs()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(cloudq.Settings(broker="local", local_path=str(Path(tmp) / "q.db")), args.queues)
        report["local"] = measure(app, args.rounds, (10, 1))
        app.close()
    endpoint = os.environ.get("CLOUDQ_BENCH_ENDPOINT")
    if endpoint:
        aws_defaults()
        prefix = f"bd-{uuid.uuid4().hex[:6]}-"
        app = build_app(cloudq.Settings(broker="sqs", endpoint_url=endpoint, region="us-east-1", queue_prefix=prefix), args.queues)
        try:
            report["localstack"] = measure(app, args.rounds, (10, 1))
        finally:
            admin = app.broker
            for name in admin.list_queues(prefix):  # type: ignore[attr-defined]
                admin._call(name, "delete_queue", {"QueueUrl": admin.queue_url(name)})  # type: ignore[attr-defined]
            app.close()
    for side, figures in report.items():
        target = 300 if side == "local" else 1000
        print(f"{side:>10}: {figures['queues']} queues + DLQs: first {figures['first_ms']} ms; steady median "
              f"{figures['pool10_median_ms']} ms (max {figures['pool10_max_ms']}) with 10 threads, "
              f"{figures['pool1_median_ms']} ms with 1; target < {target} ms")  # fmt: skip
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

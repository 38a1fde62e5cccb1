"""SQS on LocalStack: ``task.delay()`` against a raw boto3 ``send_message`` loop, one call at a time.

Both sides send to one fresh queue in alternating blocks of ``BLOCK`` sends (raw, cloudq, cloudq, raw, ...),
so that drift (LocalStack, other load on the machine, the queue's growth) hits both alike; each side's rate
is its sends over its summed time. Each side warms its client with a few untimed sends first: the first
calls of a boto3 client pay for its endpoint resolution and connection.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.common import Deadline, LocalStackLog, Phase, Window, diff_calls
from bench.sqs_drain import SqsBench, raw_body

__all__ = ["delay_rounds"]

WARM_UP = 20
BLOCK = 50


def delay_rounds(sqs: SqsBench, count: int, log: LocalStackLog) -> dict[str, list[Phase]]:
    """``count`` sequential sends per side, in alternating blocks; one Phase per side."""
    name = sqs.queues.name("producer")
    url = sqs.queues.create(name)
    app, task = sqs.make_app(10, prefix="")
    task = task.with_options(queue=name)
    raw_calls: Counter[str] = Counter()
    senders = {"raw": lambda: _raw_send(sqs.client, url, raw_calls), "cloudq": task.delay}
    calls = {"raw": raw_calls, "cloudq": app.broker.calls}
    try:
        for _ in range(WARM_UP):
            senders["raw"]()
            senders["cloudq"]()
        blocks: dict[str, list[Phase]] = {"raw": [], "cloudq": []}
        deadline = Deadline(sqs.timeout_s)
        for i in range(max(1, count // BLOCK)):
            for side in ("raw", "cloudq") if i % 2 == 0 else ("cloudq", "raw"):
                blocks[side].append(_timed_sends(BLOCK, senders[side], calls[side], log, deadline))
    finally:
        app.close()
    return {side: [_merge(phases)] for side, phases in blocks.items()}


def _raw_send(client: Any, url: str, calls: Counter[str]) -> None:
    client.send_message(QueueUrl=url, MessageBody=raw_body())
    calls["send_message"] += 1


def _timed_sends(n: int, send: Any, calls: dict[str, int], log: LocalStackLog, deadline: Deadline) -> Phase:
    if deadline.expired():
        raise TimeoutError(f"producer bench ran past {deadline.seconds:.0f} s")
    before = dict(calls)
    latencies = []
    with Window(log) as window:
        for _ in range(n):
            t0 = time.perf_counter()
            send()
            latencies.append(time.perf_counter() - t0)
    phase = window.phase(n, diff_calls(dict(calls), before))
    phase.latencies_s = latencies
    return phase


def _merge(phases: list[Phase]) -> Phase:
    """Blocks of one side as one phase: summed time, calls and CPU; pooled latencies."""
    calls: Counter[str] = Counter()
    logged: Counter[str] | None = Counter()
    for p in phases:
        calls.update(p.calls)
        if p.log_calls is None:
            logged = None
        elif logged is not None:
            logged.update(p.log_calls)
    ls_cpu = [p.localstack_cpu_s for p in phases]
    return Phase(
        sum(p.tasks for p in phases), sum(p.seconds for p in phases), dict(calls),
        dict(logged) if logged is not None else None, [s for p in phases for s in p.latencies_s],
        cpu_s=sum(p.cpu_s or 0.0 for p in phases),
        localstack_cpu_s=None if None in ls_cpu else sum(x or 0.0 for x in ls_cpu),
    )  # fmt: skip

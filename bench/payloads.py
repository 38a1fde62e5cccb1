"""``python -m bench.payloads``: what S3 offloading and signed envelopes cost, on LocalStack (issue 15).

1. **Calls of one 1 MiB job, end to end**: ``task.delay`` of 1 MiB of arguments with
   ``CLOUDQ_PAYLOAD_BUCKET`` set, then a worker (``max_tasks=1``) runs it; and the same job through the
   Lambda handler in-process (records received from LocalStack). Every AWS call is counted from botocore's
   ``before-call`` event on each client cloudq builds (S3, SQS sync and aioboto3), and from LocalStack's log
   (``AWS s3.PutObject => 200`` lines) when ``CLOUDQ_LOCALSTACK_LOG`` is set. Expected: one PutObject, one
   GetObject and one DeleteObject, plus the job's SQS calls.
2. **Signing overhead**: per round, an unsigned and a signed app (``CLOUDQ_SIGNING_KEYS``), a fresh queue
   each: ``.map()`` of N no-op jobs per side, then in-process workers draining them, the sides taking turns
   every N/4 jobs (A B B A), so that load from other processes on a shared machine hits both alike; signed
   as a percentage of unsigned per round, the median over ``--rounds`` (at least 5) rounds after an untimed
   warm-up round, and the bench process's CPU per job. Also the CPU cost of signing and verifying one
   envelope, without I/O.

    CLOUDQ_BENCH_ENDPOINT=http://127.0.0.1:4566 .venv/bin/python -m bench.payloads [--jobs 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
import timeit
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import BenchError, LocalStackLog, QueueFactory, aws_defaults, median, quiet_logs, require_localstack, sqs_client, unique_name

MIB = 1024 * 1024
KEYS = "bench-signing-key-1,bench-signing-key-0"
_LOG_LINE = re.compile(r"AWS (s3|sqs)\.(\w+) => (\d+)")


# -- counting calls ------------------------------------------------------------------------------------
class CallCounter:
    """Counts ``service.Operation`` of every client built through :mod:`cloudq.aws.clients` while installed."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def _count(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        self.calls[f"{service}.{operation}"] += 1

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call.*.*", self._count)
        return client

    @contextlib.contextmanager
    def installed(self) -> Iterator[CallCounter]:
        from cloudq.aws import clients

        real_client, real_aclient = clients.client, clients.aclient

        def client(*args: Any, **kwargs: Any) -> Any:
            return self.attach(real_client(*args, **kwargs))

        @contextlib.asynccontextmanager
        async def aclient(*args: Any, **kwargs: Any) -> Any:
            async with real_aclient(*args, **kwargs) as built:
                yield self.attach(built)

        clients.client, clients.aclient = client, aclient  # type: ignore[assignment]
        try:
            yield self
        finally:
            clients.client, clients.aclient = real_client, real_aclient  # type: ignore[assignment]


def log_calls(path: Path | None, offset: int) -> dict[str, int] | None:
    if path is None:
        return None
    time.sleep(0.2)  # LocalStack writes its line after answering
    with path.open("rb") as log:
        log.seek(offset)
        return dict(Counter(f"{m[1]}.{m[2]}" for m in _LOG_LINE.finditer(log.read().decode(errors="replace"))))


def log_offset(path: Path | None) -> int:
    return path.stat().st_size if path is not None else 0


def one_job_calls(endpoint: str, queues: QueueFactory, s3: Any, bucket: str, runtime: str, log: Path | None) -> dict[str, Any]:
    """One 1 MiB job enqueued, then run by ``runtime`` (worker or lambda); its AWS calls and what is left in S3."""
    import cloudq
    from cloudq.runtimes.lambda_local import sqs_record
    from cloudq.runtimes.worker import Worker

    prefix = queues.name(f"big-{runtime}") + "-"
    settings = cloudq.Settings(broker="sqs", endpoint_url=endpoint, region="us-east-1", queue_prefix=prefix, payload_bucket=bucket, wait_time_s=1, log_level="WARNING")
    app = cloudq.App("bench-big", settings=settings)
    ran: list[int] = []
    task = app.task(name="bench.digest")(lambda blob: ran.append(len(blob)))
    physical = app.settings.queue_name("default")
    queues.create(physical)
    counter = CallCounter()
    offset = log_offset(log)
    with counter.installed():
        task.delay("x" * MIB)
        if runtime == "worker":
            asyncio.run(_work_one(app, Worker))
        else:
            handler = app.lambda_handler
            try:
                deliveries: list[Any] = []
                while not deliveries:
                    deliveries = handler.run(app.broker.receive(physical, max_messages=10, wait_s=1))
                answer = handler({"Records": [sqs_record(d, region="us-east-1") for d in deliveries]}, None)
            finally:
                handler.close()
            if answer != {"batchItemFailures": []}:
                raise RuntimeError(f"the Lambda handler failed the job: {answer}")
    app.close()
    if ran != [MIB]:
        raise RuntimeError(f"the 1 MiB job did not run once: {ran}")
    logged = log_calls(log, offset)  # before listing the bucket, which LocalStack logs too
    left = s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    return {"runtime": runtime, "calls": dict(sorted(counter.calls.items())), "log_calls": logged, "objects_left": left}


async def _work_one(app: Any, worker_class: Any) -> None:
    worker = worker_class(app, max_tasks=1)
    await asyncio.wait_for(worker.run(), 60)
    await app.aclose()


# -- signing overhead ------------------------------------------------------------------------------------
CHUNKS = 4  # per round and side: the sides take turns every N/4 jobs, so load from other processes hits both alike


def signing_round(endpoint: str, queues: QueueFactory, n: int, label: str, localstack: LocalStackLog) -> dict[str, dict[str, float]]:
    """One round: unsigned and signed apps, a fresh queue each; ``.map()`` of n jobs per side, then a
    worker draining them, both in CHUNKS turns that alternate A B B A. Rates are jobs over summed time;
    CPU is this process's, plus LocalStack's when its pid is known (``CLOUDQ_LOCALSTACK_LOG``)."""
    return asyncio.run(_signing_round(endpoint, queues, n, label, localstack))


async def _signing_round(endpoint: str, queues: QueueFactory, n: int, label: str, localstack: LocalStackLog) -> dict[str, dict[str, float]]:
    sides = {"unsigned": await _signing_app(endpoint, queues, f"{label}u", None), "signed": await _signing_app(endpoint, queues, f"{label}s", KEYS)}
    chunk = n // CHUNKS
    spent = {side: {"map_s": 0.0, "drain_s": 0.0, "map_cpu_s": 0.0, "drain_cpu_s": 0.0, "map_ls_cpu_s": 0.0, "drain_ls_cpu_s": 0.0} for side in sides}
    try:
        for phase in ("map", "drain"):
            for k in range(CHUNKS):
                for side in ("unsigned", "signed") if k % 2 == 0 else ("signed", "unsigned"):
                    app, task = sides[side]
                    wall, cpu, ls_cpu = time.perf_counter(), time.process_time(), localstack.cpu_s() or 0.0
                    if phase == "map":
                        task.map([()] * chunk)
                    else:
                        await _drain(app, chunk, side)
                    spent[side][f"{phase}_s"] += time.perf_counter() - wall
                    spent[side][f"{phase}_cpu_s"] += time.process_time() - cpu
                    spent[side][f"{phase}_ls_cpu_s"] += (localstack.cpu_s() or 0.0) - ls_cpu
    finally:
        for app, _ in sides.values():
            await app.aclose()
    jobs = chunk * CHUNKS
    return {side: {**_per_job(t, jobs, "map"), **_per_job(t, jobs, "drain")} for side, t in spent.items()}


def _cpu(result: dict[str, float], phase: str) -> float:
    return result[f"{phase}_cpu_us"] + result[f"{phase}_localstack_cpu_us"]


def _per_job(spent: dict[str, float], jobs: int, phase: str) -> dict[str, float]:
    return {
        f"{phase}_rate": jobs / spent[f"{phase}_s"],
        f"{phase}_cpu_us": spent[f"{phase}_cpu_s"] / jobs * 1e6,
        f"{phase}_localstack_cpu_us": spent[f"{phase}_ls_cpu_s"] / jobs * 1e6,
    }


async def _signing_app(endpoint: str, queues: QueueFactory, label: str, keys: str | None) -> tuple[Any, Any]:
    import cloudq

    settings = cloudq.Settings(
        broker="sqs", endpoint_url=endpoint, region="us-east-1", queue_prefix=queues.name(label) + "-", concurrency=10,
        shutdown_grace_s=2.0, signing_keys=keys, log_level="WARNING",
    )  # fmt: skip
    app = cloudq.App("bench-sign", settings=settings)
    task = app.task(name="bench.noop")(lambda: None)
    physical = app.settings.queue_name("default")
    queues.create(physical)
    app.broker.queue_url(physical)  # type: ignore[attr-defined]  # resolved before timing, as in bench.sqs_drain
    await app.broker.receive(physical, max_messages=1, wait_s=0)
    # The first receive starts building the aioboto3 client in the background ("auto"); the .map() turns
    # block the loop, so it would otherwise finish inside whichever side drains first. Wait for it, then
    # open its connection, before anything is timed.
    warming = getattr(app.broker, "_warming", None)
    if warming is not None:
        await warming
    await app.broker.receive(physical, max_messages=1, wait_s=0)
    return app, task


async def _drain(app: Any, n: int, side: str) -> None:
    from cloudq.runtimes.worker import Worker

    stats = await asyncio.wait_for(Worker(app, concurrency=10, max_tasks=n).run(), 300)
    if stats.succeeded != n:
        raise RuntimeError(f"{side} worker ran {stats.succeeded} of {n} jobs (dead-lettered {stats.dead_lettered})")


def cpu_costs() -> dict[str, float]:
    """Microseconds to sign one envelope (encode included) and to verify one (json.loads included), against encode/decode alone."""
    import cloudq
    from cloudq.signing import Signer, parse_keys

    signer = Signer(parse_keys(KEYS))
    envelope = cloudq.Envelope("bench.noop", ("acme", 100), {"note": "a" * 100})
    body = signer.encode(envelope)
    runs = 20_000

    def us(stmt: Any) -> float:
        return min(timeit.repeat(stmt, number=runs, repeat=5)) / runs * 1e6

    return {
        "encode_us": us(envelope.encode),
        "sign_and_encode_us": us(lambda: signer.encode(envelope)),
        "decode_us": us(lambda: cloudq.Envelope.decode(body)),
        "verify_and_decode_us": us(lambda: cloudq.Envelope.from_dict(d) if signer.verify(d := json.loads(body)) else None),
    }


# -- report ------------------------------------------------------------------------------------------------
def text(report: dict[str, Any]) -> str:
    lines = ["1 MiB job end to end (botocore before-call events; LocalStack log in brackets when given)"]
    for row in report["one_job"]:
        log = row["log_calls"]
        calls = ", ".join(f"{op} {n}" + (f" [{log.get(op, 0)}]" if log is not None else "") for op, n in row["calls"].items())
        lines.append(f"  {row['runtime']:<7} {calls}; objects left in the bucket: {row['objects_left']}")
    sign = report["signing"]
    lines.append(f"signing, {report['config']['jobs']} no-op jobs, {report['config']['rounds']} rounds per side (median)")
    for key, label in (("map", ".map() jobs/s"), ("drain", "drain jobs/s")):
        rates = f"unsigned {sign['unsigned'][key + '_rate']:8.0f}  signed {sign['signed'][key + '_rate']:8.0f}  signed/unsigned {sign['ratio'][key + '_rate']:6.1%}"
        u, s = sign["unsigned"], sign["signed"]
        cpu_us = f"CPU us/job, bench process + LocalStack: unsigned {u[key + '_cpu_us']:.0f} + {u[key + '_localstack_cpu_us']:.0f}, signed {s[key + '_cpu_us']:.0f} + {s[key + '_localstack_cpu_us']:.0f}"
        lines.append(f"  {label:<14} {rates}   {cpu_us} (jobs per CPU-second, signed/unsigned {sign['ratio'][key + '_cpu']:.1%})")
    cpu = report["cpu"]
    lines.append("  goals: " + ", ".join(f"{name} {'ok' if ok else 'MISSED'}" for name, ok in report["goals"].items()))
    lines.append(
        f"  CPU per envelope: encode {cpu['encode_us']:.1f} us, sign+encode {cpu['sign_and_encode_us']:.1f} us; "
        f"decode {cpu['decode_us']:.1f} us, verify+decode {cpu['verify_and_decode_us']:.1f} us"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.payloads", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-n", type=int, default=2000, help="no-op jobs per signing round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side, alternating (default 5, at least 5)")
    args = parser.parse_args(argv)
    if args.rounds < 5 or args.jobs < 100:
        parser.error("need --rounds >= 5 and --jobs >= 100")
    quiet_logs()
    aws_defaults()
    try:
        endpoint = require_localstack(os.environ.get("CLOUDQ_BENCH_ENDPOINT"))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    report = run(endpoint, args.jobs, args.rounds, os.environ.get("CLOUDQ_LOCALSTACK_LOG"))
    print(text(report))
    print(json.dumps(report, separators=(",", ":")))
    return 0


def run(endpoint: str, jobs: int, rounds_per_side: int, localstack_log: str | None) -> dict[str, Any]:
    """Both parts against ``endpoint``, with a bucket and queues of their own (deleted at the end)."""
    import boto3

    log = Path(localstack_log) if localstack_log else None

    client = sqs_client(endpoint)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    queues = QueueFactory(client, unique_name("pay").removeprefix("pay-"))
    bucket = unique_name("cloudq-bench-payloads")
    s3.create_bucket(Bucket=bucket)
    try:
        one_job = [one_job_calls(endpoint, queues, s3, bucket, runtime, log) for runtime in ("worker", "lambda")]
        localstack = LocalStackLog(localstack_log)
        signing_round(endpoint, queues, 100, "warm", localstack)  # untimed: imports, code paths and connections warmed
        rounds: dict[str, list[dict[str, float]]] = {"unsigned": [], "signed": []}
        for i in range(rounds_per_side):
            for side, result in signing_round(endpoint, queues, jobs, f"s{i}", localstack).items():
                rounds[side].append(result)
    finally:
        queues.delete_all()
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
        client.close()
    keys = ("map_rate", "drain_rate", "map_cpu_us", "drain_cpu_us", "map_localstack_cpu_us", "drain_localstack_cpu_us")
    medians = {side: {key: median(r[key] for r in rs) for key in keys} for side, rs in rounds.items()}
    # per round (both sides measured in the same minutes), then the median over rounds
    ratio = {key: median(s[key] / u[key] for s, u in zip(rounds["signed"], rounds["unsigned"])) for key in ("map_rate", "drain_rate")}
    # the same as CPU: jobs per CPU-second of this process and LocalStack together, less sensitive to other load
    ratio |= {f"{phase}_cpu": median(_cpu(u, phase) / _cpu(s, phase) for s, u in zip(rounds["signed"], rounds["unsigned"])) for phase in ("map", "drain")}
    return {
        "config": {"jobs": jobs, "rounds": rounds_per_side, "endpoint": endpoint, "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "one_job": one_job,
        "signing": {**medians, "ratio": ratio, "rounds": rounds},
        "cpu": cpu_costs(),
        "goals": {
            "one_put_get_delete": all(r["calls"].get(f"s3.{op}") == 1 for r in one_job for op in ("PutObject", "GetObject", "DeleteObject")),
            "signing_within_5pct": min(ratio.values()) >= 0.95,
        },
    }


if __name__ == "__main__":
    sys.exit(main())

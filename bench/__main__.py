"""``python -m bench``: cloudq against raw boto3 on LocalStack, and its local broker against Huey.

Prints one report (a plain text table, then one JSON line). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

from bench.common import BenchError, Deadline, LocalStackLog, QueueFactory, aws_defaults, quiet_logs, require_localstack
from bench.common import sqs_client, start_watchdog, unique_name
from bench.report import Report

SECTIONS = ("sqs", "producer", "cli", "obs", "local", "jobs", "payloads")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-n", type=int, default=2000, help="no-op jobs per drain round (default 2000)")
    parser.add_argument("--concurrency", "-c", type=int, default=10, help="jobs in flight, both sides (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating; the median is reported")
    parser.add_argument("--delay-count", type=int, default=1000, help="single sends per side in the producer bench")
    parser.add_argument("--cli-jobs", type=int, default=5000, help="jobs per round of the spawned-process (cli) section (default 5000)")
    parser.add_argument(
        "--middleware", choices=("auto", "off"), default="auto",
        help="cli section: also run `cloudq worker` with one no-op middleware when cloudq has the API (auto, default)",
    )  # fmt: skip
    parser.add_argument("--obs-rounds", type=int, default=5, help="rounds per side of the obs section (default 5)")
    parser.add_argument("--local-jobs", type=int, default=5000, help="jobs per round of the local bench (default 5000)")
    parser.add_argument("--store-jobs", type=int, default=3000, help="jobs per round of the job-state bench, local store (default 3000)")
    parser.add_argument("--dynamodb-jobs", type=int, default=300, help="jobs per round of the job-state bench on moto's DynamoDB (default 300)")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument("--timeout", type=float, default=900, help="hard limit for the whole run, seconds")
    args = parser.parse_args(argv)
    if min(args.jobs, args.local_jobs, args.cli_jobs) < 20 or args.concurrency < 1 or args.rounds < 1 or args.delay_count < 50:
        parser.error("need --jobs, --local-jobs and --cli-jobs >= 20, --concurrency >= 1, --rounds >= 1, --delay-count >= 50")
    args.only = args.only or list(SECTIONS)
    return args


def alternate(rounds: int, sides: tuple[str, str] = ("raw", "cloudq")) -> list[str]:
    """A B B A A B ...: each side goes first as often as second, so drift and warm-up cancel out."""
    a, b = sides
    return [side for i in range(rounds) for side in ((a, b) if i % 2 == 0 else (b, a))]


def run_sqs(args: argparse.Namespace, report: Report, endpoint: str, log: LocalStackLog, deadline: Deadline) -> None:
    """The SQS drain and the producer, sharing a client and one set of queues deleted at the end."""
    from bench.producer import delay_rounds
    from bench.sqs_drain import SqsBench

    client = sqs_client(endpoint, pool=max(10, args.concurrency))
    queues = QueueFactory(client, unique_name("run").removeprefix("run-"))
    sqs = SqsBench(endpoint, client, queues, log, timeout_s=min(180.0, deadline.remaining()))
    bulk: dict[str, list[Any]] | None = None
    try:
        drain_wanted = "sqs" in args.only
        if drain_wanted or "producer" in args.only:
            bulk = {"raw": [], "cloudq": []}
            drains: dict[str, list[Any]] = {"raw": [], "cloudq": []}
            for i, side in enumerate(alternate(args.rounds)):
                run = sqs.raw_round if side == "raw" else sqs.cloudq_round
                result = run(args.jobs, args.concurrency, f"{side}{i}", drain=drain_wanted)
                bulk[side].append(result.fill)
                if result.drain is not None:
                    drains[side].append(result.drain)
            if drain_wanted:
                report.sqs_drain(drains["raw"], drains["cloudq"], max(1, -(-args.concurrency // 10)), args.concurrency)
        if "producer" in args.only:
            delay = delay_rounds(sqs, args.delay_count, log)
            report.producer(delay, bulk)
    finally:
        left = queues.delete_all()
        if left:
            print(f"bench: could not delete {len(left)} queue(s): {left}", file=sys.stderr)
        client.close()


def run_cli(args: argparse.Namespace, report: Report, endpoint: str, log: LocalStackLog, deadline: Deadline) -> None:
    """Spawned processes: `cloudq worker` against the raw loop's process, and .map() in a fresh script."""
    from bench.cli_drain import CliBench, middleware_available, rotate
    from bench.startup import startup_rounds

    client = sqs_client(endpoint, pool=10)
    queues = QueueFactory(client, unique_name("cli").removeprefix("cli-"))
    cli = CliBench(endpoint, client, queues, log, timeout_s=min(180.0, deadline.remaining()))
    sides: tuple[str, ...] = ("raw", "cloudq", "cloudq-core")
    if args.middleware == "auto" and middleware_available():
        sides += ("cloudq+mw",)
    try:
        for side in sides:  # untimed: compiles bytecode into the bench's cache and warms the file cache
            cli.drain_round(side, 20, args.concurrency, f"warm-{side.replace('+', '-')}")
        drains: dict[str, list[Any]] = {side: [] for side in sides}
        for i, side in enumerate(rotate(args.rounds, sides)):
            drains[side].append(cli.drain_round(side, args.cli_jobs, args.concurrency, f"d{i}-{side.replace('+', '-')}"))
        report.cli_drain(drains, args.concurrency)
        maps: dict[str, list[Any]] = {"raw": [], "cloudq": []}
        for i, side in enumerate(rotate(args.rounds, ("raw", "cloudq"))):
            maps[side].append(cli.map_round(side, args.cli_jobs, f"m{i}-{side}"))
        report.map_fresh(maps)
        report.startup_phases(startup_rounds(cli, args.rounds))
    finally:
        left = queues.delete_all()
        if left:
            print(f"bench: could not delete {len(left)} queue(s): {left}", file=sys.stderr)
        client.close()


def run_obs(args: argparse.Namespace, report: Report, endpoint: str, log: LocalStackLog, deadline: Deadline) -> None:
    """Spawned `cloudq worker` drains: metrics none vs EMF, tracing off vs the OTel SDK (bench/obs_drain.py);
    first, in process, what tracing adds to one `.map()` of 1000 jobs on the memory broker (bench/obs_map.py)."""
    from bench import obs_map
    from bench.cli_drain import CliBench
    from bench.obs_drain import obs_rounds

    mapped = obs_map.summarize(obs_map.map_rounds(1000, max(15, args.obs_rounds)))
    report.data["observability_map"] = mapped
    report.lines += ["", *obs_map.text(mapped).splitlines()]

    client = sqs_client(endpoint, pool=10)
    queues = QueueFactory(client, unique_name("obs").removeprefix("obs-"))
    cli = CliBench(endpoint, client, queues, log, timeout_s=min(180.0, deadline.remaining()))
    try:
        report.observability(obs_rounds(cli, args.cli_jobs, args.concurrency, args.obs_rounds), args.concurrency)
    finally:
        left = queues.delete_all()
        if left:
            print(f"bench: could not delete {len(left)} queue(s): {left}", file=sys.stderr)
        client.close()


def run_local(args: argparse.Namespace, report: Report, deadline: Deadline) -> None:
    from bench.local import cloudq_round, huey_round

    singles = min(500, args.local_jobs)
    huey: dict[str, list[Any]] = {"enqueue_one": [], "enqueue_map": [], "drain": []}
    cloudq: dict[str, list[Any]] = {"enqueue_one": [], "enqueue_map": [], "drain": []}
    for side in alternate(args.rounds, ("huey", "cloudq")):
        timeout_s = min(120.0, deadline.remaining())
        if side == "huey":
            round_, results = huey_round(args.local_jobs, singles, timeout_s), huey
        else:
            round_, results = cloudq_round(args.local_jobs, singles, args.concurrency, timeout_s), cloudq
        for key in results:
            results[key].append(getattr(round_, key))
    report.local(huey, cloudq, args.concurrency)


def run_jobs(args: argparse.Namespace, report: Report, endpoint: str | None, log: LocalStackLog, deadline: Deadline) -> None:
    """Drain with the job store off and on: local (goal >= 80%), and on SQS + moto's DynamoDB when both are up."""
    from bench.jobs import dynamodb_round, local_round

    local: dict[str, list[Any]] = {"none": [], "local": []}
    for side in alternate(args.rounds, ("none", "local")):
        local[side].append(local_round(side, args.store_jobs, args.concurrency, min(120.0, deadline.remaining())))
    dynamodb = os.environ.get("CLOUDQ_BENCH_DYNAMODB")
    remote: dict[str, list[Any]] | None = None
    if dynamodb and endpoint:
        remote = {"none": [], "dynamodb": []}
        prefix = unique_name("jobs") + "-"
        for side in alternate(args.rounds, ("none", "dynamodb")):
            remote[side].append(dynamodb_round(side, args.dynamodb_jobs, args.concurrency, min(180.0, deadline.remaining()), endpoint, dynamodb, prefix, log))
    report.job_state(local, remote, args.concurrency)


def run_payloads(args: argparse.Namespace, report: Report, endpoint: str) -> None:
    """S3 offloading's calls for one 1 MiB job, and signing's cost on .map() and drain (at least 5 rounds)."""
    from bench import payloads

    result = payloads.run(endpoint, args.jobs, max(5, args.rounds), os.environ.get("CLOUDQ_LOCALSTACK_LOG"))
    report.data["payloads"] = result
    report.lines += ["", *payloads.text(result).splitlines()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start_watchdog(args.timeout)
    deadline = Deadline(args.timeout)
    quiet_logs()
    aws_defaults()
    endpoint = os.environ.get("CLOUDQ_BENCH_ENDPOINT")
    needs_sqs = bool({"sqs", "producer", "cli", "obs", "payloads"} & set(args.only)) or ("jobs" in args.only and bool(os.environ.get("CLOUDQ_BENCH_DYNAMODB")))
    try:
        if needs_sqs:
            endpoint = require_localstack(endpoint)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    header = {
        "jobs": args.jobs, "cli_jobs": args.cli_jobs, "local_jobs": args.local_jobs, "concurrency": args.concurrency, "rounds": args.rounds, "only": ",".join(args.only),
        "endpoint": endpoint if needs_sqs else None, "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    report = Report(header)
    log = LocalStackLog(os.environ.get("CLOUDQ_LOCALSTACK_LOG"))
    sections = []
    if {"sqs", "producer"} & set(args.only):
        sections.append(("sqs", lambda: run_sqs(args, report, endpoint or "", log, deadline)))
    if "cli" in args.only:
        sections.append(("cli", lambda: run_cli(args, report, endpoint or "", log, deadline)))
    if "obs" in args.only:
        sections.append(("obs", lambda: run_obs(args, report, endpoint or "", log, deadline)))
    if "local" in args.only:
        sections.append(("local", lambda: run_local(args, report, deadline)))
    if "jobs" in args.only:
        sections.append(("jobs", lambda: run_jobs(args, report, endpoint, log, deadline)))
    if "payloads" in args.only:
        sections.append(("payloads", lambda: run_payloads(args, report, endpoint or "")))
    started = time.perf_counter()
    failed = False
    for name, run in sections:
        try:
            run()
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - report the section as failed, run the others
            failed = True
            report.error(name, f"{type(exc).__name__}: {exc}")
    report.data["config"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(report.text())
    print(json.dumps(report.data, separators=(",", ":")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

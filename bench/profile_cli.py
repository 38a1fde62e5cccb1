"""``python -m bench.profile_cli [--side cloudq|raw] [--jobs N]``: where a spawned consumer's CPU goes while it drains.

Fills a fresh queue with N no-op jobs, spawns the same consumer as the CLI drain bench (:mod:`bench.cli_drain`),
and attaches ``py-spy record --gil --nonblocking`` at its first job (``BENCH_CLOCK_FIRST_PATH``), so start-up is left out;
py-spy stops when the consumer exits after the N-th job. ``--gil`` samples the thread holding the GIL: Python
CPU, not threads waiting in the pool or in epoll. Prints GIL-held milliseconds per job by module (self) and by
function (inclusive), and keeps py-spy's raw stacks (``--out``) for a flame graph.

Needs ``CLOUDQ_BENCH_ENDPOINT`` (a LocalStack) and py-spy (``.venv/bin/pip install py-spy``; not a project
dependency). py-spy's sampling costs the consumer some speed: compare its breakdowns, not its rates.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cli_drain import LOGICAL_QUEUE, ROOT, CliBench, _child_env, _cloudq_command
from bench.common import LocalStackLog, QueueFactory, aws_defaults, require_localstack, sqs_client, unique_name

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(:\d+)?\)$")


def module_of(frame: str) -> str:
    """``Worker._poll (cloudq/runtimes/worker.py:372)`` -> ``cloudq/runtimes/worker``; site-packages trimmed."""
    match = _FRAME.match(frame)
    path = match.group("file") if match else frame
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return path.removesuffix(".py")


def function_of(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)


def summarize(raw: Path, jobs: int, rate_hz: int, top: int) -> str:
    self_ms: collections.Counter[str] = collections.Counter()
    incl_ms: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")[1:]  # the first is the thread
        total += n
        if frames:
            self_ms[module_of(frames[-1])] += n
        for key in {function_of(f) for f in frames}:
            incl_ms[key] += n
    per_job = 1000 / rate_hz / jobs  # ms per job of one sample
    lines = [f"GIL held: {total / rate_hz:.2f} s over {jobs} jobs = {total * per_job:.3f} ms/job ({total} samples at {rate_hz} Hz)",
             "-- self, by module (ms/job)"]  # fmt: skip
    lines += [f"  {n * per_job:7.4f}  {k}" for k, n in self_ms.most_common(top)]
    lines.append("-- inclusive, by function (ms/job)")
    lines += [f"  {n * per_job:7.4f}  {k}" for k, n in incl_ms.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("cloudq", "raw", "cloudq+mw"), default="cloudq")
    parser.add_argument("--jobs", "-n", type=int, default=5000)
    parser.add_argument("--concurrency", "-c", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, help="keep py-spy's raw stacks here")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if py_spy is None:
        print("profile_cli: py-spy not found; `.venv/bin/pip install py-spy`", file=sys.stderr)
        return 2
    aws_defaults()
    endpoint = require_localstack(os.environ.get("CLOUDQ_BENCH_ENDPOINT"))
    client = sqs_client(endpoint)
    queues = QueueFactory(client, unique_name("prof").removeprefix("prof-"))
    bench = CliBench(endpoint, client, queues, LocalStackLog(None), timeout_s=300)
    try:
        prefix = queues.name("p") + "-"
        physical = prefix + LOGICAL_QUEUE
        bench.fill(queues.create(physical), args.jobs)
        with tempfile.TemporaryDirectory(prefix="cloudq-bench-") as tmp:
            first = Path(tmp) / "first"
            raw = args.out or Path(tmp) / "stacks.txt"
            env = {"CLOUDQ_QUEUE_PREFIX": prefix, "BENCH_CLOCK_PATH": str(Path(tmp) / "clock.json"),
                   "BENCH_CLOCK_JOBS": str(args.jobs), "BENCH_CLOCK_FIRST_PATH": str(first)}  # fmt: skip
            if args.side == "raw":
                command = [sys.executable, "-m", "bench.raw_consumer", physical, str(args.jobs)]
            else:
                command = [*_cloudq_command(), "worker", "bench.cli_app:app", "-q", LOGICAL_QUEUE, "-c", str(args.concurrency), "--max-tasks", str(args.jobs)]
                if args.side == "cloudq+mw":
                    env["BENCH_MIDDLEWARE"] = "1"
            child = subprocess.Popen(command, env=_child_env({**bench._cloudq_env(), **env}), cwd=ROOT)
            while not first.exists() and child.poll() is None:
                time.sleep(0.005)
            spy = subprocess.run(
                [py_spy, "record", "--pid", str(child.pid), "--gil", "--threads", "--nonblocking", "-r", str(args.rate), "-f", "raw", "-o", str(raw)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            child.wait(60)
            if not raw.exists():
                print(f"profile_cli: py-spy wrote nothing: {spy.stderr[-500:]}", file=sys.stderr)
                return 1
            print(f"{args.side}: {' '.join(command[-8:])}")
            print(summarize(raw, args.jobs, args.rate, args.top))
    finally:
        queues.delete_all()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.coldstart``: what cloudq adds to a cold start, against ``import boto3`` alone.

Each scenario runs in fresh interpreters, the scenarios alternating round by round. The child times its
import statement with ``time.perf_counter`` (interpreter start-up excluded); separate runs under
``-X importtime`` give the import tree. The goal (issue 4): 50 ms or less over boto3. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ImportLine", "main", "parse_importtime", "scenarios"]

GOAL_MS = 50.0
ROOT = Path(__file__).resolve().parents[1]
# Packages whose presence after the import is worth a column: the heavy ones the handler path should skip.
WATCHED = ("pydantic", "structlog", "rich", "aioboto3", "aiobotocore", "tenacity")
_MARK = "coldstart: statement starts"
_CHILD = f"""
import sys, time
class Uninstalled:  # --without: these packages behave as if they were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in sys.argv[2:]:
            raise ModuleNotFoundError(f"No module named {{name!r}} (coldstart --without)", name=name)
if sys.argv[2:]:
    sys.meta_path.insert(0, Uninstalled())
sys.stderr.write({_MARK!r} + "\\n"); sys.stderr.flush()
t0, c0 = time.perf_counter(), time.process_time()
exec(compile(sys.argv[1], "<coldstart>", "exec"), {{"__name__": "__coldstart__"}})
ms, cpu_ms = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
print("ms", ms)
print("cpu_ms", cpu_ms)
print("loaded", *sorted(p for p in {WATCHED!r} if p in sys.modules))
"""


# The first invocation after the cold start: one SQS record of the example's sync task, on the SQS broker
# (a record that succeeds needs no AWS call: Lambda deletes it). Settings come from CLOUDQ_* as on Lambda.
_FIRST_EVENT = """
import json, os
os.environ.update(CLOUDQ_BROKER="sqs", CLOUDQ_REGION="eu-west-1", CLOUDQ_QUEUE_PREFIX="shop-", CLOUDQ_LOG_LEVEL="WARNING")
{imports}
class Context:
    aws_request_id, function_name = "coldstart", "shop-worker"
    def get_remaining_time_in_millis(self):
        return 60_000
body = json.dumps({{"task": "cloudq.examples.shop.send_welcome_email", "args": ["ada@example.com"]}})
record = {{"messageId": "m-1", "receiptHandle": "r-1", "body": body, "attributes": {{"ApproximateReceiveCount": "1"}},
          "messageAttributes": {{}}, "eventSource": "aws:sqs", "awsRegion": "eu-west-1",
          "eventSourceARN": "arn:aws:sqs:eu-west-1:000000000000:shop-default"}}
result = handler({{"Records": [record]}}, Context())
assert result == {{"batchItemFailures": []}}, result
"""


def scenarios() -> dict[str, str]:
    """Label -> statement; ``lambda`` builds the example app's handler, ``event`` also handles a first record.

    ``deps`` is the floor: the dependencies the Lambda handler path cannot do without (logs are structlog,
    the handler an asyncio loop with a thread pool), imported without cloudq. pydantic is not among them:
    an app built without explicit settings reads CLOUDQ_* through cloudq.settings_env.
    """
    if importlib.util.find_spec("cloudq.examples.shop_lambda") is not None:
        lambda_statement = "import boto3, cloudq.examples.shop_lambda"
        handler_import = "import boto3\nfrom cloudq.examples.shop_lambda import handler"
    else:
        lambda_statement = "import boto3, cloudq.runtimes.aws_lambda\nfrom cloudq.examples.shop import app\napp.lambda_handler"
        handler_import = "import boto3\nfrom cloudq.examples.shop import app\nhandler = app.lambda_handler"
    return {
        "boto3": "import boto3",
        "deps": "import boto3, asyncio, concurrent.futures, structlog",
        "shop": "import boto3, cloudq.examples.shop",
        "lambda": lambda_statement,
        "event": _FIRST_EVENT.format(imports=handler_import).strip(),
    }


@dataclass(frozen=True, slots=True)
class ImportLine:
    """One ``-X importtime`` line, times in milliseconds."""

    name: str
    level: int
    self_ms: float
    cumulative_ms: float


def parse_importtime(stderr: str) -> list[ImportLine]:
    """The import lines after the child's start mark (interpreter start-up left out)."""
    lines: list[ImportLine] = []
    for raw in stderr.split(_MARK, 1)[-1].splitlines():
        if not raw.startswith("import time:") or "self [us]" in raw:
            continue
        self_us, cumulative_us, name = raw[len("import time:") :].split("|")
        level = (len(name) - len(name.lstrip()) - 1) // 2
        lines.append(ImportLine(name.strip(), level, int(self_us) / 1000, int(cumulative_us) / 1000))
    return lines


def after_boto3(lines: list[ImportLine]) -> list[ImportLine]:
    """What the statement imported once ``import boto3`` had finished: what the scenario adds to boto3."""
    for i, line in enumerate(lines):
        if line.level == 0 and line.name == "boto3":
            return lines[i + 1 :]
    return lines


@dataclass
class Samples:
    """Every run of one scenario."""

    statement: str
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    importtime_ms: list[float] = field(default_factory=list)
    extra_importtime_ms: list[float] = field(default_factory=list)
    cumulative_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    self_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    package_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    loaded: list[str] = field(default_factory=list)


def run_child(statement: str, *, importtime: bool, without: Sequence[str] = ()) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_") and k != "PYTHONDONTWRITEBYTECODE"}
    flags = ["-X", "importtime"] if importtime else []
    argv = [sys.executable, *flags, "-c", _CHILD, statement, *without]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{statement!r} failed with exit code {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout, result.stderr


def measure(samples: Samples, without: Sequence[str]) -> None:
    """One plain run (wall time) and one ``-X importtime`` run (the tree)."""
    stdout, _ = run_child(samples.statement, importtime=False, without=without)
    fields = dict(line.split(" ", 1) if " " in line else (line, "") for line in stdout.splitlines())
    samples.wall_ms.append(float(fields["ms"]))
    samples.cpu_ms.append(float(fields["cpu_ms"]))
    samples.loaded = fields["loaded"].split()
    _, stderr = run_child(samples.statement, importtime=True, without=without)
    lines = parse_importtime(stderr)
    extra = after_boto3(lines)
    samples.importtime_ms.append(sum(line.self_ms for line in lines))
    samples.extra_importtime_ms.append(sum(line.self_ms for line in extra))
    packages: dict[str, float] = defaultdict(float)
    for line in extra:
        samples.cumulative_ms[line.name].append(line.cumulative_ms)
        samples.self_ms[line.name].append(line.self_ms)
        packages[line.name.split(".")[0]] += line.self_ms
    for package, ms in packages.items():
        samples.package_ms[package].append(ms)


def run(rounds: int, without: Sequence[str] = ()) -> dict[str, Samples]:
    runs = {label: Samples(statement) for label, statement in scenarios().items()}
    for samples in runs.values():  # warm-up: byte-code caches written, files in the page cache
        run_child(samples.statement, importtime=False, without=without)
    labels = list(runs)
    for i in range(rounds):
        for label in labels if i % 2 == 0 else reversed(labels):  # A B C D, D C B A: none always goes first
            measure(runs[label], without)
    return runs


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarize(runs: dict[str, Samples], top: int) -> dict[str, Any]:
    """Medians per scenario; ``over_boto3_ms`` is the median of the per-round differences (paired runs)."""
    base = runs["boto3"]
    return {label: _summary(s, base, top) for label, s in runs.items()}


def _summary(s: Samples, base: Samples, top: int) -> dict[str, Any]:
    seen = {name: ms for name, ms in s.cumulative_ms.items() if len(ms) * 2 > len(s.wall_ms)}  # in most runs
    ranked = sorted(seen, key=lambda name: median(seen[name]), reverse=True)[:top]
    packages = sorted(s.package_ms, key=lambda p: median(s.package_ms[p]), reverse=True)[:top]
    return {
        "statement": s.statement,
        "wall_ms": round(median(s.wall_ms), 1),
        "over_boto3_ms": round(median([a - b for a, b in zip(s.wall_ms, base.wall_ms)]), 1),
        "cpu_ms": round(median(s.cpu_ms), 1),
        "cpu_over_boto3_ms": round(median([a - b for a, b in zip(s.cpu_ms, base.cpu_ms)]), 1),
        "importtime_ms": round(median(s.importtime_ms), 1),
        "importtime_over_boto3_ms": round(median(s.extra_importtime_ms), 1),
        "loaded": s.loaded,
        "top_cumulative": [
            {"module": name, "cumulative_ms": round(median(seen[name]), 1), "self_ms": round(median(s.self_ms[name]), 1)}
            for name in ranked
        ],
        "packages_ms": {p: round(median(s.package_ms[p]), 1) for p in packages},
        "rounds_wall_ms": [round(ms, 1) for ms in s.wall_ms],
    }


def render(summary: dict[str, Any], rounds: int, without: Sequence[str]) -> str:
    lines = [
        f"cold start: median of {rounds} fresh interpreters per scenario, alternating (python {platform.python_version()})",
        f"as if not installed: {', '.join(without)}" if without else "every installed package importable",
        "",
        f"{'':<8} {'wall':>19} {'cpu':>19} {'-X importtime':>19}",
        f"{'scenario':<8} " + " ".join(f"{'ms':>8} {h:>10}" for h in ("over boto3", "over boto3", "after boto3"))
        + "  heavy packages loaded",
    ]
    for label, row in summary.items():
        cells = [f"{row['wall_ms']:.1f}", f"{row['over_boto3_ms']:+.1f}", f"{row['cpu_ms']:.1f}"]
        cells += [f"{row['cpu_over_boto3_ms']:+.1f}", f"{row['importtime_ms']:.1f}", f"{row['importtime_over_boto3_ms']:.1f}"]
        if label == "boto3":
            cells[1] = cells[3] = cells[5] = ""
        widths = (8, 10, 8, 10, 8, 10)
        lines.append(f"{label:<8} " + " ".join(c.rjust(w) for c, w in zip(cells, widths)) + f"  {' '.join(row['loaded']) or '-'}")
    worst = max(summary[label]["over_boto3_ms"] for label in ("shop", "lambda", "event"))
    deps = summary["deps"]
    lines += [
        "",
        f"goal: {GOAL_MS:g} ms or less over boto3 (issue 4): {'ok' if worst <= GOAL_MS else 'MISSED'} ({worst:+.1f} ms);",
        f"  the deps row alone is {deps['over_boto3_ms']:+.1f} ms: {deps['statement']!r}",
    ]
    for label in ("shop", "lambda", "event"):
        row = summary[label]
        shown = "the lambda scenario, then handler() on one SQS record" if label == "event" else repr(row["statement"])
        lines += ["", f"{label}: {shown}, imports after boto3 (-X importtime medians, ms)"]
        lines.append(f"  {'cumulative':>10} {'self':>7}  module")
        lines += [f"  {m['cumulative_ms']:>10.1f} {m['self_ms']:>7.1f}  {m['module']}" for m in row["top_cumulative"]]
        lines.append("  by package (self times summed): " + ", ".join(f"{p} {ms:.1f}" for p, ms in row["packages_ms"].items()))
    lines += [
        "",
        "'over boto3' is the median of per-round differences. cpu is the child's process time, steadier than wall",
        "time on a busy machine. -X importtime adds its own overhead: compare its columns with each other only.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="runs per scenario (default 11)")
    parser.add_argument("--top", type=int, default=10, help="modules listed per scenario (default 10)")
    parser.add_argument(
        "--without", action="append", default=[], metavar="PACKAGE",
        help="make PACKAGE unimportable in the children, as in a deployment without it (repeatable; e.g. rich)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    try:
        summary = summarize(run(args.rounds, args.without), args.top)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"coldstart: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(render(summary, args.rounds, args.without))
    print(json.dumps({"rounds": args.rounds, "without": args.without, "goal_ms": GOAL_MS, "scenarios": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

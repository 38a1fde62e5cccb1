"""``cloudq worker``, ``cloudq lambda-local`` and ``cloudq health``: the commands a container runs.

The worker is the ECS entry point and ``health`` its Docker HEALTHCHECK (it reads the heartbeat file
the worker rewrites), so both start often and this module imports nothing heavy at the top: the
runtimes, asyncio and logging load inside the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from cloudq.cli.flags import finite_seconds, int_in
from cloudq.cli.loading import APP_HELP, load_app, warn_if_default_region
from cloudq.errors import ConfigurationError

if TYPE_CHECKING:
    from cloudq.runtimes.worker import Worker

__all__ = ["add_health", "add_lambda_local", "add_worker"]

QUEUE_HELP = "logical queue (repeatable; default: every registry queue)"
# The bounds of CLOUDQ_CONCURRENCY (cloudq.settings.Settings.concurrency: ge=1, le=1000), repeated here
# because importing cloudq.settings loads pydantic (~85 ms) at every worker start; a unit test
# (tests/unit/test_cli_flags.py) checks that the two agree.
MIN_CONCURRENCY, MAX_CONCURRENCY = 1, 1000


def cmd_worker(ns: argparse.Namespace) -> int:
    import asyncio

    from cloudq.logs import configure_logging
    from cloudq.runtimes.worker import Worker

    app = load_app(ns.app)
    configure_logging(app.settings.log_format, app.settings.log_level)
    warn_if_default_region(app)
    if ns.metrics_port is not None:
        _serve_metrics(app, ns.metrics_port)
    elif getattr(app.settings, "metrics", "none") == "prometheus":
        from cloudq.logs import get_logger

        get_logger("cloudq.worker").warning("worker.metrics_not_served", hint="CLOUDQ_METRICS=prometheus: pass --metrics-port PORT to serve /metrics")
    worker = Worker(
        app, ns.queue or None, concurrency=ns.concurrency, burst=ns.burst, max_tasks=ns.max_tasks,
        fire_schedules=True if ns.fire_schedules else None,
    )  # fmt: skip

    async def run() -> None:
        worker.install_signal_handlers()
        try:
            await worker.run()
        finally:
            await app.aclose()

    asyncio.run(run())
    _exit_if_threads_linger(worker)
    return 0


def _serve_metrics(app: Any, port: int) -> None:
    """``--metrics-port``: serve the app's Prometheus registry before any message is received; a port
    in use, or metrics that are not Prometheus's, is bad input (exit 2)."""
    from cloudq.observability.prometheus import PrometheusSink

    metrics = app.metrics
    if metrics is None or not isinstance(metrics.sink, PrometheusSink):
        kind = getattr(app.settings, "metrics", "none")
        raise ConfigurationError(f"--metrics-port serves Prometheus metrics: set CLOUDQ_METRICS=prometheus (it is {kind!r})")
    metrics.sink.serve(port)


def _exit_if_threads_linger(worker: Worker) -> None:
    """Sync tasks of this worker past the grace period cannot be killed; their messages were released, so
    exit now. (This worker's only: threads of other workers or handlers in the process are not its business,
    and a test that runs the command in-process must not see pytest exit under it.)"""
    if worker.tasks_still_running():
        sys.stdout.flush()
        os._exit(0)


def cmd_lambda_local(ns: argparse.Namespace) -> int:
    from cloudq.runtimes.lambda_local import EventSourceMapping

    app = load_app(ns.app)
    mapping = EventSourceMapping(
        app,
        ns.queue or None,
        batch_size=ns.batch_size,
        batching_window_s=ns.batching_window,
        timeout_s=ns.timeout,
        burst=ns.burst,
        max_batches=ns.max_batches,
    )
    print(json.dumps(mapping.run().as_dict()))
    return 0


def cmd_health(ns: argparse.Namespace) -> int:
    """Container health check: the worker rewrites its heartbeat file every few seconds while its loop runs."""
    import time
    from pathlib import Path

    from cloudq.settings_env import load_settings

    path = ns.path or load_settings().heartbeat_path
    if not path:
        raise ConfigurationError("no heartbeat file: set CLOUDQ_HEARTBEAT_PATH for the worker and this check")
    try:
        age_s = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        print(f"unhealthy: no heartbeat at {path} (worker not started?)", file=sys.stderr)
        return 1
    if age_s > ns.max_age:
        print(f"unhealthy: heartbeat {age_s:.0f}s old (limit {ns.max_age:g}s)", file=sys.stderr)
        return 1
    print(f"healthy: heartbeat {age_s:.1f}s old")
    return 0


def add_worker(commands: Any) -> None:
    worker = commands.add_parser("worker", help="run a long-polling worker (the ECS entry point)")
    worker.add_argument("app", nargs="?", help=APP_HELP)
    worker.add_argument("-q", "--queue", action="append", help=QUEUE_HELP)
    worker.add_argument("-c", "--concurrency", type=int_in(MIN_CONCURRENCY, MAX_CONCURRENCY), help="jobs at once (default: $CLOUDQ_CONCURRENCY or 10)")
    worker.add_argument("--burst", action="store_true", help="drain the queues, then exit")
    worker.add_argument("--max-tasks", type=int_in(1), help="exit after N jobs")
    worker.add_argument(
        "--fire-schedules", action="store_true",
        help="fire @app.periodic tasks from this worker (automatic on the local broker; on SQS, for one worker only when there is no EventBridge)",
    )  # fmt: skip
    worker.add_argument("--metrics-port", type=int_in(1, 65535), metavar="PORT", help="serve Prometheus /metrics on PORT (needs CLOUDQ_METRICS=prometheus)")
    worker.set_defaults(func=cmd_worker, logs="own")


def add_lambda_local(commands: Any) -> None:
    local = commands.add_parser("lambda-local", help="emulate Lambda's SQS event source mapping against the app's queues")
    local.add_argument("app", nargs="?", help=APP_HELP)
    local.add_argument("-q", "--queue", action="append", help=QUEUE_HELP)
    local.add_argument("--batch-size", type=int, default=10, metavar="N", help="records per invocation, like BatchSize (default 10)")
    local.add_argument("--batching-window", type=float, default=0, metavar="S", help="seconds to gather a batch (MaximumBatchingWindowInSeconds)")
    local.add_argument("--max-batches", type=int, metavar="N", help="exit after N invocations")
    local.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    local.add_argument("--timeout", type=finite_seconds, default=30, metavar="S", help="function timeout in seconds the context counts down (default 30)")
    local.set_defaults(func=cmd_lambda_local)


def add_health(commands: Any) -> None:
    health = commands.add_parser("health", help="exit 0 while the worker's heartbeat file is fresh (container health check)")
    health.add_argument("--path", help="heartbeat file (default: $CLOUDQ_HEARTBEAT_PATH)")
    health.add_argument("--max-age", type=float, default=60.0, help="seconds before the heartbeat counts as stale")
    health.set_defaults(func=cmd_health, logs="none")  # it never logs: no structlog to import

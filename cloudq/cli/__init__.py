"""The ``cloudq`` command (also ``python -m cloudq``).

APP is ``module:attribute`` naming a :class:`cloudq.App`, or taken from ``CLOUDQ_APP``.
Exit codes: 0 success, 1 a runtime failure (broker, missing queue), 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from cloudq.errors import ArgumentsError, CloudQError, ConfigurationError

__all__ = ["load_app", "main"]


def load_app(spec: str | None) -> Any:
    """Import ``module:attribute`` (cwd on sys.path, like gunicorn/uvicorn) and check it is an App."""
    from cloudq.app import App

    spec = spec or os.environ.get("CLOUDQ_APP")
    if not spec:
        raise ConfigurationError("no app given: pass APP as module:attribute or set CLOUDQ_APP")
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"APP must look like module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import app module {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigurationError(f"{spec!r} is not a cloudq.App (got {type(app).__name__})")
    return app


def _json_arg(text: str | None, kind: type, flag: str) -> Any:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{flag} is not valid JSON: {exc}") from exc
    if not isinstance(value, kind):
        raise ConfigurationError(f"{flag} must be a JSON {'array' if kind is list else 'object'}")
    return value


# -- commands ----------------------------------------------------------------------------------
def cmd_worker(ns: argparse.Namespace) -> int:
    from cloudq.logs import configure_logging
    from cloudq.runtimes.worker import Worker

    app = load_app(ns.app)
    configure_logging(app.settings.log_format, app.settings.log_level)
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
    _exit_if_threads_linger()
    return 0


def _exit_if_threads_linger() -> None:
    """Sync tasks past the grace period cannot be killed; their messages were released, so exit now."""
    if any(t.name.startswith("cloudq-task") and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        os._exit(0)


def cmd_enqueue(ns: argparse.Namespace) -> int:
    app_spec, task = (ns.names[0], ns.names[1]) if len(ns.names) == 2 else (None, ns.names[0])
    app = load_app(app_spec)
    args = _json_arg(ns.args, list, "--args")
    kwargs = _json_arg(ns.kwargs, dict, "--kwargs")
    options = {"delay": ns.delay, "queue": ns.queue}
    ref = app.send_task(task, tuple(args), kwargs, **{k: v for k, v in options.items() if v is not None})
    print(json.dumps({"id": ref.id, "task": ref.task, "queue": ref.queue, "message_id": ref.message_id}))
    app.close()
    return 0


def cmd_queues_ensure(ns: argparse.Namespace) -> int:
    from cloudq.queues import plan_queues

    app = load_app(ns.app)
    for plan in plan_queues(app):
        app.broker.ensure_queue(plan.physical, plan.config)
        print(f"{plan.queue}: {plan.physical} (dead letters: {plan.dead_letter_queue}, maxReceiveCount {plan.config.max_receive_count})")
    app.close()
    return 0


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


def cmd_schema(ns: argparse.Namespace) -> int:
    from cloudq.envelope import envelope_schema

    sys.stdout.write(envelope_schema())
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from cloudq.cli.demo import run_demo

    return run_demo(ns.n)


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudq", description="cloudq: a task queue on Amazon SQS")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run a long-polling worker (the ECS entry point)")
    worker.add_argument("app", nargs="?", help="module:attribute (default: $CLOUDQ_APP)")
    worker.add_argument("-q", "--queue", action="append", help="logical queue (repeatable; default: every registry queue)")
    worker.add_argument("-c", "--concurrency", type=int, help="jobs at once (default: $CLOUDQ_CONCURRENCY or 10)")
    worker.add_argument("--burst", action="store_true", help="drain the queues, then exit")
    worker.add_argument("--max-tasks", type=int, help="exit after N jobs")
    worker.add_argument(
        "--fire-schedules", action="store_true",
        help="fire @app.periodic tasks from this worker (automatic on the local broker; on SQS, for one worker only when there is no EventBridge)",
    )  # fmt: skip
    worker.set_defaults(func=cmd_worker)

    enqueue = commands.add_parser("enqueue", help="enqueue one job by task name")
    enqueue.add_argument("names", nargs="+", metavar="[APP] TASK", help="app (or $CLOUDQ_APP) and task name")
    enqueue.add_argument("--args", help="JSON array of positional arguments")
    enqueue.add_argument("--kwargs", help="JSON object of keyword arguments")
    enqueue.add_argument("--delay", type=float, help="seconds before the job may run")
    enqueue.add_argument("--queue", help="logical queue (default: the task's)")
    enqueue.set_defaults(func=cmd_enqueue)

    queues = commands.add_parser("queues", help="queue administration")
    queue_commands = queues.add_subparsers(dest="queues_command", required=True, metavar="SUBCOMMAND")
    ensure = queue_commands.add_parser("ensure", help="create every registry queue and its DLQ with a RedrivePolicy")
    ensure.add_argument("app", nargs="?", help="module:attribute (default: $CLOUDQ_APP)")
    ensure.set_defaults(func=cmd_queues_ensure)

    local = commands.add_parser("lambda-local", help="emulate Lambda's SQS event source mapping against the app's queues")
    local.add_argument("app", nargs="?", help="module:attribute (default: $CLOUDQ_APP)")
    local.add_argument("-q", "--queue", action="append", help="logical queue (repeatable; default: every registry queue)")
    local.add_argument("--batch-size", type=int, default=10, metavar="N", help="records per invocation, like BatchSize (default 10)")
    local.add_argument("--batching-window", type=float, default=0, metavar="S", help="seconds to gather a batch (MaximumBatchingWindowInSeconds)")
    local.add_argument("--max-batches", type=int, metavar="N", help="exit after N invocations")
    local.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    local.add_argument("--timeout", type=float, default=30, metavar="S", help="function timeout in seconds the context counts down (default 30)")
    local.set_defaults(func=cmd_lambda_local)

    health = commands.add_parser("health", help="exit 0 while the worker's heartbeat file is fresh (container health check)")
    health.add_argument("--path", help="heartbeat file (default: $CLOUDQ_HEARTBEAT_PATH)")
    health.add_argument("--max-age", type=float, default=60.0, help="seconds before the heartbeat counts as stale")
    health.set_defaults(func=cmd_health)

    schema = commands.add_parser("schema", help="print the envelope JSON Schema")
    schema.set_defaults(func=cmd_schema)

    demo = commands.add_parser("demo", help="run the example app on the embedded local broker")
    demo.add_argument("-n", type=int, default=5000, help="number of jobs (default 5000, a few seconds)")
    demo.set_defaults(func=cmd_demo)
    importlib.import_module("cloudq.cli.schedules").register(commands)
    importlib.import_module("cloudq.cli.ops").register(commands)
    importlib.import_module("cloudq.cli.infra").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if getattr(ns, "command", None) == "enqueue" and len(ns.names) > 2:
        print("cloudq enqueue: expected [APP] TASK", file=sys.stderr)
        return 2
    if ns.command != "worker":  # commands that print results keep stdout for them
        from cloudq.logs import configure_logging

        configure_logging(os.environ.get("CLOUDQ_LOG_FORMAT", "auto"), os.environ.get("CLOUDQ_LOG_LEVEL", "WARNING"), stream=sys.stderr)  # type: ignore[arg-type]
    try:
        return int(ns.func(ns))
    except (ConfigurationError, ArgumentsError) as exc:
        print(f"cloudq: error: {exc}", file=sys.stderr)
        return 2
    except CloudQError as exc:
        print(f"cloudq: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

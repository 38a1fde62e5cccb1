"""``cloudq enqueue``, ``cloudq schema`` and ``cloudq demo``: jobs by hand.

``enqueue`` sends one job by task name, ``schema`` prints the envelope's JSON Schema for producers
that are not cloudq, and ``demo`` enqueues and drains the example app's jobs on the local broker.
The demo's runner (:mod:`cloudq.cli.demo`) imports the worker and rich, so it loads only when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cloudq.cli.loading import load_app
from cloudq.errors import ConfigurationError

__all__ = ["add_demo", "add_enqueue", "add_schema"]


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


def cmd_enqueue(ns: argparse.Namespace) -> int:
    if len(ns.names) > 2:
        print("cloudq enqueue: expected [APP] TASK", file=sys.stderr)
        return 2
    app_spec, task = (ns.names[0], ns.names[1]) if len(ns.names) == 2 else (None, ns.names[0])
    app = load_app(app_spec)
    args = _json_arg(ns.args, list, "--args")
    kwargs = _json_arg(ns.kwargs, dict, "--kwargs")
    options = {"delay": ns.delay, "queue": ns.queue}
    ref = app.send_task(task, tuple(args), kwargs, **{k: v for k, v in options.items() if v is not None})
    print(json.dumps({"id": ref.id, "task": ref.task, "queue": ref.queue, "message_id": ref.message_id}))
    app.close()
    return 0


def cmd_schema(ns: argparse.Namespace) -> int:
    from cloudq.envelope import envelope_schema

    sys.stdout.write(envelope_schema())
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from cloudq.cli.demo import run_demo

    return run_demo(ns.n)


def add_enqueue(commands: Any) -> None:
    enqueue = commands.add_parser("enqueue", help="enqueue one job by task name")
    enqueue.add_argument("names", nargs="+", metavar="[APP] TASK", help="app (or $CLOUDQ_APP) and task name")
    enqueue.add_argument("--args", help="JSON array of positional arguments")
    enqueue.add_argument("--kwargs", help="JSON object of keyword arguments")
    enqueue.add_argument("--delay", type=float, help="seconds before the job may run")
    enqueue.add_argument("--queue", help="logical queue (default: the task's)")
    enqueue.set_defaults(func=cmd_enqueue)


def add_schema(commands: Any) -> None:
    schema = commands.add_parser("schema", help="print the envelope JSON Schema")
    schema.set_defaults(func=cmd_schema, logs="none")  # it never logs: no structlog to import


def add_demo(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the example app on the embedded local broker")
    demo.add_argument("-n", type=int, default=5000, help="number of jobs (default 5000, a few seconds)")
    demo.set_defaults(func=cmd_demo)

"""``cloudq enqueue``, ``cloudq schema`` and ``cloudq demo``: jobs by hand.

``enqueue`` sends one job by task name, ``schema`` prints the envelope's JSON Schema for producers
that are not cloudq, and ``demo`` enqueues and drains the example app's jobs on the local broker.
The demo's runner (:mod:`cloudq.cli.demo`) imports the worker and rich, so it loads only when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cloudq.cli.flags import MAX_DELAY_S, delay_seconds
from cloudq.cli.loading import load_app, warn_if_default_region
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


class _AppAndTask(argparse.Action):
    """``[APP] TASK`` into ``ns.app`` and ``ns.task``; a wrong count is argparse's own error (usage, exit 2).

    One name is the task (the app from $CLOUDQ_APP), unless it reads as an APP and no $CLOUDQ_APP is set:
    then the task is what is missing, and saying "no app given" would send the user the wrong way.
    """

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, names: Any, option: str | None = None) -> None:
        if len(names) > 2:
            parser.error(f"expected [APP] TASK, got {len(names)} names: {' '.join(names)}")
        if len(names) == 1 and ":" in names[0] and not os.environ.get("CLOUDQ_APP"):
            parser.error(f"no task given: expected [APP] TASK after the app {names[0]!r}")
        ns.app, ns.task = (names[0], names[1]) if len(names) == 2 else (None, names[0])


def _require_registered(app: Any, task: str) -> None:
    """The CLI has the registry loaded: a name it does not hold would only dead-letter later as unknown_task."""
    if task in app.registry:
        return
    import difflib  # only on this error path: every other command start-up skips it

    close = difflib.get_close_matches(task, list(app.registry), n=3)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ConfigurationError(
        f"no task named {task!r} is registered in app {app.name!r}{hint}"
        " (pass --allow-unknown to enqueue a task that another service registers)"
    )


def cmd_enqueue(ns: argparse.Namespace) -> int:
    app, task = load_app(ns.app), ns.task
    if not ns.allow_unknown:
        _require_registered(app, task)
    warn_if_default_region(app)
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
    usage = "cloudq enqueue [APP] TASK [--args JSON] [--kwargs JSON] [--delay SECONDS] [--queue QUEUE] [--allow-unknown]"
    enqueue = commands.add_parser("enqueue", usage=usage, help="enqueue one job by task name")
    enqueue.add_argument("names", nargs="+", action=_AppAndTask, metavar="[APP] TASK", help="app (or $CLOUDQ_APP) and task name")
    enqueue.add_argument("--args", metavar="JSON", help="JSON array of positional arguments")
    enqueue.add_argument("--kwargs", metavar="JSON", help="JSON object of keyword arguments")
    enqueue.add_argument("--delay", type=delay_seconds, metavar="SECONDS", help=f"seconds before the job may run (0..{MAX_DELAY_S})")
    enqueue.add_argument("--queue", help="logical queue (default: the task's)")
    enqueue.add_argument("--allow-unknown", action="store_true", help="enqueue a task name this app does not register (another service runs it)")
    enqueue.set_defaults(func=cmd_enqueue)


def add_schema(commands: Any) -> None:
    schema = commands.add_parser("schema", help="print the envelope JSON Schema")
    schema.set_defaults(func=cmd_schema, logs="none")  # it never logs: no structlog to import


def add_demo(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the example app on the embedded local broker")
    demo.add_argument("-n", type=int, default=5000, help="number of jobs (default 5000, a few seconds)")
    demo.set_defaults(func=cmd_demo)

"""Infrastructure from the task registry: ``cloudq infra render`` and ``cloudq queues ensure``.

``cloudq infra render APP [--format cloudformation|serverless] [-o FILE]``

Prints (or writes to FILE) the app's CloudFormation template, or with ``--format serverless`` the
``resources:`` section for a serverless.yml; both as JSON, which YAML reads too. See :mod:`cloudq.infra.cloudformation` for
what the template holds. Queue names come from the current settings, so render with the target
environment's ``CLOUDQ_QUEUE_PREFIX``.

``cloudq queues ensure APP`` creates the same queues directly instead (each registry queue and its
dead-letter queue with a RedrivePolicy), and the job store's DynamoDB table when ``CLOUDQ_JOB_STORE`` is
``dynamodb`` (on-demand, TTL on ``ttl``), for development and for teams without infrastructure code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from cloudq.cli.loading import APP_HELP, load_app
from cloudq.errors import ConfigurationError

__all__ = ["add_infra", "add_queues"]


def cmd_infra_render(ns: argparse.Namespace) -> int:
    from cloudq.infra.cloudformation import render

    app_spec = ns.app or os.environ.get("CLOUDQ_APP", "")
    app = load_app(app_spec)
    text = render(app, app_spec, ns.format, backlog_age_threshold_s=ns.backlog_age_threshold)
    if ns.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    try:
        Path(ns.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {ns.output}: {exc.strerror or exc}") from exc
    print(f"wrote {ns.output} ({ns.format}, {len(text.splitlines())} lines)", file=sys.stderr)
    return 0


def cmd_queues_ensure(ns: argparse.Namespace) -> int:
    from cloudq.brokers.base import admin_of
    from cloudq.queues import plan_queues

    app = load_app(ns.app)
    for plan in plan_queues(app):
        admin_of(app.broker).ensure_queue(plan.physical, plan.config)
        print(f"{plan.queue}: {plan.physical} (dead letters: {plan.dead_letter_queue}, maxReceiveCount {plan.config.max_receive_count})")
    store = app.job_store
    if store is not None:
        store.ensure()
        where = f"DynamoDB table {getattr(store, 'table', '')}" if store.kind == "dynamodb" else f"{store.kind}"
        print(f"job store: {where}")
    app.close()
    return 0


def add_queues(commands: Any) -> None:
    """Add ``queues ensure`` to the ``cloudq`` parser's subcommands."""
    queues = commands.add_parser("queues", help="queue administration")
    queue_commands = queues.add_subparsers(dest="queues_command", required=True, metavar="SUBCOMMAND")
    ensure = queue_commands.add_parser("ensure", help="create every registry queue and its DLQ with a RedrivePolicy, and the job store's table")
    ensure.add_argument("app", nargs="?", help=APP_HELP)
    ensure.set_defaults(func=cmd_queues_ensure)


def _alarm_seconds(text: str) -> int:
    value = int(text)
    if value < 60:
        raise argparse.ArgumentTypeError("must be at least 60 seconds")
    return value


def add_infra(commands: Any) -> None:
    """Add ``infra render`` to the ``cloudq`` parser's subcommands."""
    infra = commands.add_parser("infra", help="infrastructure as code, generated from the task registry")
    sub = infra.add_subparsers(dest="infra_command", required=True, metavar="SUBCOMMAND")

    render = sub.add_parser("render", help="print the app's CloudFormation template (queues, DLQs, alarms, schedules, IAM, ECS)")
    render.add_argument("app", nargs="?", help=APP_HELP)
    render.add_argument("--format", choices=("cloudformation", "serverless"), default="cloudformation",
                        help="a whole CloudFormation template (default) or a serverless.yml resources: section")  # fmt: skip
    render.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    render.add_argument("--backlog-age-threshold", type=_alarm_seconds, default=300, metavar="S",
                        help="default of the oldest-job age alarm, in seconds (default 300)")  # fmt: skip
    render.set_defaults(func=cmd_infra_render)


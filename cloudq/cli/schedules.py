"""``cloudq schedules sync|list``: periodic tasks on EventBridge (rules, or Scheduler with ``--engine``).

Registered into the main parser by :func:`register`, so the schedule commands live beside their own code
rather than in :mod:`cloudq.cli`. On the local broker no EventBridge is involved (the workers fire the
schedules, leasing each tick in the broker's file), so ``list`` reads that file instead of AWS.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

_ENGINES = ("rules", "scheduler")


def cmd_sync(ns: argparse.Namespace) -> int:
    from cloudq.cli.loading import load_app
    from cloudq.schedules.deploy import AwsClients, sync
    from cloudq.schedules.plan import render_plan

    app = load_app(ns.app)
    clients = AwsClients.from_settings(app.settings)
    try:
        changes = sync(app, clients, engine=ns.engine, prune=ns.prune, dry_run=ns.dry_run)
    finally:
        clients.close()
    if ns.dry_run:
        print(f"plan for app {app.name!r} on EventBridge {ns.engine} (dry run, nothing changed):")
    for line in render_plan(changes, dry_run=ns.dry_run):
        print(line)
    return 0


def cmd_list(ns: argparse.Namespace) -> int:
    from cloudq.cli.loading import load_app

    app = load_app(ns.app)
    statuses = _local_statuses(app) if app.settings.broker == "local" else _aws_statuses(app, ns.engine)
    if not statuses:
        print(f"app {app.name!r} has no periodic tasks")
    for status in statuses:
        print(status.render())
    return 0


def _aws_statuses(app: Any, engine: str) -> list[Any]:
    from cloudq.schedules.deploy import AwsClients, schedule_statuses

    clients = AwsClients.from_settings(app.settings)
    try:
        return schedule_statuses(app, clients, engine=engine)  # type: ignore[arg-type]
    finally:
        clients.close()


def _local_statuses(app: Any) -> list[Any]:
    from cloudq.schedules.local import local_statuses

    statuses = local_statuses(app)
    if statuses:
        print(f"local broker ({app.settings.local_path}): workers fire these themselves, one lease per tick in that file")
    return statuses


def register(commands: Any) -> None:
    """Add ``schedules`` and its subcommands to the ``cloudq`` parser's subcommands."""
    schedules = commands.add_parser("schedules", help="periodic tasks on EventBridge: sync, list")
    sub = schedules.add_subparsers(dest="schedules_command", required=True, metavar="SUBCOMMAND")

    sync = sub.add_parser("sync", help="make EventBridge match the app's periodic tasks (idempotent)")
    sync.add_argument("app", nargs="?", help="module:attribute (default: $CLOUDQ_APP)")
    sync.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sync.add_argument("--prune", action="store_true", help="delete this app's schedules that the registry no longer has")
    sync.add_argument("--engine", choices=_ENGINES, default="rules", help="EventBridge rules (default) or EventBridge Scheduler")
    sync.set_defaults(func=cmd_sync)

    listing = sub.add_parser("list", help="each periodic task, its deployed state and its next fire times")
    listing.add_argument("app", nargs="?", help="module:attribute (default: $CLOUDQ_APP)")
    listing.add_argument("--engine", choices=_ENGINES, default="rules", help="which engine's state to show (on the local broker: none, the file's)")
    listing.set_defaults(func=cmd_list)

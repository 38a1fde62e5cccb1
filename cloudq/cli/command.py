"""The ``cloudq`` command itself: the top-level parser, dispatch, and the exit codes.

Each command group module adds its subcommands to the parser and keeps its heavy imports inside the
commands, so building the parser costs only argparse and the group modules themselves: ``cloudq
health`` (a Docker HEALTHCHECK) and ``cloudq worker`` start without loading what they do not run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cloudq.cli.infra import add_infra, add_queues
from cloudq.cli.jobs import add_demo, add_enqueue, add_schema
from cloudq.cli.ops import register as add_ops
from cloudq.cli.runtimes import add_health, add_lambda_local, add_worker
from cloudq.cli.schedules import register as add_schedules
from cloudq.errors import ArgumentsError, CloudQError, ConfigurationError

__all__ = ["build_parser", "main"]

# In the order ``cloudq --help`` has always listed the commands: part of the CLI's contract.
_ADD_COMMANDS = (
    add_worker, add_enqueue, add_queues, add_lambda_local, add_health, add_schema, add_demo,
    add_schedules, add_ops,  # status, dlq, purge
    add_infra,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudq", description="cloudq: a task queue on Amazon SQS")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _ADD_COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``cloudq`` command; 0 success, 1 a runtime failure (broker, missing queue), 2 bad input."""
    ns = build_parser().parse_args(argv)
    # A command's ``logs`` default: "stderr" (results keep stdout), "own" (the worker configures its
    # own, on stdout), "none" (it never logs, so it skips importing structlog: about 100 ms).
    if getattr(ns, "logs", "stderr") == "stderr":
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

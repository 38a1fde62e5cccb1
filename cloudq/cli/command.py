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
from typing import Any

from cloudq.cli.dashboard import add_dashboard
from cloudq.cli.infra import add_infra, add_queues
from cloudq.cli.job_state import add_cancel, add_job, add_jobs
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
    add_job, add_jobs, add_cancel,  # job state
    add_dashboard,
)  # fmt: skip


class _Version(argparse.Action):
    """``--version``, read only when asked: importlib.metadata costs start-up time every command would pay."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"cloudq {installed_version()}")
        parser.exit()


def installed_version() -> str:
    """The installed distribution's version; a source tree that is not installed has ``cloudq.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloudq")
    except PackageNotFoundError:
        from cloudq import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudq", description="cloudq: a task queue on Amazon SQS")
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--traceback", action="store_true", help="on an error, print the whole traceback too")
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
        return _fail(ns, exc, f"cloudq: error: {exc}", 2)
    except CloudQError as exc:
        return _fail(ns, exc, f"cloudq: {type(exc).__name__}: {exc}", 1)
    except OSError as exc:  # the machine refused: a path that cannot be created (CLOUDQ_LOCAL_PATH), a full disk
        return _fail(ns, exc, f"cloudq: {type(exc).__name__}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), 1)
    except KeyboardInterrupt:
        return 130


def _fail(ns: argparse.Namespace, exc: BaseException, line: str, code: int) -> int:
    """One line for the user; the whole chained traceback above it with ``--traceback``."""
    if ns.traceback:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(line, file=sys.stderr)
    return code

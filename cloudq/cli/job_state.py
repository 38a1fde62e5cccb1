"""``cloudq job``, ``cloudq jobs`` and ``cloudq cancel``: job state from the app's job store.

* ``cloudq job APP JOB_ID [--json]``: one job's state, result or error (exit 1 if the store has no such job);
* ``cloudq jobs APP [--status S] [--task T] [-n N] [--json]``: the newest jobs, filtered;
* ``cloudq cancel APP JOB_ID``: a waiting job will not run, a running one is asked to stop (exit 0); a job
  that has already ended cannot be cancelled (exit 1).

Everything a producer controls (task names, results, error messages) is shown with control characters
escaped, so a job cannot rewrite the terminal that looks at it. The store comes from ``CLOUDQ_JOB_STORE``
as the app's workers see it; without one these commands say how to configure it (exit 2).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from cloudq.cli.loading import load_app
from cloudq.cli.ops import render_table, truncate
from cloudq.errors import ConfigurationError

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.jobs.state import JobState
    from cloudq.jobs.store import JobStore

__all__ = ["add_cancel", "add_job", "add_jobs", "printable"]

STATUSES = ("queued", "running", "retrying", "succeeded", "failed", "dead_lettered", "cancelled")
LIST_HEADERS = ("JOB ID", "TASK", "STATUS", "ATTEMPTS", "PROGRESS", "ENQUEUED AT", "RESULT OR ERROR")
_CELL_CHARS = 60


def printable(text: str) -> str:
    """``text`` with control characters (an ANSI escape, a carriage return) shown as escapes."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _store(app: App) -> JobStore:
    store = app.job_store
    if store is None:
        raise ConfigurationError("no job store is configured for this app: set CLOUDQ_JOB_STORE=local, dynamodb or memory")
    return store


def _outcome_text(state: JobState) -> str:
    if state.error is not None:
        return f"{state.error.reason + ': ' if state.error.reason else ''}{state.error}"
    if state.result_error:
        return f"result not stored: {state.result_error}"
    return "" if state.result is None else json.dumps(state.result)


def _when(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


def describe_job(state: JobState) -> list[str]:
    """``cloudq job``'s lines: one field per line, the result or error in full."""
    progress = "-" if state.progress is None else f"{state.progress:.0%}" + (f" {state.progress_message}" if state.progress_message else "")
    lines = [
        f"job        {state.id}",
        f"task       {state.task or '-'}",
        f"queue      {state.queue or '-'}",
        f"status     {state.status}" + (" (cancel requested)" if state.cancel_requested else ""),
        f"attempts   {state.attempts}",
        f"progress   {progress}",
        f"enqueued   {_when(state.enqueued_at)}",
        f"started    {_when(state.started_at)}",
        f"finished   {_when(state.finished_at)}",
    ]
    if state.error is not None:
        lines.append(f"error      {state.error}" + (f" (reason: {state.error.reason})" if state.error.reason else ""))
    elif state.result_error:
        lines.append(f"result     not stored: {state.result_error}")
    elif state.status == "succeeded":
        lines.append(f"result     {json.dumps(state.result)}")
    return [printable(line) for line in lines]


def cmd_job(ns: argparse.Namespace) -> int:
    app = load_app(ns.app)
    state = app.job(ns.job_id).status()  # JobNotFound: exit 1, one line
    print(json.dumps(state.to_dict()) if ns.json else "\n".join(describe_job(state)))
    return 0


def cmd_jobs(ns: argparse.Namespace) -> int:
    app = load_app(ns.app)
    states = _store(app).list(status=ns.status, task=ns.task, limit=ns.n)
    if ns.json:
        print(json.dumps([s.to_dict() for s in states]))
        return 0
    rows = [
        [s.id, printable(s.task), s.status, str(s.attempts), "-" if s.progress is None else f"{s.progress:.0%}",
         _when(s.enqueued_at), printable(truncate(_outcome_text(s), _CELL_CHARS)) or "-"]
        for s in states
    ]  # fmt: skip
    print(render_table(LIST_HEADERS, rows) if rows else "no jobs")
    return 0


def cmd_cancel(ns: argparse.Namespace) -> int:
    app = load_app(ns.app)
    ref = app.job(ns.job_id)
    if ref.cancel():
        state = ref.status()
        said = "cancel requested: it stops at its next check" if state.status == "running" else "cancelled: it will not run"
        print(f"job {ns.job_id}: {said}")
        return 0
    print(f"job {ns.job_id} has already ended ({ref.status().status}): nothing to cancel")
    return 1


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 10000, got {value}")
    return value


def add_job(commands: Any) -> None:
    job = commands.add_parser("job", help="one job's state, result or error (job store)")
    job.add_argument("app", help="module:attribute")
    job.add_argument("job_id", metavar="JOB_ID")
    job.add_argument("--json", action="store_true", help="print the state as JSON")
    job.set_defaults(func=cmd_job)


def add_jobs(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="the newest jobs of the job store, by status and task")
    jobs.add_argument("app", help="module:attribute")
    jobs.add_argument("--status", choices=STATUSES)
    jobs.add_argument("--task", help="only this task's jobs")
    jobs.add_argument("-n", type=_count, default=20, help="how many (default 20)")
    jobs.add_argument("--json", action="store_true", help="print a JSON list")
    jobs.set_defaults(func=cmd_jobs)


def add_cancel(commands: Any) -> None:
    cancel = commands.add_parser("cancel", help="cancel a job: a waiting one never runs, a running one is asked to stop")
    cancel.add_argument("app", help="module:attribute")
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.set_defaults(func=cmd_cancel)

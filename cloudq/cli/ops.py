"""Operations commands of ``cloudq``: what on-call needs on day one.

* ``cloudq status [APP] [--json]``: one row per registry queue and per dead-letter queue (visible,
  in flight, delayed, exists); exit 1 when any is missing. On a broker whose queues exist as soon as
  they are used (the local one) nothing is ever missing, and every other queue that holds messages
  gets a row too (a job sent with ``enqueue --queue`` to a queue no worker of the app polls).
* ``cloudq status [APP] --watch [--interval S]``: the same queues as a live table (:mod:`cloudq.cli.watch`).
* ``cloudq dlq peek [APP] QUEUE [-n N] [--json] [--traceback]``: the dead letters of logical QUEUE
  with task, arguments, attempts and the reason cloudq recorded (the error in full; the stored
  traceback with ``--traceback``), without deleting them. A body offloaded to S3 (the extended
  client's pointer) is shown as the job it points to.
* ``cloudq dlq redrive [APP] QUEUE [--max N]``: move them back to QUEUE, where workers run them as
  fresh jobs (SQS's message move task; a receive/send/delete copy with ``--max``).
* ``cloudq purge [APP] QUEUE [--dlq] [--yes]``: delete every message, after a confirmation.

They use the brokers' admin protocol (:class:`~cloudq.brokers.base.AdminBroker`: ``stats``, ``peek``,
``move_messages``, ``purge``) through :mod:`cloudq.admin`, which the dashboard shares, so they work on SQS, the local and the memory broker alike. Exit codes as in :mod:`cloudq.cli`: 0 success, 1 a runtime failure
(a missing queue, the broker, a declined purge), 2 bad input (an unknown queue, a purge that cannot
ask for confirmation).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from cloudq.admin import dead_letter_record, queues_on_use, require_queue, stats_reader
from cloudq.brokers.base import Delivery, QueueStats, admin_of
from cloudq.cli.loading import load_app
from cloudq.cli.tables import render_table
from cloudq.errors import BrokerError, ConfigurationError, EnvelopeError
from cloudq.queues import QueuePlan, plan_queues

if TYPE_CHECKING:
    from cloudq.app import App

__all__ = ["StatusRow", "dead_letter_record", "describe_dead_letter", "other_rows", "register", "render_table", "status_rows"]

STATUS_HEADERS = ("QUEUE", "PHYSICAL NAME", "VISIBLE", "IN FLIGHT", "DELAYED", "EXISTS")
PEEK_HEADERS = ("MESSAGE ID", "TASK", "ARGS", "ATTEMPTS", "REASON", "ERROR", "DEAD-LETTERED AT")
_ARGS_CHARS = 40


# -- pure: rows and rendering -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatusRow:
    """One line of ``cloudq status``; ``role`` is ``queue`` or ``dlq`` (the dead letters of ``queue``)."""

    queue: str
    role: str
    physical: str
    exists: bool
    visible: int
    in_flight: int
    delayed: int

    def cells(self) -> list[str]:
        name = self.queue if self.role == "queue" else f"{self.queue} (dlq)"
        return [name, self.physical, str(self.visible), str(self.in_flight), str(self.delayed), "yes" if self.exists else "MISSING"]


def status_rows(plans: Sequence[QueuePlan], stats_of: Callable[[str], QueueStats]) -> list[StatusRow]:
    """Each planned queue followed by its dead-letter queue, with the broker's counts."""
    rows = []
    for plan in plans:
        for role, physical in (("queue", plan.physical), ("dlq", plan.dead_letter_queue)):
            s = stats_of(physical)
            rows.append(StatusRow(plan.queue, role, physical, s.exists, s.visible, s.in_flight, s.delayed))
    return rows


def other_rows(names: Sequence[str], planned: set[str], prefix: str, stats_of: Callable[[str], QueueStats]) -> list[StatusRow]:
    """A row for each queue outside the plan that holds messages: jobs there wait for a worker told to poll it."""
    rows = []
    for physical in names:
        s = stats_of(physical) if physical not in planned else None
        if s is not None and s.visible + s.in_flight + s.delayed:
            rows.append(StatusRow(physical.removeprefix(prefix), "queue", physical, s.exists, s.visible, s.in_flight, s.delayed))
    return rows


def truncate(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line, whatever the error or body held
    return text if len(text) <= width else text[: width - 3] + "..."


def resolved_letter(delivery: Delivery, resolve: Callable[[str], tuple[str, Any]]) -> Delivery:
    """A dead letter whose body is an S3 pointer, with the body it points to (the object stays);
    shown as the pointer itself if the object is gone or S3 cannot be reached."""
    try:
        body, pointer = resolve(delivery.body)
    except (EnvelopeError, BrokerError):  # PayloadMissing, or S3 refused
        return delivery
    return replace(delivery, body=body) if pointer is not None else delivery


def describe_dead_letter(delivery: Delivery) -> list[str]:
    """A dead letter's cells; the arguments are cut to fit a terminal, the error never (it is the point)."""
    record = dead_letter_record(delivery)
    if record["task"] is None:
        args = delivery.body
    else:
        args = json.dumps(record["args"]) + (f" {json.dumps(record['kwargs'])}" if record["kwargs"] else "")
    return [
        delivery.message_id,
        record["task"] or "?",
        truncate(args, _ARGS_CHARS),
        str(record["attempts"]),
        record["reason"] or "-",
        " ".join((record["error"] or "-").split()),
        record["dead_lettered_at"] or "-",
    ]


def render_tracebacks(letters: Sequence[Delivery]) -> list[str]:
    """The stored traceback of each dead letter that has one (cloudq keeps it for exhausted retries)."""
    lines = []
    for delivery in letters:
        text = delivery.attributes.get("cloudq-traceback")
        if text:
            lines += ["", f"traceback of {delivery.message_id}:", *("  " + line for line in text.rstrip().splitlines())]
    return lines


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- commands ----------------------------------------------------------------------------------
def cmd_status(ns: argparse.Namespace) -> int:
    app = load_app(ns.app)
    if ns.watch:
        from cloudq.cli.watch import watch

        return watch(app, ns.interval, stats_of=stats_reader(admin_of(app.broker)))
    try:
        admin = admin_of(app.broker)
        rows = status_rows(plan_queues(app), stats_reader(admin))
        others = []
        if queues_on_use(admin):  # on SQS, listing every queue of an account is neither cheap nor ours
            others = other_rows(admin.list_queues(app.settings.queue_prefix), {r.physical for r in rows}, app.settings.queue_prefix, admin.stats)
    finally:
        app.close()
    rows += others
    print(json.dumps([asdict(r) for r in rows], indent=2) if ns.json else render_table(STATUS_HEADERS, [r.cells() for r in rows]))
    if others:
        names = ", ".join(r.queue for r in others)
        print(f"cloudq: no task of app {app.name!r} uses {names}: only a worker started with -q for it runs those jobs", file=sys.stderr)
    missing = [r.physical for r in rows if not r.exists]
    if missing:
        ensure = " ".join(["cloudq queues ensure", *([ns.app] if ns.app else [])])
        print(f"cloudq: missing queues: {', '.join(missing)}; create them with `{ensure}`", file=sys.stderr)
        return 1
    return 0


def cmd_dlq_peek(ns: argparse.Namespace) -> int:
    app, plan = _target(ns.names)
    try:
        dlq, admin = plan.dead_letter_queue, admin_of(app.broker)
        stats = require_queue(admin, dlq)
        letters = [resolved_letter(d, app.wire.payloads.resolve) for d in admin.peek(dlq, ns.n)]
    finally:
        app.close()
    if ns.json:
        print(json.dumps([dead_letter_record(d) for d in letters], indent=2))
        return 0
    total = stats.visible + stats.in_flight + stats.delayed
    print(f"{dlq}: dead letters of queue {plan.queue}: {len(letters)} shown of about {total}")
    if letters:
        print(render_table(PEEK_HEADERS, [describe_dead_letter(d) for d in letters]))
    if ns.traceback_of_letters:
        print("\n".join(render_tracebacks(letters) or ["", "no stored traceback (cloudq keeps one when retries run out)"]))
    return 0


def cmd_dlq_redrive(ns: argparse.Namespace) -> int:
    app, plan = _target(ns.names)
    dlq, destination = plan.dead_letter_queue, plan.physical
    try:
        admin = admin_of(app.broker)
        require_queue(admin, dlq)
        require_queue(admin, destination)
        limit = f" (at most {ns.max})" if ns.max is not None else ""
        print(f"redriving dead letters from {dlq} to {destination}{limit}", flush=True)
        moved = admin.move_messages(dlq, destination, ns.max, on_progress=_ProgressPrinter())
    finally:
        app.close()
    print(f"moved {plural(moved, 'dead letter')} back to queue {plan.queue} ({destination})")
    return 0


def cmd_purge(ns: argparse.Namespace) -> int:
    app, plan = _target(ns.names)
    physical = plan.dead_letter_queue if ns.dlq else plan.physical
    try:
        admin = admin_of(app.broker)
        stats = require_queue(admin, physical)
        about = stats.visible + stats.in_flight + stats.delayed
        if not ns.yes and not _confirm(f"purge about {plural(about, 'message')} from {physical}? This cannot be undone. [y/N] "):
            print("cloudq: not purged", file=sys.stderr)
            return 1
        purged = admin.purge(physical)
    finally:
        app.close()
    print(f"purged {plural(purged, 'message')} from {physical}")
    return 0


# -- helpers -----------------------------------------------------------------------------------
class _ProgressPrinter:
    """Prints move progress as it changes (SQS's move task is polled about once a second)."""

    def __init__(self) -> None:
        self._last: tuple[int, int | None] | None = None

    def __call__(self, moved: int, total: int | None) -> None:
        if (moved, total) != self._last:
            self._last = (moved, total)
            print(f"  moved {moved}" + (f" of about {total}" if total is not None else ""), flush=True)


def _target(names: Sequence[str]) -> tuple[App, QueuePlan]:
    """``[APP] QUEUE`` to the app and the plan of its logical queue; an unknown queue is bad input."""
    if len(names) > 2:
        raise ConfigurationError("expected [APP] QUEUE")
    app = load_app(names[0] if len(names) == 2 else None)
    plans = {plan.queue: plan for plan in plan_queues(app)}
    if names[-1] not in plans:
        raise ConfigurationError(f"queue {names[-1]!r} is not used by app {app.name!r}; its queues: {', '.join(plans)}")
    return app, plans[names[-1]]


def _confirm(prompt: str) -> bool:
    """Ask on the terminal; with no terminal to ask on, refuse (bad input: exit 2)."""
    if not sys.stdin.isatty():
        raise ConfigurationError("stdin is not a terminal, so purge cannot ask for confirmation; pass --yes")
    print(prompt, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


_positive_seconds.__name__ = "float"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# -- parser ------------------------------------------------------------------------------------
def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``status``, ``dlq peek|redrive`` and ``purge`` to the ``cloudq`` command."""
    app_help = "module:attribute (default: $CLOUDQ_APP)"
    target = {"nargs": "+", "metavar": "[APP] QUEUE", "help": "app (or $CLOUDQ_APP) and a logical queue of it"}

    status = commands.add_parser("status", help="counts of every registry queue and its DLQ; exit 1 if any is missing")
    status.add_argument("app", nargs="?", help=app_help)
    status.add_argument("--json", action="store_true", help="print a JSON list for scripts")
    status.add_argument("--watch", action="store_true", help="a live table with the oldest message's age, DLQ depth and rates, until Ctrl-C")
    status.add_argument("--interval", type=_positive_seconds, default=2.0, metavar="S", help="seconds between refreshes of --watch (default 2)")
    status.set_defaults(func=cmd_status)

    dlq = commands.add_parser("dlq", help="inspect and redrive dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="SUBCOMMAND")
    peek = dlq_commands.add_parser("peek", usage="cloudq dlq peek [APP] QUEUE [-n N] [--json] [--traceback]", help="show dead letters with task, args, attempts and reason, without deleting")
    peek.add_argument("names", **target)
    peek.add_argument("-n", type=_positive_int, default=10, help="how many to show (default 10)")
    peek.add_argument("--json", action="store_true", help="print a JSON list for scripts: every field and attribute, in full")
    peek.add_argument("--traceback", dest="traceback_of_letters", action="store_true", help="print each dead letter's stored traceback below the table")
    peek.set_defaults(func=cmd_dlq_peek)
    redrive = dlq_commands.add_parser("redrive", usage="cloudq dlq redrive [APP] QUEUE [--max N]", help="move dead letters back to their queue, with progress")
    redrive.add_argument("names", **target)
    redrive.add_argument("--max", type=_positive_int, help="move at most N (default: all)")
    redrive.set_defaults(func=cmd_dlq_redrive)

    purge = commands.add_parser("purge", usage="cloudq purge [APP] QUEUE [--dlq] [--yes]", help="delete every message of a queue, after confirmation")
    purge.add_argument("names", **target)
    purge.add_argument("--dlq", action="store_true", help="purge the queue's dead-letter queue instead")
    purge.add_argument("-y", "--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    purge.set_defaults(func=cmd_purge)

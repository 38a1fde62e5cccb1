"""The local broker's own queues in the ops commands, ``dlq peek``'s detail, and the counts' plurals.

On the local broker a queue and its DLQ exist as soon as they are used, so ``status`` right after a first
``enqueue`` (it exited 1, "missing queues") and ``dlq peek`` on a fresh file (QueueNotFound) both work;
``schedules list`` reads the workers' leases in the file instead of failing on EventBridge credentials.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cloudq.brokers.base import Delivery, OutgoingMessage, QueueStats
from cloudq.cli import main
from cloudq.cli.ops import other_rows, plural
from cloudq.examples import shop
from cloudq.schedules.local import LocalScheduler, last_fire_times, local_statuses, owner_of
from tests.unit.cli_env import APP, local  # noqa: F401 - local is a fixture

pytestmark = pytest.mark.unit

TASK = "cloudq.examples.shop.send_welcome_email"
LONG_ERROR = "card declined by the issuing bank after three attempts; the customer must call the bank to lift the block"
TRACEBACK = 'Traceback (most recent call last):\n  File "shop.py", line 60, in charge\nRuntimeError: card declined\n'


def enqueue(*extra: str) -> None:
    assert main(["enqueue", APP, TASK, "--args", '["a@b.c"]', *extra]) == 0


def dead_letter(error: str = LONG_ERROR, traceback: str | None = TRACEBACK) -> str:
    """A dead letter in default-dlq with the attributes the consumer records, without running a worker."""
    attributes = {"cloudq-reason": "max_retries_exceeded", "cloudq-attempts": "4", "cloudq-error-type": "RuntimeError", "cloudq-error": error}
    attributes |= {"cloudq-traceback": traceback} if traceback else {}
    body = json.dumps({"task": TASK, "args": ["a@b.c"], "kwargs": {}})
    [message_id] = shop.app.broker.send("default-dlq", [OutgoingMessage(body, attributes=attributes)])
    return message_id


# -- status and dlq peek on a fresh or barely used file ---------------------------------------------
def test_status_after_a_first_enqueue_lists_every_queue_as_there(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A queue or DLQ not used yet is there and empty on the local broker: exit 0, nothing missing."""
    enqueue()
    capsys.readouterr()
    assert main(["status", APP, "--json"]) == 0
    out, err = capsys.readouterr()
    rows = {(r["queue"], r["role"]): (r["exists"], r["visible"]) for r in json.loads(out)}
    assert rows == {("billing", "queue"): (True, 0), ("billing", "dlq"): (True, 0), ("default", "queue"): (True, 1), ("default", "dlq"): (True, 0)}
    assert err == ""


def test_dlq_peek_on_a_fresh_file_shows_none(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``dlq peek APP default`` on a new file failed with QueueNotFound 'default-dlq'."""
    assert main(["dlq", "peek", APP, "default"]) == 0
    assert capsys.readouterr().out == "default-dlq: dead letters of queue default: 0 shown of about 0\n"
    assert main(["dlq", "redrive", APP, "default"]) == 0
    assert "moved 0 dead letters back to queue default (default)" in capsys.readouterr().out


def test_status_lists_a_queue_outside_the_registry_that_holds_jobs(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``enqueue --queue nosuch`` sent into a queue that status never listed and no worker polled."""
    enqueue("--queue", "nosuch")
    capsys.readouterr()
    assert main(["status", APP]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].split() == ["nosuch", "nosuch", "1", "0", "0", "yes"]
    assert err == "cloudq: no task of app 'shop' uses nosuch: only a worker started with -q for it runs those jobs\n"


def test_other_rows_keep_only_queues_outside_the_plan_that_hold_messages() -> None:
    """Planned queues and empty ones add no row; the logical name drops the prefix."""
    counts = {"dev-a": QueueStats("dev-a", True, 1), "dev-b": QueueStats("dev-b", True), "dev-c": QueueStats("dev-c", True, 0, 0, 2)}
    rows = other_rows(["dev-a", "dev-b", "dev-c", "dev-default"], {"dev-default"}, "dev-", lambda q: counts[q])
    assert [(r.queue, r.physical, r.visible, r.delayed) for r in rows] == [("a", "dev-a", 1, 0), ("c", "dev-c", 0, 2)]


# -- dlq peek: the whole error, --traceback, --json -------------------------------------------------
def test_peek_shows_the_error_in_full(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The error column was cut at 60 characters: the one thing on-call came to read."""
    dead_letter(error=LONG_ERROR + "\n  second line")
    assert main(["dlq", "peek", APP, "default"]) == 0
    assert f"RuntimeError: {LONG_ERROR} second line" in capsys.readouterr().out


def test_peek_traceback_prints_each_stored_traceback(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--traceback`` prints the traceback cloudq stored, under the table, one block per dead letter."""
    message_id = dead_letter()
    dead_letter(traceback=None)
    assert main(["dlq", "peek", APP, "default", "--traceback"]) == 0
    lines = capsys.readouterr().out.splitlines()
    block = lines[lines.index(f"traceback of {message_id}:") :]
    assert block == ["traceback of " + message_id + ":", *("  " + line for line in TRACEBACK.splitlines())]


def test_peek_traceback_says_when_none_is_stored(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead_letter(traceback=None)
    assert main(["dlq", "peek", APP, "default", "--traceback"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no stored traceback (cloudq keeps one when retries run out)"


def test_peek_json_gives_every_field_in_full(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` is a list of records for scripts: parsed fields, the raw body and every attribute."""
    message_id = dead_letter()
    assert main(["dlq", "peek", APP, "default", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["message_id"] == message_id
    assert (record["task"], record["args"], record["kwargs"], record["attempts"]) == (TASK, ["a@b.c"], {}, 4)
    assert (record["reason"], record["error"], record["traceback"]) == ("max_retries_exceeded", f"RuntimeError: {LONG_ERROR}", TRACEBACK)
    assert record["attributes"]["cloudq-error"] == LONG_ERROR and json.loads(record["body"])["task"] == TASK


def test_peek_json_of_a_foreign_body() -> None:
    """A body that is no envelope has no task or args; attempts fall back to the receive count."""
    from cloudq.cli.ops import dead_letter_record

    record = dead_letter_record(Delivery("q-dlq", "m1", "", "not json", 7))
    assert (record["task"], record["args"], record["body"], record["attempts"], record["reason"], record["error"]) == (None, None, "not json", 7, None, None)


# -- plurals ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "text"), [(0, "0 messages"), (1, "1 message"), (2, "2 messages")])
def test_plural(n: int, text: str) -> None:
    assert plural(n, "message") == text


def test_purge_and_redrive_of_one_say_it_in_the_singular(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """"purged 1 messages", "moved 1 dead letters" before."""
    dead_letter()
    assert main(["dlq", "redrive", APP, "default"]) == 0
    assert "moved 1 dead letter back to queue default (default)" in capsys.readouterr().out
    assert main(["purge", APP, "default", "--yes"]) == 0
    assert capsys.readouterr().out == "purged 1 message from default\n"


# -- schedules list on the local broker -------------------------------------------------------------
def test_schedules_list_on_a_fresh_file_needs_no_aws_and_creates_nothing(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It failed with NoCredentialsError from EventBridge; now each periodic task, not fired yet, with its next ticks."""
    assert main(["schedules", "list", APP]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header == f"local broker ({local / 'q.db'}): workers fire these themselves, one lease per tick in that file"
    assert line.startswith("reports.hourly_revenue  rate(1 hour) UTC  cloudq-reports.hourly_revenue local: not fired yet")
    assert line.count("+00:00") == 3
    assert not (local / "q.db").exists()


def test_schedules_list_shows_the_lease_a_worker_took(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After a worker recorded the task, the listing shows when it last fired, and whether a tick is due."""
    clock = [datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc).timestamp()]
    scheduler = LocalScheduler(shop.app, clock=lambda: clock[0])
    [spec] = shop.app.periodic_tasks.values()
    scheduler.claim(spec)  # the first sight records the task without firing
    scheduler.close()
    assert last_fire_times(str(local / "q.db"), owner_of(shop.app)) == {"reports.hourly_revenue": clock[0]}

    [status] = local_statuses(shop.app, now=datetime(2026, 1, 5, 9, 45, tzinfo=timezone.utc))
    assert status.state == "local: last fired 2026-01-05T09:30:00+00:00"
    [status] = local_statuses(shop.app, now=datetime(2026, 1, 5, 10, 0, 1, tzinfo=timezone.utc))
    assert status.state.endswith("; due now (a running worker fires it within a second)")
    assert [f.hour for f in status.next_fires] == [11, 12, 13]


def test_lease_table_missing_from_an_existing_file_reads_as_none_fired(local: Path) -> None:
    """A file the broker made but no worker fired anything in has no lease table yet."""
    sqlite3.connect(local / "q.db").close()
    assert last_fire_times(str(local / "q.db"), "shop") == {}

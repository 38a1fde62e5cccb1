"""`cloudq schedules sync|list` against LocalStack: EventBridge rules (which really fire) and Scheduler (stored only)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.cli import main
from cloudq.errors import BrokerUnavailable, QueueNotFound
from cloudq.schedules.deploy import AwsClients, schedule_statuses, sync
from cloudq.schedules.periodic import SCHEDULED_HEADER
from cloudq.schedules.plan import Owner, render_plan

from .conftest import ensure_queues, run_worker_until

ROLE_ARN = "arn:aws:iam::000000000000:role/cloudq-scheduler"


@pytest.fixture
def settings(make_settings: Callable[..., cloudq.Settings]) -> cloudq.Settings:
    return make_settings(scheduler_role_arn=ROLE_ARN)


@pytest.fixture
def clients(settings: cloudq.Settings) -> Iterator[AwsClients]:
    """boto3 clients on LocalStack; afterwards every rule and schedule group of this test's prefix is removed,
    so no rule keeps firing into LocalStack for the rest of the run."""
    aws = AwsClients.from_settings(settings)
    yield aws
    prefix = f"cloudq-{settings.queue_prefix}"
    for rule in aws.events.list_rules(NamePrefix=prefix)["Rules"]:
        ids = [t["Id"] for t in aws.events.list_targets_by_rule(Rule=rule["Name"])["Targets"]]
        if ids:
            aws.events.remove_targets(Rule=rule["Name"], Ids=ids)
        aws.events.delete_rule(Name=rule["Name"])
    for group in aws.scheduler.list_schedule_groups(NamePrefix=prefix)["ScheduleGroups"]:
        aws.scheduler.delete_schedule_group(Name=group["Name"])
    aws.close()


def make_app(settings: cloudq.Settings, tasks: dict[str, str], **options: Any) -> cloudq.App:
    """An app with one periodic task per name -> schedule; each records its calls in ``app.calls``."""
    app = cloudq.App("sched", settings=settings)
    app.calls = []  # type: ignore[attr-defined]
    for name, schedule in tasks.items():

        async def run(n: int = 0, _name: str = name) -> None:
            app.calls.append((_name, n))  # type: ignore[attr-defined]

        app.periodic(schedule, name=name, **options)(run)
    ensure_queues(app)
    return app


def queue_attributes(sqs: Any, physical: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=physical)["QueueUrl"]
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "Policy"])["Attributes"])


def test_sync_creates_rule_target_and_queue_policy(settings: cloudq.Settings, clients: AwsClients, sqs_client: Any) -> None:
    """A first sync creates a marked, tagged rule whose target sends the envelope to the queue, and allows
    that rule (and only it) in the queue policy, keeping the policy's other statements."""
    app = make_app(settings, {"report": "rate(5 minutes)"}, kwargs={"n": 7})
    physical = settings.queue_name("default")
    arn = queue_attributes(sqs_client, physical)["QueueArn"]
    theirs = {"Sid": "Theirs", "Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "sqs:SendMessage", "Resource": arn}
    url = sqs_client.get_queue_url(QueueName=physical)["QueueUrl"]
    sqs_client.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({"Version": "2012-10-17", "Statement": [theirs]})})

    changes = sync(app, clients)

    rule_name = f"cloudq-{settings.queue_prefix}report"
    assert [(c.action, c.kind) for c in changes] == [("update", "queue policy"), ("create", "rule")]
    rule = clients.events.describe_rule(Name=rule_name)
    assert (rule["ScheduleExpression"], rule["State"]) == ("rate(5 minutes)", "ENABLED")
    assert Owner("sched", settings.queue_prefix).task_of(rule["Description"]) == "report"
    tags = {t["Key"]: t["Value"] for t in clients.events.list_tags_for_resource(ResourceARN=rule["Arn"])["Tags"]}
    assert tags["ManagedBy"] == "cloudq" and tags["CloudqApp"] == "sched"
    [target] = clients.events.list_targets_by_rule(Rule=rule_name)["Targets"]
    envelope = cloudq.Envelope.decode(target["Input"], default_id="m")
    assert (target["Arn"], envelope.task, envelope.kwargs, envelope.headers) == (arn, "report", {"n": 7}, {SCHEDULED_HEADER: rule_name})
    statements = {s["Sid"]: s for s in json.loads(queue_attributes(sqs_client, physical)["Policy"])["Statement"]}
    assert statements["Theirs"] == theirs
    assert statements[rule_name]["Principal"] == {"Service": "events.amazonaws.com"}
    assert statements[rule_name]["Condition"] == {"ArnEquals": {"aws:SourceArn": rule["Arn"]}}


def test_second_sync_through_the_cli_changes_nothing(
    settings: cloudq.Settings, clients: AwsClients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cloudq schedules sync` twice: the second run plans no change and prints "no changes"; --dry-run writes nothing."""
    (tmp_path / "sched_app.py").write_text(
        "import cloudq\napp = cloudq.App('sched')\n\n"
        "@app.periodic('rate(5 minutes)', name='a')\ndef a() -> None: ...\n\n"
        "@app.periodic('cron(15 3 ? * MON *)', name='b', queue='other')\ndef b() -> None: ...\n"
    )
    monkeypatch.chdir(tmp_path)
    for key, value in {"BROKER": "sqs", "ENDPOINT_URL": settings.endpoint_url, "QUEUE_PREFIX": settings.queue_prefix}.items():
        monkeypatch.setenv(f"CLOUDQ_{key}", str(value))
    assert main(["queues", "ensure", "sched_app:app"]) == 0
    assert main(["schedules", "sync", "sched_app:app", "--dry-run"]) == 0
    assert "would apply: 2 to create" in capsys.readouterr().out
    assert clients.events.list_rules(NamePrefix=f"cloudq-{settings.queue_prefix}")["Rules"] == []

    assert main(["schedules", "sync", "sched_app:app"]) == 0
    assert "applied: 2 to create, 2 to update" in capsys.readouterr().out
    assert main(["schedules", "sync", "sched_app:app"]) == 0
    assert capsys.readouterr().out.strip() == "no changes (2 unchanged)"
    assert main(["schedules", "list", "sched_app:app"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == ["a", "b"] and all(" ENABLED " in line for line in listing)
    assert listing[1].count("+00:00") == 3  # three next fire times, in UTC


def test_prune_removes_only_this_apps_rules(settings: cloudq.Settings, clients: AwsClients, sqs_client: Any) -> None:
    """A rule the registry dropped is kept without --prune and deleted with it, with its policy statement;
    a hand-made rule under the same name prefix and another app's rule survive both."""
    sync(make_app(settings, {"keep": "rate(5 minutes)", "drop": "rate(10 minutes)"}), clients)
    prefix = f"cloudq-{settings.queue_prefix}"
    clients.events.put_rule(Name=f"{prefix}handmade", ScheduleExpression="rate(1 day)", Description="nightly backup")
    other = Owner("another-app", settings.queue_prefix).marker("drop")
    clients.events.put_rule(Name=f"{prefix}other-app", ScheduleExpression="rate(1 day)", Description=other)

    app = make_app(settings, {"keep": "rate(5 minutes)"})
    kept = sync(app, clients)
    assert [(c.action, c.name) for c in kept] == [("unchanged", f"{prefix}keep"), ("orphaned", f"{prefix}drop")]
    pruned = sync(app, clients, prune=True)
    assert [(c.action, c.kind) for c in pruned] == [("update", "queue policy"), ("unchanged", "rule"), ("delete", "rule")]

    names = sorted(r["Name"] for r in clients.events.list_rules(NamePrefix=prefix)["Rules"])
    assert names == [f"{prefix}handmade", f"{prefix}keep", f"{prefix}other-app"]
    sids = [s["Sid"] for s in json.loads(queue_attributes(sqs_client, settings.queue_name("default"))["Policy"])["Statement"]]
    assert sids == [f"{prefix}keep"]
    assert render_plan(sync(app, clients, prune=True), dry_run=False) == ["no changes (1 unchanged)"]


def test_scheduler_engine_syncs_a_group_of_its_own(settings: cloudq.Settings, clients: AwsClients, sqs_client: Any) -> None:
    """--engine scheduler creates cloudq's schedule group and one schedule per task (time zone, role, OFF window);
    a re-sync is a no-op, and prune deletes only cloudq's schedules from the group."""
    app = make_app(settings, {"report": "cron(0 9 ? * MON-FRI *)"}, timezone="Europe/Berlin", kwargs={"n": 1})
    group, name = f"cloudq-{settings.queue_prefix}sched", f"cloudq-{settings.queue_prefix}report"
    changes = sync(app, clients, engine="scheduler")
    assert [(c.action, c.kind, c.name) for c in changes] == [("create", "schedule group", group), ("create", "schedule", name)]

    schedule = clients.scheduler.get_schedule(Name=name, GroupName=group)
    assert (schedule["ScheduleExpression"], schedule["ScheduleExpressionTimezone"]) == ("cron(0 9 ? * MON-FRI *)", "Europe/Berlin")
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"} and schedule["Target"]["RoleArn"] == ROLE_ARN
    assert schedule["Target"]["Arn"] == queue_attributes(sqs_client, settings.queue_name("default"))["QueueArn"]
    assert json.loads(schedule["Target"]["Input"])["headers"] == {SCHEDULED_HEADER: name}
    assert [c.action for c in sync(app, clients, engine="scheduler")] == ["unchanged"]

    clients.scheduler.create_schedule(
        Name="handmade", GroupName=group, ScheduleExpression="rate(1 day)", FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": schedule["Target"]["Arn"], "RoleArn": ROLE_ARN},
    )  # fmt: skip
    app.periodic_tasks.clear()
    assert [(c.action, c.name) for c in sync(app, clients, engine="scheduler", prune=True)] == [("delete", name)]
    remaining = [s["Name"] for s in clients.scheduler.list_schedules(GroupName=group)["Schedules"]]
    assert remaining == ["handmade"]
    clients.scheduler.delete_schedule(Name="handmade", GroupName=group)


def test_list_shows_state_and_next_fire_times_in_the_task_timezone(settings: cloudq.Settings, clients: AwsClients) -> None:
    """`schedules list` reports each task's deployed state and three fire times on its own wall clock."""
    app = make_app(settings, {"report": "cron(0 9 ? * MON-FRI *)"}, timezone="Europe/Berlin")
    [before] = schedule_statuses(app, clients, engine="scheduler")
    assert before.state == "not deployed" and len(before.next_fires) == 3
    sync(app, clients, engine="scheduler")
    [after] = schedule_statuses(app, clients, engine="scheduler")
    assert after.state == "ENABLED" and after.deployed_expression == "cron(0 9 ? * MON-FRI *)"
    assert "T09:00+0" in after.render()  # 09:00 Berlin time, +01:00 or +02:00 depending on DST


def test_a_missing_target_queue_is_queue_not_found_and_nothing_is_created(
    make_settings: Callable[..., cloudq.Settings], clients: AwsClients
) -> None:
    """Schedules never create queues: a sync into a queue that does not exist names it and changes nothing."""
    app = cloudq.App("sched", settings=make_settings(scheduler_role_arn=ROLE_ARN))
    app.periodic("rate(5 minutes)", name="report", queue="nowhere")(lambda: None)

    with pytest.raises(QueueNotFound, match=app.settings.queue_name("nowhere")):
        sync(app, clients)
    assert clients.events.list_rules(NamePrefix=f"cloudq-{app.settings.queue_prefix}")["Rules"] == []


def test_an_unreachable_endpoint_is_broker_unavailable(make_settings: Callable[..., cloudq.Settings]) -> None:
    """EventBridge and SQS failures of a sync reach the caller in cloudq's tree, transient ones as such."""
    app = make_app(make_settings(scheduler_role_arn=ROLE_ARN), {"report": "rate(5 minutes)"})
    down = AwsClients.from_settings(make_settings(endpoint_url="http://127.0.0.1:9", queue_prefix=app.settings.queue_prefix))
    try:
        with pytest.raises(BrokerUnavailable, match="sqs endpoint unreachable"):
            sync(app, down)
    finally:
        down.close()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_rate_rule_delivers_an_envelope_that_a_worker_runs(settings: cloudq.Settings, clients: AwsClients) -> None:
    """A rate(1 minute) rule really fires (about a minute after creation): a running worker executes the job."""
    app = make_app(settings, {"tick": "rate(1 minute)"}, kwargs={"n": 42})
    sync(app, clients)
    worker = await run_worker_until(app, lambda w: bool(app.calls), timeout_s=140)  # type: ignore[attr-defined]
    assert app.calls[0] == ("tick", 42)  # type: ignore[attr-defined]
    assert worker.stats.succeeded >= 1 and worker.stats.dead_lettered == 0

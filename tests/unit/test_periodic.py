"""@app.periodic registration and validation, and the pure plans behind `cloudq schedules sync` (no AWS)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest

import cloudq
from cloudq.brokers.memory import MemoryBroker
from cloudq.cli import build_parser
from cloudq.envelope import Envelope
from cloudq.schedules import eventbridge as eb
from cloudq.schedules import scheduler as sch
from cloudq.schedules.deploy import ScheduleStatus, _status
from cloudq.schedules.periodic import SCHEDULED_HEADER
from cloudq.schedules.plan import Change, Owner, QueueInfo, diff_resources, render_plan, resource_name

pytestmark = pytest.mark.unit

QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:p-default"
OTHER_ARN = "arn:aws:sqs:us-east-1:000000000000:p-reports"


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def app(broker: MemoryBroker) -> cloudq.App:
    settings = cloudq.Settings(broker="memory", queue_prefix="p-", scheduler_role_arn="arn:aws:iam::000000000000:role/s")
    return cloudq.App("shop", settings=settings, broker=broker)


def queues(*logical: str) -> dict[str, QueueInfo]:
    return {q: QueueInfo(f"p-{q}", f"http://sqs/p-{q}", f"arn:aws:sqs:us-east-1:000000000000:p-{q}") for q in logical}


# -- registration ---------------------------------------------------------------------------------------------
def test_periodic_registers_a_normal_task_and_its_spec(app: cloudq.App, broker: MemoryBroker) -> None:
    """@app.periodic registers a task that .delay() still enqueues, plus a spec with its parsed schedule."""

    @app.periodic("rate(5 minutes)", name="report", queue="reports", kwargs={"region": "eu"}, timezone="Europe/Berlin")
    def report(region: str) -> str:
        return region

    assert isinstance(report, cloudq.Task) and report("x") == "x"
    spec = app.periodic_tasks["report"]
    assert (spec.schedule.expression, spec.schedule.interval_s, spec.queue, spec.tz) == ("rate(5 minutes)", 300, "reports", "Europe/Berlin")
    assert app.registry["report"] is report
    report.delay("us")
    assert json.loads(broker.messages("p-reports")[0])["args"] == ["us"]


def test_default_name_is_module_and_qualname(app: cloudq.App) -> None:
    """Without name=, a periodic task is named like any task: <module>.<qualname>."""

    @app.periodic("cron(0 9 * * ? *)")
    def nightly() -> None: ...

    assert [name.rsplit(".", 1)[-1] for name in app.periodic_tasks] == ["nightly"]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("rate(1 minutes)", "singular unit 'minute'"), ("cron(0 9 * * *)", "exactly 6 fields"), ("every day", "not a schedule expression")],
)
def test_invalid_expression_names_the_task_and_registers_nothing(app: cloudq.App, schedule: str, expected: str) -> None:
    """An expression AWS would reject fails at decoration with the task's name and the reason; nothing is registered."""
    with pytest.raises(cloudq.ScheduleError, match=expected) as caught:

        @app.periodic(schedule, name="billing.close")
        def close() -> None: ...

    assert "'billing.close'" in str(caught.value)
    assert app.registry == {} and app.periodic_tasks == {}


def test_unknown_timezone_is_a_schedule_error(app: cloudq.App) -> None:
    """timezone= must be an IANA zone that Scheduler knows."""
    with pytest.raises(cloudq.ScheduleError, match="'t'.*unknown time zone 'Mars/Olympus'"):
        app.periodic("rate(1 hour)", name="t", timezone="Mars/Olympus")(lambda: None)
    assert app.registry == {}


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [((), {}, "do not fit"), ((1, 2), {}, "do not fit"), ((), {"missing": 1}, "do not fit"), ((datetime.now(),), {}, "JSON")],
)
def test_fixed_arguments_are_checked_at_decoration(app: cloudq.App, args: tuple[Any, ...], kwargs: dict[str, Any], expected: str) -> None:
    """args/kwargs that would make every firing a poison message fail at import, and register nothing."""
    with pytest.raises(cloudq.ConfigurationError, match=expected):

        @app.periodic("rate(1 hour)", name="t", args=args, kwargs=kwargs)
        def t(x: Any) -> None: ...

    assert app.registry == {} and app.periodic_tasks == {}


def test_same_name_with_another_schedule_is_refused(app: cloudq.App) -> None:
    """Two schedules cannot silently share one task name."""

    def f() -> None: ...

    app.periodic("rate(1 hour)", name="t")(f)
    app.periodic("rate(1 hour)", name="t")(f)  # idempotent for the same definition
    with pytest.raises(cloudq.ConfigurationError, match="already periodic"):
        app.periodic("rate(2 hours)", name="t")(f)


def test_envelope_body_is_constant_and_decodes_with_the_message_id(app: cloudq.App) -> None:
    """The deployed Input has no id/enqueued_at (no churn); the worker names the job after the message."""
    app.periodic("rate(1 hour)", name="t", args=(1,), kwargs={"b": "x"})(lambda a, b: None)
    spec = app.periodic_tasks["t"]
    body = spec.envelope_body("cloudq-p-t")
    assert body == spec.envelope_body("cloudq-p-t")
    assert set(json.loads(body)) == {"v", "task", "args", "kwargs", "headers"}
    envelope = Envelope.decode(body, default_id="msg-1")
    assert (envelope.id, envelope.task, envelope.args, envelope.kwargs) == ("msg-1", "t", (1,), {"b": "x"})
    assert envelope.headers == {SCHEDULED_HEADER: "cloudq-p-t"}


# -- names and ownership --------------------------------------------------------------------------------------
def test_resource_names_follow_aws_rules_and_are_stable() -> None:
    """Names keep [A-Za-z0-9._-] and 64 characters; anything changed gets a hash so names cannot collide."""
    assert resource_name("p-", "shop.report") == "cloudq-p-shop.report"
    odd, odd_too = resource_name("", "a:b"), resource_name("", "a/b")
    assert odd.startswith("cloudq-a-b-") and odd != odd_too and odd == resource_name("", "a:b")
    long_a, long_b = resource_name("prod-", "x" * 80 + "a"), resource_name("prod-", "x" * 80 + "b")
    assert len(long_a) == 64 and long_a != long_b
    assert all(c.isalnum() or c in "._-" for c in long_a + odd)


def test_owner_marker_identifies_app_and_prefix() -> None:
    """Only this app under this prefix owns a resource; other apps, other prefixes and strangers do not."""
    owner = Owner("shop", "prod-")
    marker = owner.marker("report")
    assert owner.task_of(marker) == "report"
    assert Owner("shop", "staging-").task_of(marker) is None
    assert Owner("shop2", "prod-").task_of(marker) is None
    for other in (None, "", "nightly backup", "cloudq:not json", 'cloudq:["x"]'):
        assert owner.task_of(other) is None


# -- generic diff and rendering -------------------------------------------------------------------------------
def test_diff_classifies_create_update_unchanged_orphaned_and_delete() -> None:
    """A diff creates what is missing, updates what differs, and deletes owned leftovers only with prune."""
    desired = {"a": ({"x": 1}, "pa"), "b": ({"x": 2}, "pb"), "c": ({"x": 3}, "pc")}
    current = {"b": {"x": 2}, "c": {"x": 0}, "old": {"x": 9}, "foreign": {"x": 9}}
    kept = diff_resources("rule", desired, current, {"b", "c", "old"}, prune=False)
    assert [(c.action, c.name) for c in kept] == [("create", "a"), ("unchanged", "b"), ("update", "c"), ("orphaned", "old")]
    assert kept[2].detail == "x: 0 -> 3" and kept[0].payload == "pa"
    pruned = diff_resources("rule", desired, current, {"b", "c", "old"}, prune=True)
    assert [(c.action, c.name) for c in pruned][-1] == ("delete", "old")
    assert "foreign" not in {c.name for c in pruned}


def test_diff_refuses_to_overwrite_someone_elses_resource() -> None:
    """A wanted name held by a resource cloudq did not mark for this app is an error, not an overwrite."""
    with pytest.raises(cloudq.ConfigurationError, match="not managed by cloudq"):
        diff_resources("rule", {"a": ({"x": 1}, None)}, {"a": {"x": 1}}, set(), prune=True)


def test_render_says_no_changes_when_idempotent() -> None:
    """A plan with nothing but unchanged resources prints 'no changes'."""
    assert render_plan([Change("unchanged", "rule", "a")], dry_run=False) == ["no changes (1 unchanged)"]
    lines = render_plan([Change("create", "rule", "a", "rate(1 minute)")], dry_run=True)
    assert lines == ["+ create rule a: rate(1 minute)", "would apply: 1 to create, 0 to update, 0 to delete, 0 unchanged"]


# -- EventBridge rules ----------------------------------------------------------------------------------------
def deployed(spec: eb.RuleSpec, state: str = "ENABLED") -> eb.CurrentRule:
    """What EventBridge would report after a sync created ``spec`` (Input reformatted, to prove JSON compare)."""
    target = dict(spec.target, Input=json.dumps(json.loads(spec.target["Input"]), indent=2))
    return eb.CurrentRule(spec.name, spec.expression, spec.description, state, target, ("cloudq",))


def test_rules_plan_creates_rules_and_queue_policy(app: cloudq.App) -> None:
    """A first sync allows each rule on its queue (policy first), then creates one rule per periodic task."""
    app.periodic("rate(1 minute)", name="tick")(lambda: None)
    app.periodic("cron(0 9 ? * MON-FRI *)", name="report", queue="reports")(lambda: None)
    desired = eb.desired_rules(app, queues("default", "reports"))
    changes = eb.build_rules_plan(Owner("shop", "p-"), desired, {}, queues("default", "reports").values(), prune=False)
    assert [(c.action, c.kind, c.name) for c in changes] == [
        ("update", "queue policy", "p-default"), ("update", "queue policy", "p-reports"),
        ("create", "rule", "cloudq-p-report"), ("create", "rule", "cloudq-p-tick"),
    ]  # fmt: skip
    tick = desired["cloudq-p-tick"]
    assert tick.target["Arn"] == QUEUE_ARN and tick.target["Id"] == "cloudq"
    assert json.loads(tick.target["Input"])["headers"] == {SCHEDULED_HEADER: "cloudq-p-tick"}
    policy = json.loads(changes[0].payload[1])
    assert policy["Statement"][0]["Condition"] == {"ArnEquals": {"aws:SourceArn": "arn:aws:events:us-east-1:000000000000:rule/cloudq-p-tick"}}


def test_rules_plan_is_empty_when_everything_matches(app: cloudq.App) -> None:
    """Re-planning against what a sync created finds only unchanged resources, and keeps a disabled rule disabled."""
    app.periodic("rate(1 minute)", name="tick")(lambda: None)
    desired = eb.desired_rules(app, queues("default"))
    policy = {"Version": "2012-10-17", "Statement": [eb.policy_statement(QUEUE_ARN, "cloudq-p-tick")]}
    queue = QueueInfo("p-default", "u", QUEUE_ARN, policy)
    current = {"cloudq-p-tick": deployed(desired["cloudq-p-tick"], state="DISABLED")}
    changes = eb.build_rules_plan(Owner("shop", "p-"), desired, current, [queue], prune=True)
    assert [c.action for c in changes] == ["unchanged"]
    changed = {"cloudq-p-tick": replace(desired["cloudq-p-tick"], expression="rate(2 minutes)")}
    update = eb.build_rules_plan(Owner("shop", "p-"), changed, current, [queue], prune=False)
    assert [c.action for c in update] == ["update"] and update[0].payload.state == "DISABLED"


def test_prune_deletes_only_this_apps_rules_and_their_statements(app: cloudq.App) -> None:
    """Prune removes this app's leftover rule and its policy statement; foreign rules and statements stay."""
    app.periodic("rate(1 minute)", name="tick")(lambda: None)
    owner = Owner("shop", "p-")
    desired = eb.desired_rules(app, queues("default"))
    gone = eb.RuleSpec("cloudq-p-old", "old", "rate(1 hour)", owner.marker("old"), QUEUE_ARN, {"Id": "cloudq", "Arn": QUEUE_ARN, "Input": "{}"})
    foreign = eb.CurrentRule("cloudq-p-theirs", "rate(1 hour)", "made by hand", "ENABLED", None, ("x",))
    staging = eb.CurrentRule("cloudq-s-old", "rate(1 hour)", Owner("shop", "s-").marker("old"), "ENABLED", None, ())
    current = {"cloudq-p-tick": deployed(desired["cloudq-p-tick"]), "cloudq-p-old": deployed(gone), "cloudq-p-theirs": foreign, "cloudq-s-old": staging}
    someone = {"Sid": "TheirSid", "Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": QUEUE_ARN}
    statements = [someone, eb.policy_statement(QUEUE_ARN, "cloudq-p-tick"), eb.policy_statement(QUEUE_ARN, "cloudq-p-old")]
    queue = QueueInfo("p-default", "u", QUEUE_ARN, {"Version": "2012-10-17", "Statement": statements})
    kept = eb.build_rules_plan(owner, desired, current, [queue], prune=False)
    assert [(c.action, c.name) for c in kept] == [("unchanged", "cloudq-p-tick"), ("orphaned", "cloudq-p-old")]
    pruned = eb.build_rules_plan(owner, desired, current, [queue], prune=True)
    assert [(c.action, c.kind, c.name) for c in pruned] == [
        ("update", "queue policy", "p-default"), ("unchanged", "rule", "cloudq-p-tick"), ("delete", "rule", "cloudq-p-old"),
    ]  # fmt: skip
    assert pruned[-1].payload.target_ids == ("cloudq",)
    assert [s["Sid"] for s in json.loads(pruned[0].payload[1])["Statement"]] == ["TheirSid", "cloudq-p-tick"]


def test_moving_a_task_to_another_queue_moves_its_statement(app: cloudq.App) -> None:
    """A rule whose task changed queue is updated, allowed on the new queue and no longer on the old one."""
    app.periodic("rate(1 minute)", name="tick", queue="reports")(lambda: None)
    owner = Owner("shop", "p-")
    before = eb.RuleSpec("cloudq-p-tick", "tick", "rate(1 minute)", owner.marker("tick"), QUEUE_ARN, {"Id": "cloudq", "Arn": QUEUE_ARN, "Input": "{}"})
    old_queue = QueueInfo("p-default", "u1", QUEUE_ARN, {"Statement": eb.policy_statement(QUEUE_ARN, "cloudq-p-tick")})
    new_queue = queues("reports")["reports"]
    changes = eb.build_rules_plan(owner, eb.desired_rules(app, {"reports": new_queue}), {"cloudq-p-tick": deployed(before)}, [old_queue, new_queue], prune=False)
    assert [(c.action, c.name, c.detail) for c in changes][:2] == [
        ("update", "p-default", "-cloudq-p-tick"), ("update", "p-reports", "+cloudq-p-tick"),
    ]  # fmt: skip
    assert changes[0].payload[1] == ""  # the last statement gone: the policy is removed
    assert changes[2].action == "update" and "Target" in changes[2].detail


def test_merge_policy_keeps_other_statements_and_fields() -> None:
    """Merging never clobbers: foreign statements, Id and order survive; ours are replaced in place."""
    ours = eb.policy_statement(QUEUE_ARN, "cloudq-p-tick")
    stale = dict(ours, Resource="old")
    policy = {"Version": "2012-10-17", "Id": "mine", "Statement": [{"Sid": "A"}, stale, {"Sid": "B"}]}
    merged = eb.merge_policy(policy, {"cloudq-p-tick": ours}, {"cloudq-p-tick"})
    assert merged["Id"] == "mine" and merged["Statement"] == [{"Sid": "A"}, ours, {"Sid": "B"}]


@pytest.mark.parametrize(
    ("schedule", "tz", "expected"),
    [("at(2030-01-01T09:00:00)", None, "one-off at"), ("cron(0 9 * * ? *)", "Europe/Berlin", "evaluate cron in UTC")],
)
def test_rules_engine_refuses_what_rules_cannot_express(app: cloudq.App, schedule: str, tz: str | None, expected: str) -> None:
    """One-off schedules and cron in a time zone need Scheduler; the rules engine says so instead of drifting."""
    app.periodic(schedule, name="t", timezone=tz)(lambda: None)
    with pytest.raises(cloudq.ConfigurationError, match=expected):
        eb.desired_rules(app, queues("default"))


def test_rate_with_a_timezone_is_fine_on_rules(app: cloudq.App) -> None:
    """A rate ignores time zones, so rules can carry it."""
    app.periodic("rate(1 hour)", name="t", timezone="Europe/Berlin")(lambda: None)
    assert list(eb.desired_rules(app, queues("default"))) == ["cloudq-p-t"]


def test_fifo_queue_target_gets_a_message_group(app: cloudq.App) -> None:
    """SQS FIFO targets need a MessageGroupId; cloudq gives scheduled jobs one group."""
    app.periodic("rate(1 hour)", name="t", queue="jobs.fifo")(lambda: None)
    rule = eb.desired_rules(app, queues("jobs.fifo"))["cloudq-p-t"]
    assert rule.target["SqsParameters"] == {"MessageGroupId": eb.FIFO_GROUP}


# -- EventBridge Scheduler ------------------------------------------------------------------------------------
def test_scheduler_plan_creates_group_then_schedules(app: cloudq.App) -> None:
    """Without the group, the plan creates it first; each schedule has the role, time zone and no flexible window."""
    app.periodic("cron(0 9 ? * MON-FRI *)", name="report", timezone="Europe/Berlin", kwargs={"a": 1})(lambda a: None)
    desired = sch.desired_schedules(app, queues("default"))
    changes = sch.build_schedules_plan(Owner("shop", "p-"), "cloudq-p-shop", desired, None, prune=False)
    assert [(c.action, c.kind, c.name) for c in changes] == [("create", "schedule group", "cloudq-p-shop"), ("create", "schedule", "cloudq-p-report")]
    request = changes[1].payload
    assert (request["GroupName"], request["ScheduleExpressionTimezone"], request["FlexibleTimeWindow"]) == ("cloudq-p-shop", "Europe/Berlin", {"Mode": "OFF"})
    assert request["Target"]["RoleArn"] == "arn:aws:iam::000000000000:role/s" and "Id" not in request["Target"]


def test_scheduler_plan_is_a_no_op_against_itself_and_prunes_only_ours(app: cloudq.App) -> None:
    """A schedule as Scheduler returns it (UTC implied) compares equal; prune leaves unmarked schedules alone."""
    app.periodic("rate(1 minute)", name="tick")(lambda: None)
    desired = sch.desired_schedules(app, queues("default"))
    returned = {k: v for k, v in desired["cloudq-p-tick"].items() if k != "ScheduleExpressionTimezone"}
    owner = Owner("shop", "p-")
    current = {
        "cloudq-p-tick": sch.CurrentSchedule("cloudq-p-tick", returned | {"State": "DISABLED"}),
        "cloudq-p-gone": sch.CurrentSchedule("cloudq-p-gone", {"Description": owner.marker("gone")}),
        "handmade": sch.CurrentSchedule("handmade", {"Description": "by hand"}),
    }
    changes = sch.build_schedules_plan(owner, "g", desired, current, prune=True)
    assert [(c.action, c.name) for c in changes] == [("unchanged", "cloudq-p-tick"), ("delete", "cloudq-p-gone")]
    assert changes[1].payload == {"Name": "cloudq-p-gone", "GroupName": "g"}


def test_scheduler_engine_needs_a_role(broker: MemoryBroker) -> None:
    """Without CLOUDQ_SCHEDULER_ROLE_ARN the scheduler engine stops with an actionable error."""
    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory"), broker=broker)
    app.periodic("rate(1 minute)", name="tick")(lambda: None)
    with pytest.raises(cloudq.ConfigurationError, match="CLOUDQ_SCHEDULER_ROLE_ARN"):
        sch.desired_schedules(app, queues("default"))


# -- list and CLI ---------------------------------------------------------------------------------------------
def test_status_shows_next_fire_times_in_the_tasks_timezone(app: cloudq.App) -> None:
    """`schedules list` shows the next three fire times on the task's wall clock, and drift from what is deployed."""
    app.periodic("cron(0 9 ? * MON-FRI *)", name="report", timezone="Europe/Berlin")(lambda: None)
    now = datetime(2026, 3, 27, 12, 0, tzinfo=timezone.utc)  # a Friday; DST starts Sunday the 29th
    status = _status(app.periodic_tasks["report"], "cloudq-p-report", "ENABLED", "cron(0 8 ? * MON-FRI *)", now, 3)
    assert isinstance(status, ScheduleStatus)
    line = status.render()
    assert "2026-03-30T09:00+02:00, 2026-03-31T09:00+02:00, 2026-04-01T09:00+02:00" in line
    assert "ENABLED (deployed: cron(0 8 ? * MON-FRI *); run sync)" in line


def test_cli_registers_schedules_commands() -> None:
    """`cloudq schedules sync|list` parse with their flags; rules is the default engine."""
    ns = build_parser().parse_args(["schedules", "sync", "m:app", "--dry-run", "--prune"])
    assert (ns.app, ns.dry_run, ns.prune, ns.engine) == ("m:app", True, True, "rules")
    ns = build_parser().parse_args(["schedules", "list", "--engine", "scheduler"])
    assert (ns.app, ns.engine) == (None, "scheduler")

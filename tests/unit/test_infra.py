"""`cloudq infra render`: the template derived from the registry, the committed infra/ file, and cfn-lint."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.brokers.sqs_requests import ensure_queue_attributes
from cloudq.cli import main
from cloudq.errors import ConfigurationError
from cloudq.examples import shop
from cloudq.infra.cloudformation import SQS_MAX_RETENTION_S, logical_ids, queue_properties, render, render_serverless, render_template, to_json
from cloudq.infra.ecs import ENABLE_ECS
from cloudq.queues import plan_queues, queue_visibility_timeout_s

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "infra" / "cloudformation.json"
SHOP_SPEC = "cloudq.examples.shop:app"
SHOP_PREFIX = "shop-"
REGENERATE = f"CLOUDQ_QUEUE_PREFIX={SHOP_PREFIX} CLOUDQ_JOB_STORE=dynamodb cloudq infra render {SHOP_SPEC} -o infra/cloudformation.json"


@pytest.fixture
def shop_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[cloudq.App]:
    """The example app with the settings infra/README.md renders it with: CLOUDQ_QUEUE_PREFIX and CLOUDQ_JOB_STORE."""
    for name in [n for n in os.environ if n.startswith("CLOUDQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CLOUDQ_QUEUE_PREFIX", SHOP_PREFIX)
    monkeypatch.setenv("CLOUDQ_JOB_STORE", "dynamodb")
    monkeypatch.setattr(shop.app, "settings", cloudq.Settings())
    yield shop.app


@pytest.fixture
def app() -> cloudq.App:
    """An app with what the example lacks: a FIFO queue, a long timeout, periodic tasks."""
    app = cloudq.App("reports", settings=cloudq.Settings(broker="memory", queue_prefix="r-", visibility_timeout_s=30))

    @app.task(name="reports.build", queue="reports", timeout=100, max_retries=1)
    def build(day: str) -> None: ...

    @app.task(name="ledger.post", queue="ledger.fifo")
    def post(entry: str) -> None: ...

    @app.periodic("rate(1 hour)", name="reports.hourly", queue="reports", kwargs={"day": "today"})
    def hourly(day: str) -> None: ...

    @app.periodic("cron(0 3 * * ? *)", name="ledger.close", queue="ledger.fifo")
    def close() -> None: ...

    return app


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


def cfn_lint(text: str) -> list[str]:
    try:
        from cfnlint.api import lint
    except ImportError:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("cfn-lint is not installed (make venv, or pip install --group dev)", pytrace=False)
        pytest.skip("cfn-lint is not installed (make venv, or pip install --group dev)")
    config = {"regions": ["us-east-1"], "include_checks": ["I"]}  # informational checks too (I3011: stateful resources)
    return [f"{m.rule.id} {m.rule.severity}: {m.message} ({'/'.join(map(str, m.path))})" for m in lint(text, config=config)]  # type: ignore[arg-type]


# -- the committed template -----------------------------------------------------------------------------------
def test_committed_template_is_fresh(shop_app: cloudq.App) -> None:
    """infra/cloudformation.json is exactly what the documented command renders today."""
    rendered = render(shop_app, SHOP_SPEC)
    assert COMMITTED.read_text(encoding="utf-8") == rendered, f"infra/cloudformation.json is stale; regenerate it: {REGENERATE}"


def test_cli_writes_the_committed_template(shop_app: cloudq.App, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cloudq infra render APP -o FILE` writes the same bytes as the committed file; without -o it prints them."""
    out = tmp_path / "cf.json"
    assert main(["infra", "render", SHOP_SPEC, "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["infra", "render", SHOP_SPEC]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text(encoding="utf-8")


def test_committed_template_passes_cfn_lint() -> None:
    """cfn-lint reports nothing at all (no errors, warnings or informational findings) on the committed template."""
    assert cfn_lint(COMMITTED.read_text(encoding="utf-8")) == []


def test_template_with_schedules_and_fifo_passes_cfn_lint(app: cloudq.App) -> None:
    """The parts the example app does not use (rules, queue policies, FIFO queues) lint clean too."""
    assert cfn_lint(render(app, "reports.tasks:app")) == []


# -- determinism ------------------------------------------------------------------------------------------------
def test_render_is_deterministic_and_order_independent(app: cloudq.App) -> None:
    """Rendering twice, or with the registry built in another order, gives the same bytes."""
    first = render(app, "x:app")
    app.registry = dict(reversed(list(app.registry.items())))
    app.periodic_tasks = dict(reversed(list(app.periodic_tasks.items())))
    assert render(app, "x:app") == first
    assert "enqueued_at" not in first and '"id"' not in first  # envelope Inputs carry no per-render values


def test_logical_ids_are_camel_case_and_never_collide() -> None:
    """Queue names map to stable alphanumeric ids; names that would collide get a hash of the original."""
    ids = logical_ids(["default", "billing-eu.fifo", "a-b", "a_b", "9lives"])
    assert ids["default"] == "Default" and ids["billing-eu.fifo"] == "BillingEuFifo" and ids["9lives"] == "Q9lives"
    assert ids["a-b"] != ids["a_b"] and ids["a-b"].startswith("AB") and len(set(ids.values())) == 5
    assert all(i.isalnum() for i in ids.values())


def test_logical_id_clash_between_resources_is_an_error() -> None:
    """A queue whose id would equal another queue's DLQ id is refused with a message, never silently merged."""
    app = cloudq.App("clash", settings=cloudq.Settings(broker="memory"))

    @app.task(queue="x")
    def one() -> None: ...

    @app.task(queue="x-dead-letter")
    def two() -> None: ...

    with pytest.raises(ConfigurationError, match="XDeadLetterQueue"):
        render_template(app, "x:app")


# -- queues -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("default_s", "timeouts", "expected"),
    [(30, [], 30), (30, [None, 10], 30), (30, [25], 30), (30, [26], 32), (30, [100, 5], 120), (0, [0.5], 1), (30, [40_000], 43_200)],
)
def test_visibility_timeout_rule(default_s: int, timeouts: list[float | None], expected: int) -> None:
    """max(default, ceil(slowest timeout x 1.2)), capped at SQS's 12 hours; 25 x 1.2 is 30, not 31."""
    assert queue_visibility_timeout_s(default_s, timeouts) == expected


def test_queues_follow_the_plan(app: cloudq.App) -> None:
    """Each queue has its DLQ, SSE, the plan's maxReceiveCount and the derived visibility timeout."""
    template = render_template(app, "x:app")
    reports = template["Resources"]["ReportsQueue"]["Properties"]
    [plan] = [p for p in plan_queues(app) if p.queue == "reports"]
    assert reports["QueueName"] == "r-reports" and reports["VisibilityTimeout"] == 120 == plan.config.visibility_timeout_s
    assert reports["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["ReportsDeadLetterQueue", "Arn"]}, "maxReceiveCount": 6}
    assert plan.config.max_receive_count == 6  # the queue's most patient task (3 retries) + 1 + the redrive slack
    assert reports["SqsManagedSseEnabled"] is True and "FifoQueue" not in reports
    dlq = template["Resources"]["ReportsDeadLetterQueue"]["Properties"]
    assert dlq["QueueName"] == "r-reports-dlq" and "RedrivePolicy" not in dlq and dlq["SqsManagedSseEnabled"] is True
    assert sorted(resources_of(template, "AWS::SQS::Queue")) == [
        "DefaultDeadLetterQueue", "DefaultQueue", "LedgerFifoDeadLetterQueue", "LedgerFifoQueue", "ReportsDeadLetterQueue", "ReportsQueue",
    ]  # fmt: skip


def test_stateful_resources_are_retained(app: cloudq.App, shop_app: cloudq.App) -> None:
    """Queues, DLQs, the job table and the worker's log group survive a stack deletion or a replacing update; nothing else is kept."""
    stateful = {"AWS::SQS::Queue", "AWS::Logs::LogGroup", "AWS::DynamoDB::Table"}
    for template in (render_template(app, "x:app"), render_template(shop_app, SHOP_SPEC), render_serverless(app)["resources"]):
        for logical_id, resource in template["Resources"].items():
            policies = (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy"))
            assert policies == (("Retain", "Retain") if resource["Type"] in stateful else (None, None)), logical_id
    assert render_template(shop_app, SHOP_SPEC)["Resources"]["WorkerLogGroup"]["DeletionPolicy"] == "Retain"


def test_dead_letter_queues_keep_messages_as_long_as_sqs_allows(app: cloudq.App) -> None:
    """Every DLQ retains for 14 days (1209600 s, SQS's maximum): a dead letter's age counts from its first enqueue."""
    resources = render_template(app, "x:app")["Resources"]
    dlqs = [r["Properties"] for k, r in resources.items() if k.endswith("DeadLetterQueue")]
    assert len(dlqs) == 3 and all(dlq["MessageRetentionPeriod"] == SQS_MAX_RETENTION_S == 1_209_600 for dlq in dlqs)


def test_fifo_queue_has_a_fifo_dlq_and_content_dedup_for_eventbridge(app: cloudq.App) -> None:
    """A .fifo queue and its DLQ are FIFO; a rule-targeted one also deduplicates by content, as EventBridge requires."""
    resources = render_template(app, "x:app")["Resources"]
    queue, dlq = resources["LedgerFifoQueue"]["Properties"], resources["LedgerFifoDeadLetterQueue"]["Properties"]
    assert queue["FifoQueue"] is True and queue["ContentBasedDeduplication"] is True
    assert dlq["QueueName"] == "r-ledger-dlq.fifo" and dlq["FifoQueue"] is True and dlq["ContentBasedDeduplication"] is True


def test_queue_properties_match_what_queues_ensure_sets(app: cloudq.App) -> None:
    """The template and `cloudq queues ensure` set the same attributes with the same values (no drift)."""
    for plan in plan_queues(app):
        props = queue_properties(plan.physical, plan.config, dlq_arn="arn:dlq")
        wanted = ensure_queue_attributes(plan.physical, plan.config, "arn:dlq")
        as_strings = {k: json.dumps(v) if k == "RedrivePolicy" else str(v).lower() if isinstance(v, bool) else str(v) for k, v in props.items()}
        assert as_strings.pop("QueueName") == plan.physical
        assert {k: json.loads(v) if k == "RedrivePolicy" else v for k, v in as_strings.items()} == {
            k: json.loads(v) if k == "RedrivePolicy" else v for k, v in wanted.items()
        }


def test_alarms_per_queue(app: cloudq.App) -> None:
    """Each DLQ alarms on any visible message; each queue on its oldest job's age over the threshold parameter."""
    template = render_template(app, "x:app")
    dead = template["Resources"]["ReportsDeadLetterAlarm"]["Properties"]
    assert dead["MetricName"] == "ApproximateNumberOfMessagesVisible" and dead["Threshold"] == 0
    assert dead["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ReportsDeadLetterQueue", "QueueName"]}}]
    age = template["Resources"]["ReportsBacklogAgeAlarm"]["Properties"]
    assert age["MetricName"] == "ApproximateAgeOfOldestMessage" and age["Threshold"] == {"Ref": "BacklogAgeAlarmThresholdSeconds"}
    assert template["Parameters"]["BacklogAgeAlarmThresholdSeconds"]["Default"] == 300
    assert len(resources_of(template, "AWS::CloudWatch::Alarm")) == 6


# -- IAM --------------------------------------------------------------------------------------------------------
def _statements(template: dict[str, Any], policy: str) -> dict[str, tuple[list[str], list[str]]]:
    document = template["Resources"][policy]["Properties"]["PolicyDocument"]
    return {s["Sid"]: (s["Action"], [r["Fn::GetAtt"][0] for r in s["Resource"]]) for s in document["Statement"]}


def test_producer_policy_only_sends_to_the_queues(app: cloudq.App) -> None:
    """The producer may send to and look up the queues, nothing else, and never the DLQs."""
    assert _statements(render_template(app, "x:app"), "ProducerPolicy") == {
        "EnqueueJobs": (["sqs:GetQueueUrl", "sqs:SendMessage"], ["DefaultQueue", "LedgerFifoQueue", "ReportsQueue"])
    }


def test_worker_policy_consumes_queues_and_sends_to_dlqs(app: cloudq.App) -> None:
    """The worker consumes the queues (and re-sends far ETAs to them); on the DLQs it may only send."""
    statements = _statements(render_template(app, "x:app"), "WorkerPolicy")
    actions, queues = statements["ConsumeJobs"]
    assert set(actions) == {
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage",
    }  # fmt: skip
    assert queues == ["DefaultQueue", "LedgerFifoQueue", "ReportsQueue"]
    assert statements["DeadLetterJobs"] == (
        ["sqs:GetQueueUrl", "sqs:SendMessage"], ["DefaultDeadLetterQueue", "LedgerFifoDeadLetterQueue", "ReportsDeadLetterQueue"],
    )  # fmt: skip
    assert not any(isinstance(n, str) and n.endswith("*") for n in walk(statements))


# -- periodic tasks -----------------------------------------------------------------------------------------------
def test_periodic_tasks_become_rules_with_the_envelope_as_input(app: cloudq.App) -> None:
    """One rule per periodic task, targeting its queue with the constant envelope; FIFO targets get a group."""
    resources = render_template(app, "x:app")["Resources"]
    rule = resources["ReportsHourlyScheduleRule"]["Properties"]
    assert rule["Name"] == "cloudq-r-reports.hourly" and rule["ScheduleExpression"] == "rate(1 hour)"
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ReportsQueue", "Arn"]} and "SqsParameters" not in target
    assert target["Input"] == app.periodic_tasks["reports.hourly"].envelope_body("cloudq-r-reports.hourly")
    assert json.loads(target["Input"])["kwargs"] == {"day": "today"}
    [fifo_target] = resources["LedgerCloseScheduleRule"]["Properties"]["Targets"]
    assert fifo_target["SqsParameters"] == {"MessageGroupId": "cloudq-scheduled"}


def test_queue_policy_lets_only_the_rules_send(app: cloudq.App) -> None:
    """Each targeted queue has one policy letting events.amazonaws.com send for its own rules only."""
    template = render_template(app, "x:app")
    policies = resources_of(template, "AWS::SQS::QueuePolicy")
    assert sorted(policies) == ["LedgerFifoQueuePolicy", "ReportsQueuePolicy"]
    props = policies["ReportsQueuePolicy"]["Properties"]
    assert props["Queues"] == [{"Ref": "ReportsQueue"}]
    [statement] = props["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ReportsHourlyScheduleRule", "Arn"]}}}


def test_app_without_periodic_tasks_has_no_rules() -> None:
    """No periodic tasks, no rules and no queue policies."""
    app = cloudq.App("plain", settings=cloudq.Settings(broker="memory"))

    @app.task
    def work() -> None: ...

    template = render_template(app, "x:app")
    assert not resources_of(template, "AWS::Events::Rule") and not resources_of(template, "AWS::SQS::QueuePolicy")


def test_example_app_has_one_rule_for_its_periodic_task(shop_app: cloudq.App) -> None:
    """The committed template of the example app schedules its one periodic task on the default queue."""
    template = render_template(shop_app, SHOP_SPEC)
    rules = resources_of(template, "AWS::Events::Rule")
    assert list(rules) == ["ReportsHourlyRevenueScheduleRule"] and list(resources_of(template, "AWS::SQS::QueuePolicy")) == ["DefaultQueuePolicy"]
    [target] = rules["ReportsHourlyRevenueScheduleRule"]["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["DefaultQueue", "Arn"]} and json.loads(target["Input"])["task"] == "reports.hourly_revenue"


def test_schedules_rules_cannot_express_are_refused(app: cloudq.App) -> None:
    """A cron with a time zone cannot be an EventBridge rule: rendering fails and says why, at render time."""

    @app.periodic("cron(0 8 * * ? *)", name="reports.morning", queue="reports", timezone="Europe/Berlin")
    def morning() -> None: ...

    with pytest.raises(ConfigurationError, match="EventBridge rules only"):
        render_template(app, "x:app")


# -- ECS and formats ------------------------------------------------------------------------------------------------
def test_ecs_section_is_conditional_and_runs_the_worker(shop_app: cloudq.App) -> None:
    """Every ECS resource hangs on the EnableEcsWorker condition; the task runs `cloudq worker` with the app's settings."""
    template = render_template(shop_app, SHOP_SPEC)
    ecs = {k: r for k, r in template["Resources"].items() if "Condition" in r}
    assert {r["Condition"] for r in ecs.values()} == {ENABLE_ECS}
    assert {r["Type"] for r in ecs.values()} >= {"AWS::ECS::Service", "AWS::ECS::TaskDefinition", "AWS::ApplicationAutoScaling::ScalingPolicy"}
    [container] = ecs["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert container["EntryPoint"] == ["cloudq", "worker"] and env["CLOUDQ_APP"] == SHOP_SPEC and env["CLOUDQ_QUEUE_PREFIX"] == SHOP_PREFIX
    assert env["CLOUDQ_BROKER"] == "sqs" and container["HealthCheck"]["Command"][:3] == ["CMD", "cloudq", "health"]
    assert ecs["WorkerTaskRole"]["Properties"]["ManagedPolicyArns"] == [{"Ref": "WorkerPolicy"}]


def test_autoscaling_tracks_backlog_per_task(shop_app: cloudq.App) -> None:
    """Target tracking on (visible jobs over all queues) / running tasks, toward the BacklogPerTaskTarget parameter."""
    policy = render_template(shop_app, SHOP_SPEC)["Resources"]["WorkerScalingPolicy"]["Properties"]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    metrics = {m["Id"]: m for m in config["CustomizedMetricSpecification"]["Metrics"]}
    assert config["TargetValue"] == {"Ref": "BacklogPerTaskTarget"} and policy["PolicyType"] == "TargetTrackingScaling"
    assert metrics["backlog_per_task"]["Expression"] == "(FILL(q0, 0) + FILL(q1, 0)) / tasks"
    assert [m["ReturnData"] for m in metrics.values()] == [False, False, False, True]
    assert metrics["q0"]["MetricStat"]["Metric"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["BillingQueue", "QueueName"]}


def test_serverless_fragment_is_self_contained(app: cloudq.App) -> None:
    """--format serverless: a resources: section with no parameters, conditions or ECS, referring only to its own resources."""
    fragment = render_serverless(app, backlog_age_threshold_s=600)
    assert list(fragment) == ["resources"] and sorted(fragment["resources"]) == ["Outputs", "Resources"]
    resources = fragment["resources"]["Resources"]
    refs = {n["Ref"] for n in walk(fragment) if isinstance(n, dict) and "Ref" in n}
    atts = {n["Fn::GetAtt"][0] for n in walk(fragment) if isinstance(n, dict) and "Fn::GetAtt" in n}
    assert refs | atts <= set(resources)
    assert not any(isinstance(n, dict) and "Fn::If" in n for n in walk(fragment))
    assert not any("Condition" in r for r in resources.values()) and not any("Worker" in k and "Policy" not in k for k in resources)
    assert resources["ReportsBacklogAgeAlarm"]["Properties"]["Threshold"] == 600
    assert json.loads(render(app, "x:app", "serverless", backlog_age_threshold_s=600)) == fragment


def test_serverless_fragment_lints_clean_as_a_template(app: cloudq.App) -> None:
    """Wrapped into a bare template, the serverless resources pass cfn-lint."""
    fragment = render_serverless(app)["resources"]
    assert cfn_lint(to_json({"AWSTemplateFormatVersion": "2010-09-09", **fragment})) == []


def test_the_job_table_and_its_grants_come_with_a_dynamodb_job_store(app: cloudq.App, shop_app: cloudq.App) -> None:
    """CLOUDQ_JOB_STORE=dynamodb: an on-demand table with TTL, least-privilege grants, and the ECS worker told about it."""
    assert "JobTable" not in render_template(app, "x:app")["Resources"]  # the test app keeps no state in DynamoDB
    template = render_template(shop_app, SHOP_SPEC)
    table = template["Resources"]["JobTable"]["Properties"]
    assert (table["TableName"], table["BillingMode"]) == ("shop-cloudq-jobs", "PAY_PER_REQUEST")
    assert table["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}] and "GlobalSecondaryIndexes" not in table
    grants = {}
    for policy in ("ProducerPolicy", "WorkerPolicy"):
        (statement,) = [s for s in template["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"] if s["Sid"] == "JobState"]
        assert statement["Resource"] == [{"Fn::GetAtt": ["JobTable", "Arn"]}]
        grants[policy] = set(statement["Action"])
    assert grants["ProducerPolicy"] == {"dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
    assert grants["WorkerPolicy"] == grants["ProducerPolicy"] | {"dynamodb:BatchGetItem", "dynamodb:DescribeTable"}
    assert not any("Scan" in a or a.endswith("*") for actions in grants.values() for a in actions)
    (container,) = template["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert environment["CLOUDQ_JOB_STORE"] == "dynamodb" and environment["CLOUDQ_JOB_TABLE"] == {"Ref": "JobTable"}

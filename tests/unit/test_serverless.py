"""serverless.yml: the example app on AWS Lambda agrees with its registry and with `cloudq infra render`.

The file is read with plain ``yaml.safe_load`` (it has no ``!`` tags). Its ``resources:`` is a reference to
infra/serverless-resources.json, which `cloudq infra render --format serverless` writes under the function's
own environment; the function's events, IAM statements and timeouts are checked here against the registry.
The last test runs the Serverless Framework v3 itself, offline: the one `make test` installs (scripts/serverless.sh),
which must then work, or on a laptop running plain pytest one installed before or cached by npx (else it skips).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, a dependency of cfn-lint (the dev group)

import cloudq
from cloudq.examples import shop
from cloudq.infra.cloudformation import logical_ids, render
from cloudq.queues import plan_queues
from cloudq.schedules.plan import resource_name

from .test_infra import cfn_lint

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVERLESS = ROOT / "serverless.yml"
RESOURCES = ROOT / "infra" / "serverless-resources.json"
CLOUDFORMATION = ROOT / "infra" / "cloudformation.json"
RESOURCES_REF = "${file(./infra/serverless-resources.json):resources}"
SHOP_SPEC = "cloudq.examples.shop:app"
SHOP_PREFIX = "shop-"  # the prefix infra/cloudformation.json is rendered with
AWS_SQS_MIN_VISIBILITY_FACTOR = 6  # AWS: the queue's visibility timeout >= 6 x the function timeout
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(SERVERLESS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def function(config: dict[str, Any]) -> dict[str, Any]:
    return config["functions"]["worker"]


@pytest.fixture(scope="module")
def environment(config: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in config["provider"]["environment"].items()}


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    return json.loads(RESOURCES.read_text(encoding="utf-8"))["resources"]["Resources"]


@pytest.fixture
def shop_app(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> Iterator[cloudq.App]:
    """The example app with the settings the deployed function gets: serverless.yml's environment, nothing else."""
    for name in [n for n in os.environ if n.startswith("CLOUDQ_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(shop.app, "settings", cloudq.Settings())
    yield shop.app


def regenerate_command(environment: dict[str, str]) -> str:
    settings = " ".join(f"{name}={value}" for name, value in environment.items())
    return f"{settings} cloudq infra render {SHOP_SPEC} --format serverless -o infra/serverless-resources.json"


def get_att(logical_id: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def queue_ids(app: cloudq.App) -> dict[str, str]:
    return logical_ids(plan.queue for plan in plan_queues(app))


# -- the resources: rendered, committed, in agreement with infra/ -----------------------------------------------
def test_resources_file_is_fresh(shop_app: cloudq.App, environment: dict[str, str]) -> None:
    """infra/serverless-resources.json is what `cloudq infra render --format serverless` gives under the function's environment."""
    command = regenerate_command(environment)
    assert RESOURCES.read_text(encoding="utf-8") == render(shop_app, SHOP_SPEC, "serverless"), f"stale; regenerate it: {command}"
    assert command in (ROOT / "infra" / "README.md").read_text(encoding="utf-8"), "infra/README.md must document the command"


def test_serverless_yml_takes_its_resources_from_the_rendered_file(config: dict[str, Any]) -> None:
    """`resources:` is the rendered file, by reference, so there is one copy of the queues, rules and alarms."""
    assert config["resources"] == RESOURCES_REF


def test_resources_agree_with_the_cloudformation_template(resources: dict[str, dict[str, Any]]) -> None:
    """Same logical ids and the same properties as infra/cloudformation.json (less its optional ECS service),
    but for the queues' VisibilityTimeout (sized for Lambda here) and the alarm knobs (parameters there)."""
    template = json.loads(CLOUDFORMATION.read_text(encoding="utf-8"))
    ours = {k: r for k, r in template["Resources"].items() if "Condition" not in r}

    def comparable(resource: dict[str, Any]) -> dict[str, Any]:
        props = dict(resource["Properties"])
        for knob in ("VisibilityTimeout", "Threshold", "AlarmActions"):
            props.pop(knob, None)
        return {**resource, "Properties": props}

    assert sorted(resources) == sorted(ours)
    assert {k: comparable(r) for k, r in resources.items()} == {k: comparable(r) for k, r in ours.items()}
    assert template["Metadata"]["cloudq"]["QueuePrefix"] == SHOP_PREFIX


# -- the function ----------------------------------------------------------------------------------------------
def test_provider_and_environment(config: dict[str, Any], environment: dict[str, str]) -> None:
    """Serverless v3 on AWS, Python 3.12; the app runs on SQS with the prefix infra/ uses."""
    assert config["frameworkVersion"] == "3" and config["provider"]["name"] == "aws" and config["provider"]["runtime"] == "python3.12"
    assert environment["CLOUDQ_BROKER"] == "sqs" and environment["CLOUDQ_QUEUE_PREFIX"] == SHOP_PREFIX


def test_one_sqs_event_per_queue_reporting_batch_item_failures(function: dict[str, Any], shop_app: cloudq.App) -> None:
    """Every queue of the registry feeds the function, 10 records a batch, with partial batch failures."""
    events = [event["sqs"] for event in function["events"]]
    qids = queue_ids(shop_app)
    assert [e["arn"] for e in events] == [get_att(f"{qids[q]}Queue") for q in shop_app.queues()]
    for event in events:
        assert event["batchSize"] == 10 and event["functionResponseType"] == "ReportBatchItemFailures"
        assert isinstance(event["maximumBatchingWindow"], int) and 0 < event["maximumBatchingWindow"] <= 300


def test_timeouts_follow_the_aws_guidance(function: dict[str, Any], shop_app: cloudq.App, resources: dict[str, dict[str, Any]]) -> None:
    """Each queue hides a batch for >= 6 x the function timeout (+ the batching window); the function outlasts every task."""
    timeout_s = function["timeout"]
    window_s = max(e["sqs"]["maximumBatchingWindow"] for e in function["events"])
    queues = [resources[f"{qid}Queue"]["Properties"] for qid in queue_ids(shop_app).values()]
    assert all(q["VisibilityTimeout"] >= AWS_SQS_MIN_VISIBILITY_FACTOR * timeout_s + window_s for q in queues)
    slowest = max(t.timeout or 0 for t in shop_app.registry.values())
    assert slowest < timeout_s <= 900
    assert shop_app.settings.visibility_timeout_s == min(q["VisibilityTimeout"] for q in queues)


def test_iam_statements_are_the_worker_policy(config: dict[str, Any], resources: dict[str, dict[str, Any]]) -> None:
    """The function's role gets exactly the rendered WorkerPolicy: consume and re-send on the queues, send on the DLQs."""
    statements = config["provider"]["iam"]["role"]["statements"]
    assert statements == resources["WorkerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:SendMessage"} <= set(
        by_sid["ConsumeJobs"]["Action"]
    )
    assert all(r["Fn::GetAtt"][0].endswith("DeadLetterQueue") for r in by_sid["DeadLetterJobs"]["Resource"])


def test_handler_is_the_apps_lambda_handler_and_runs_a_scheduled_job(
    function: dict[str, Any], environment: dict[str, str], resources: dict[str, dict[str, Any]]
) -> None:
    """The handler path resolves as the Lambda runtime resolves it, to app.lambda_handler of a module that only
    the function imports; under the function's environment it runs the hourly rule's job from an SQS record."""
    module, _, attribute = function["handler"].rpartition(".")
    [target] = resources["ReportsHourlyRevenueScheduleRule"]["Properties"]["Targets"]
    rule_input = target["Input"]  # the body EventBridge sends to the queue
    script = f"""
import importlib, json
from cloudq.runtimes.aws_lambda import LambdaHandler
from cloudq.examples import shop
assert "lambda_handler" not in shop.app.__dict__, "importing the tasks built a handler"
handler = getattr(importlib.import_module({module.replace("/", ".")!r}), {attribute!r})
assert isinstance(handler, LambdaHandler) and handler is shop.app.lambda_handler
record = {{"messageId": "m-1", "receiptHandle": "r-1", "body": {rule_input!r}, "attributes": {{"ApproximateReceiveCount": "1"}},
          "messageAttributes": {{}}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:shop-default"}}
print("RESULT", json.dumps(handler({{"Records": [record]}}, None)))
"""
    env = {"PATH": os.environ.get("PATH", ""), **DUMMY_AWS, **environment}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    assert 'RESULT {"batchItemFailures": []}' in result.stdout
    assert '"task": "reports.hourly_revenue"' in result.stdout and '"event": "job.succeeded"' in result.stdout


def test_the_artifact_is_what_make_lambda_package_builds_from_the_lambda_lock(config: dict[str, Any]) -> None:
    """package.artifact is the zip `make lambda-package` writes, from requirements/lambda.txt with --no-deps (so no
    aioboto3/aiobotocore/aiohttp), as Linux wheels for the function's runtime."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"LAMBDA_ZIP := {config['package']['artifact']}" in makefile
    recipe = makefile.split("\nlambda-package:", 1)[1].split("\n\n", 1)[0]
    assert "-r requirements/lambda.txt ." in recipe and "--no-deps" in recipe and "--only-binary=:all:" in recipe
    runtime = config["provider"]["runtime"].removeprefix("python")
    assert f"--python-version {runtime}" in recipe and "--platform manylinux2014_x86_64" in recipe
    assert config["provider"]["architecture"] == "x86_64"
    assert "make lambda-package" in SERVERLESS.read_text(encoding="utf-8")


# -- the queues and the schedules ---------------------------------------------------------------------------------
def test_every_queue_has_its_dlq_and_redrive_policy(shop_app: cloudq.App, resources: dict[str, dict[str, Any]]) -> None:
    """Each logical queue is a queue named with the prefix, redriving to its own DLQ after the plan's receive count."""
    qids = queue_ids(shop_app)
    for plan in plan_queues(shop_app):
        queue = resources[f"{qids[plan.queue]}Queue"]["Properties"]
        dlq = resources[f"{qids[plan.queue]}DeadLetterQueue"]["Properties"]
        assert queue["QueueName"] == plan.physical == f"{SHOP_PREFIX}{plan.queue}" and dlq["QueueName"] == plan.dead_letter_queue
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": get_att(f"{qids[plan.queue]}DeadLetterQueue"),
            "maxReceiveCount": plan.config.max_receive_count,
        }
    queue_resources = [k for k, r in resources.items() if r["Type"] == "AWS::SQS::Queue"]
    assert len(queue_resources) == 2 * len(shop_app.queues())


def test_schedules_match_the_periodic_tasks(shop_app: cloudq.App, resources: dict[str, dict[str, Any]]) -> None:
    """One rule per periodic task: its expression, its queue as the target, its job envelope as the Input."""
    rules = {r["Properties"]["Name"]: r["Properties"] for r in resources.values() if r["Type"] == "AWS::Events::Rule"}
    specs = shop_app.periodic_tasks.values()
    assert specs and sorted(rules) == sorted(resource_name(SHOP_PREFIX, spec.name) for spec in specs)
    qids = queue_ids(shop_app)
    for spec in specs:
        name = resource_name(SHOP_PREFIX, spec.name)
        [target] = rules[name]["Targets"]
        assert rules[name]["ScheduleExpression"] == spec.schedule.expression and rules[name]["State"] == "ENABLED"
        assert target["Arn"] == get_att(f"{qids[spec.queue]}Queue") and target["Input"] == spec.envelope_body(name)


# -- the Serverless Framework itself, offline ---------------------------------------------------------------------
LOCAL_SERVERLESS = ROOT / ".build" / "npm" / "node_modules" / ".bin" / "serverless"  # where scripts/serverless.sh installs it
# Read at import: the shop_app fixture clears every CLOUDQ_* variable before the test body runs.
REQUIRED_SERVERLESS = os.environ.get("CLOUDQ_SERVERLESS", "").strip()


# cfn-lint's informational findings on resources serverless@3.40.0 generates itself, not on ours: its deployment
# bucket policy's Fn::Join, and the function's log group, which it creates without Deletion/UpdateReplacePolicy.
# Exact, so that any other finding (one of ours, or a new one of the framework's) fails the test.
_LOG_GROUP_I3011 = "I3011 informational: '{}' is a required property (The default action when replacing/removing a resource is to delete it. Set explicit values for stateful resource) (Resources/WorkerLogGroup)"
FRAMEWORK_FINDINGS = [
    *(f"I1022 informational: Prefer using Fn::Sub over Fn::Join with an empty delimiter (Resources/ServerlessDeploymentBucketPolicy/Properties/PolicyDocument/Statement/0/Resource/{i}/Fn::Join/0)" for i in (0, 1)),
    *(_LOG_GROUP_I3011.format(policy) for policy in ("DeletionPolicy", "UpdateReplacePolicy")),
]


def serverless_v3() -> list[str]:
    """The Serverless Framework v3 (v4 needs a login, so only v3 is used).

    ``make test`` installs it into .build/npm (scripts/serverless.sh) and sets CLOUDQ_SERVERLESS: then it
    must work, or the test fails. Without that variable, an earlier install in .build/npm is used, else
    ``npx --offline serverless@3`` if npx has it cached, else the test skips (plain pytest on a laptop)."""
    if REQUIRED_SERVERLESS:
        if not works(REQUIRED_SERVERLESS):
            pytest.fail(f"CLOUDQ_SERVERLESS={REQUIRED_SERVERLESS} is not a working serverless v3: scripts/serverless.sh installs it (npm, Node.js >= 18)", pytrace=False)
        return [REQUIRED_SERVERLESS]
    if works(str(LOCAL_SERVERLESS)):
        return [str(LOCAL_SERVERLESS)]
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx is not installed (Node.js), so the Serverless Framework cannot run")
    command = [npx, "--yes", "--offline", "serverless@3"]
    try:
        probe = subprocess.run([*command, "--version"], env=offline_env(), capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("`npx --offline serverless@3 --version` did not answer within 60 s")
    if probe.returncode != 0 or "Framework Core: 3." not in probe.stdout:
        pytest.skip("serverless v3 is not in the npm cache; `npx --yes serverless@3 --version` caches it (this test never downloads)")
    return command


def works(serverless: str) -> bool:
    """``serverless --version`` answers as v3, offline."""
    try:
        probe = subprocess.run([serverless, "--version"], env=offline_env(), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and "Framework Core: 3." in probe.stdout


def offline_env() -> dict[str, str]:
    """No telemetry, dummy credentials, and every HTTP(S) request sent to a closed local port."""
    proxy = "http://127.0.0.1:9"
    quiet = {"SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off", "SLS_DEPRECATION_DISABLE": "*"}
    proxies = {name: proxy for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return {**os.environ, **DUMMY_AWS, **quiet, **proxies, "NO_COLOR": "1"}


def test_serverless_framework_packages_it_offline(tmp_path: Path, resources: dict[str, dict[str, Any]], shop_app: cloudq.App) -> None:
    """`serverless package` (v3, offline) resolves the file reference and compiles a template holding our resources
    verbatim, one event source mapping per queue with partial batch failures, and cfn-lint finds nothing in it."""
    command = serverless_v3()
    shutil.copy(SERVERLESS, tmp_path / "serverless.yml")
    (tmp_path / "infra").mkdir()
    shutil.copy(RESOURCES, tmp_path / "infra" / RESOURCES.name)
    (tmp_path / ".build").mkdir()
    with zipfile.ZipFile(tmp_path / ".build" / "shop-lambda.zip", "w") as artifact:  # stands for the pip-built package
        artifact.writestr("cloudq/__init__.py", "")

    result = subprocess.run(
        [*command, "package", "--stage", "test"], cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=110, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    text = (tmp_path / ".serverless" / "cloudformation-template-update-stack.json").read_text(encoding="utf-8")
    compiled = json.loads(text)["Resources"]
    assert {k: compiled[k] for k in resources} == resources
    [function] = [r["Properties"] for r in compiled.values() if r["Type"] == "AWS::Lambda::Function"]
    assert function["Handler"] == "cloudq/examples/shop_lambda.handler" and function["Runtime"] == "python3.12"
    mappings = [r["Properties"] for r in compiled.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    mappings.sort(key=lambda m: m["EventSourceArn"]["Fn::GetAtt"][0])
    assert [m["EventSourceArn"] for m in mappings] == [get_att(f"{qid}Queue") for qid in sorted(queue_ids(shop_app).values())]
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and m["BatchSize"] == 10 for m in mappings)
    assert cfn_lint(text) == FRAMEWORK_FINDINGS

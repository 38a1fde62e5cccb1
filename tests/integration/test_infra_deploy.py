"""The rendered CloudFormation deploys to LocalStack, and a worker runs jobs through the stack's queues.

The stack is deployed with its parameters at their defaults, so the optional ECS worker is off: LocalStack's
community CloudFormation has no ECS or Application Auto Scaling provider (it marks those resources complete
without creating anything), so there is nothing real to check there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

import cloudq
from cloudq.infra.cloudformation import render

from .conftest import receive_all, run_worker_until

APP_SPEC = "tests.integration.test_infra_deploy:app"  # only the ECS task's CLOUDQ_APP, which stays off here
ran: list[int] = []


def build_app(settings: cloudq.Settings) -> cloudq.App:
    app = cloudq.App("infra-it", settings=settings)

    @app.task(name="it.add", queue="work", timeout=20)
    def add(a: int, b: int) -> None:
        ran.append(a + b)

    @app.task(name="it.refund", queue="work")
    def refund(order: str) -> None:
        raise cloudq.Reject(f"order {order}: refund window closed")

    @app.periodic("rate(1 day)", name="it.nightly", queue="work")  # a rule and a queue policy in the stack
    def nightly() -> None: ...

    @app.periodic("rate(1 day)", name="it.ledger", queue="ledger.fifo")  # a FIFO target: group id, content dedup
    def ledger() -> None: ...

    return app


@pytest.fixture
def aws(localstack_endpoint: str) -> Iterator[Callable[[str], Any]]:
    clients: list[Any] = []

    def client(service: str) -> Any:
        clients.append(boto3.client(service, endpoint_url=localstack_endpoint, region_name="us-east-1"))
        return clients[-1]

    yield client
    for c in clients:
        c.close()


Stack = tuple[cloudq.App, dict[str, str]]


@pytest.fixture
def stack(make_settings: Callable[..., cloudq.Settings], unique_name: Callable[..., str], aws: Callable[[str], Any]) -> Iterator[Stack]:
    """The app's rendered template deployed as a stack (its own queue prefix); deleted afterwards, with the
    queues the stack retains."""
    app = build_app(make_settings(max_retries=1))
    cloudformation = aws("cloudformation")
    name = unique_name("cloudq-infra")
    cloudformation.create_stack(StackName=name, TemplateBody=render(app, APP_SPEC), Capabilities=["CAPABILITY_IAM"])
    try:
        cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        [described] = cloudformation.describe_stacks(StackName=name)["Stacks"]
        yield app, {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    finally:
        cloudformation.delete_stack(StackName=name)
        cloudformation.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        delete_queues(aws("sqs"), app.settings.queue_prefix)


def delete_queues(sqs: Any, prefix: str) -> None:
    """The queues a deleted stack left behind on purpose (DeletionPolicy: Retain)."""
    for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
        sqs.delete_queue(QueueUrl=url)


def test_stack_creates_queues_alarms_rule_and_policies(stack: Stack, aws: Callable[[str], Any]) -> None:
    """The deployed queues carry the plan's attributes, and the rule, its queue policy, alarms and IAM policies exist."""
    app, outputs = stack
    sqs = aws("sqs")
    url = sqs.get_queue_url(QueueName=app.settings.queue_name("work"))["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert outputs["WorkQueueArn"] == attributes["QueueArn"]
    assert attributes["VisibilityTimeout"] == "24"  # the 20 s task timeout x 1.2
    assert attributes["SqsManagedSseEnabled"] == "true"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive == {"deadLetterTargetArn": outputs["WorkDeadLetterQueueArn"], "maxReceiveCount": 4}  # max_retries 1 + 1 + slack 2
    [statement] = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}

    rule = aws("events").describe_rule(Name=f"cloudq-{app.settings.queue_prefix}it.nightly")
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == rule["Arn"]
    [target] = aws("events").list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == attributes["QueueArn"] and json.loads(target["Input"])["task"] == "it.nightly"

    fifo_url = sqs.get_queue_url(QueueName=app.settings.queue_name("ledger.fifo"))["QueueUrl"]
    fifo = sqs.get_queue_attributes(QueueUrl=fifo_url, AttributeNames=["FifoQueue", "ContentBasedDeduplication", "RedrivePolicy"])["Attributes"]
    assert fifo["FifoQueue"] == fifo["ContentBasedDeduplication"] == "true"
    assert json.loads(fifo["RedrivePolicy"])["deadLetterTargetArn"].endswith(":" + app.settings.dlq_name("ledger.fifo"))

    alarms = aws("cloudwatch").describe_alarms(AlarmNamePrefix=app.settings.queue_prefix)["MetricAlarms"]
    assert len(alarms) == 6  # per queue (default, ledger.fifo, work): DLQ not empty, backlog age
    for policy in ("ProducerPolicyArn", "WorkerPolicyArn"):
        assert aws("iam").get_policy(PolicyArn=outputs[policy])["Policy"]["Arn"] == outputs[policy]


async def test_worker_runs_jobs_through_the_stack_queues(stack: Stack, sqs_client: Any) -> None:
    """A job succeeds through the stack's queue; a rejected job lands in the stack's DLQ with its reason."""
    app, outputs = stack
    ran.clear()
    app.registry["it.add"].delay(2, 3)
    app.registry["it.refund"].delay("o-42")
    worker = await run_worker_until(app, lambda w: w.stats.succeeded == 1 and w.stats.dead_lettered == 1, timeout_s=60)
    assert ran == [5] and worker.stats.retried == 0

    dlq_arn = outputs["WorkDeadLetterQueueArn"]
    dlq_url = sqs_client.get_queue_url(QueueName=dlq_arn.rsplit(":", 1)[-1])["QueueUrl"]
    [dead] = receive_all(sqs_client, dlq_url, 1)
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert json.loads(dead["Body"])["task"] == "it.refund"
    assert attributes["cloudq-reason"] == "rejected" and attributes["cloudq-error"] == "order o-42: refund window closed"


def test_deleting_the_stack_keeps_its_queues_and_their_jobs(
    make_settings: Callable[..., cloudq.Settings], unique_name: Callable[..., str], aws: Callable[[str], Any]
) -> None:
    """Queues and DLQs are retained (DeletionPolicy: Retain): once the stack is deleted they still exist, jobs and all."""
    app = cloudq.App("infra-retain", settings=make_settings())

    @app.task(name="it.keep", queue="keep")
    def keep(n: int) -> None: ...

    cloudformation, sqs = aws("cloudformation"), aws("sqs")
    name = unique_name("cloudq-retain")
    cloudformation.create_stack(StackName=name, TemplateBody=render(app, APP_SPEC), Capabilities=["CAPABILITY_IAM"])
    try:
        cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        ref = keep.delay(7)
    finally:
        app.close()
        cloudformation.delete_stack(StackName=name)
        cloudformation.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    try:
        url = sqs.get_queue_url(QueueName=app.settings.queue_name("keep"))["QueueUrl"]
        sqs.get_queue_url(QueueName=app.settings.dlq_name("keep"))  # raises QueueDoesNotExist if it went with the stack
        [kept] = receive_all(sqs, url, 1)
        assert json.loads(kept["Body"])["id"] == ref.id
    finally:
        delete_queues(sqs, app.settings.queue_prefix)

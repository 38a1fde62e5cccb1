"""Inside the Lambda runtime the handler settles records through boto3 in threads, without aioboto3.

A fresh interpreter plays the function: AWS_LAMBDA_FUNCTION_NAME set, the example app's handler,
records received from LocalStack. What it must not do on its cold path is import aioboto3/aiohttp; and
what the Lambda package leaves out (requirements/lambda.txt: no aioboto3, aiobotocore, aiohttp) it must
not need, even for a task that enqueues with ``.adelay``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.queues import plan_queues
from tests.lambda_package import guard

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

FUNCTION = textwrap.dedent(
    """
    import json, sys
    from cloudq.examples.shop_lambda import app, handler
    from cloudq.runtimes.lambda_local import sqs_record

    queue = app.settings.queue_name("default")
    deliveries = handler.run(app.broker.receive(queue, max_messages=10, wait_s=5))
    records = [sqs_record(d, region="us-east-1") for d in deliveries]
    result = handler({"Records": records}, None)
    loaded = sorted(m for m in ("aioboto3", "aiobotocore", "aiohttp") if m in sys.modules)
    print(json.dumps({"result": result, "received": len(records), "loaded": loaded, "async_io": app.broker.async_io}))
    """
)


def run_function(source: str, function_name: str, endpoint: str, prefix: str) -> tuple[dict[str, Any], str]:
    """Run ``source`` in a fresh interpreter as the Lambda runtime would (AWS_LAMBDA_FUNCTION_NAME set, settings
    from CLOUDQ_* only); returns the JSON report it prints last, and its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    env.update(
        AWS_LAMBDA_FUNCTION_NAME=function_name, CLOUDQ_BROKER="sqs", CLOUDQ_ENDPOINT_URL=endpoint,
        CLOUDQ_REGION="us-east-1", CLOUDQ_QUEUE_PREFIX=prefix, CLOUDQ_LOG_LEVEL="WARNING",
    )  # fmt: skip
    run = subprocess.run([sys.executable, "-c", source], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


def test_records_settle_through_boto3_threads_inside_the_lambda_runtime(localstack_endpoint: str, prefix: str, sqs_client: Any) -> None:
    settings = cloudq.Settings(broker="sqs", endpoint_url=localstack_endpoint, region="us-east-1", queue_prefix=prefix)
    producer = cloudq.App("shop", settings=settings)  # enqueues by task name, to the default queue
    for plan in plan_queues(producer):
        producer.broker.ensure_queue(plan.physical, plan.config)
    retried = producer.enqueue("search.update_index", "product-1")  # Retry(delay=1): visibility change
    rejected = producer.enqueue("crm.notify_legacy", "customer-1")  # Reject: sent to the DLQ
    producer.close()

    report, _ = run_function(FUNCTION, "shop-worker", localstack_endpoint, prefix)

    assert report["received"] == 2
    assert report["result"] == {"batchItemFailures": [{"itemIdentifier": retried.message_id}]}
    assert report["async_io"] == "threads" and report["loaded"] == []
    dlq_url = sqs_client.get_queue_url(QueueName=f"{prefix}default-dlq")["QueueUrl"]
    dead = sqs_client.receive_message(QueueUrl=dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=5)["Messages"]
    assert [json.loads(m["Body"])["id"] for m in dead] == [rejected.id]
    assert dead[0]["MessageAttributes"]["cloudq-reason"]["StringValue"] == "rejected"
    url = sqs_client.get_queue_url(QueueName=f"{prefix}default")["QueueUrl"]
    back = sqs_client.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=10)["Messages"]
    assert [(m["MessageId"], m["Attributes"]["ApproximateReceiveCount"]) for m in back] == [(retried.message_id, "2")]


# An app of the function's own, whose async task enqueues a follow-up job with .adelay.
FAN_OUT = """
import json, sys
import cloudq
from cloudq.runtimes.lambda_local import sqs_record

app = cloudq.App("fan-out")

@app.task(name="it.follow_up")
def follow_up(n: int) -> None: ...

@app.task(name="it.fan_out")
async def fan_out(n: int) -> None:
    await follow_up.adelay(n + 1)

handler = app.lambda_handler
deliveries = handler.run(app.broker.receive(app.settings.queue_name("default"), max_messages=10, wait_s=5))
result = handler({"Records": [sqs_record(d, region="us-east-1") for d in deliveries]}, None)
print(json.dumps({"result": result, "received": len(deliveries), "async_io": app.broker.async_io}))
"""


def test_adelay_from_a_task_works_without_the_async_stack_installed(localstack_endpoint: str, prefix: str, sqs_client: Any) -> None:
    """With only the Lambda package importable (no aioboto3, aiobotocore or aiohttp), a task's `.adelay` enqueues
    through boto3 on threads: the job is acknowledged and its follow-up job waits in the queue."""
    settings = cloudq.Settings(broker="sqs", endpoint_url=localstack_endpoint, region="us-east-1", queue_prefix=prefix)
    producer = cloudq.App("fan-out", settings=settings)
    sqs_client.create_queue(QueueName=f"{prefix}default")
    job = producer.enqueue("it.fan_out", 41)
    producer.close()

    report, stderr = run_function(guard() + FAN_OUT, "fan-out", localstack_endpoint, prefix)
    assert "async_client_unavailable" not in stderr  # never even tried to build an aioboto3 client

    assert report == {"result": {"batchItemFailures": []}, "received": 1, "async_io": "threads"}
    url = sqs_client.get_queue_url(QueueName=f"{prefix}default")["QueueUrl"]
    [follow_up] = sqs_client.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    envelope = json.loads(follow_up["Body"])
    assert (envelope["task"], envelope["args"]) == ("it.follow_up", [42]) and envelope["id"] != job.id

"""Observability across processes on LocalStack: a trace from a producer process through a `cloudq worker`
process and through the Lambda handler (`cloudq lambda-local`, real SQS records), with the SDK's in-memory
exporter in each process; and EMF lines of a real worker run on SQS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import cloudq

from .conftest import ensure_queues

# The app module of every process: the OpenTelemetry SDK with an in-memory exporter is set up first, as
# opentelemetry-instrument would, so CLOUDQ_TRACING=auto turns tracing on; each process writes its finished
# spans to $SPANS at exit.
APP_SOURCE = '''
import atexit, json, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

import cloudq

app = cloudq.App("traced")


@app.task(name="tr.work")
def work(n):
    with trace.get_tracer("task").start_as_current_span("task body"):
        return n


def dump():
    with open(os.environ["SPANS"], "a") as out:
        for s in exporter.get_finished_spans():
            out.write(json.dumps({
                "process": os.environ["PROCESS"], "name": s.name, "kind": s.kind.name, "trace_id": s.context.trace_id,
                "span_id": s.context.span_id, "parent": s.parent.span_id if s.parent else None,
                "links": [link.context.span_id for link in s.links], "attributes": dict(s.attributes or {}),
            }) + "\\n")


atexit.register(dump)
'''


@pytest.fixture
def env(make_settings: Any, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tr_app.py").write_text(APP_SOURCE)
    settings = make_settings()
    app = cloudq.App("traced", settings=settings)
    app.task(name="tr.work")(lambda n: n)
    ensure_queues(app)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")},
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "CLOUDQ_BROKER": "sqs", "CLOUDQ_ENDPOINT_URL": str(settings.endpoint_url), "CLOUDQ_REGION": "us-east-1",
        "CLOUDQ_QUEUE_PREFIX": settings.queue_prefix, "CLOUDQ_WAIT_TIME_S": "1", "CLOUDQ_LOG_FORMAT": "json",
        "SPANS": str(tmp_path / "spans.jsonl"),
    }  # fmt: skip


def run(args: list[str], env: dict[str, str], cwd: Path, process: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *args], env={**env, "PROCESS": process}, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def spans(env: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(env["SPANS"]).read_text().splitlines()]


@pytest.mark.parametrize("runtime", ["worker", "lambda-local"])
def test_a_trace_crosses_from_a_producer_process_to_the_consumer_process(env: dict[str, str], tmp_path: Path, runtime: str) -> None:
    """A .delay() and a .map() of 2 in one process, consumed in another (the worker, or the Lambda handler fed SQS
    records): the delay's consumer span is a child of its PRODUCER send span; each mapped job's consumer span is a
    child of its own job's PRODUCER create span, which the batch's PRODUCER send span links to; each task's own span
    is its consumer span's child."""
    run(["-c", "import tr_app; tr_app.work.delay(7); tr_app.work.map([(1,), (2,)])"], env, tmp_path, "producer")
    run(["-m", "cloudq", runtime, "tr_app:app", "--burst"], env, tmp_path, "consumer")
    found = spans(env)
    [single] = [s for s in found if s["process"] == "producer" and s["kind"] == "PRODUCER" and "cloudq.job_id" in s["attributes"] and s["name"] == "send tr.work"]
    creates = [s for s in found if s["process"] == "producer" and s["name"] == "create tr.work"]
    [batch] = [s for s in found if s["process"] == "producer" and "messaging.batch.message_count" in s["attributes"]]
    consumers = {s["attributes"]["cloudq.job_id"]: s for s in found if s["process"] == "consumer" and s["kind"] == "CONSUMER"}
    bodies = [s for s in found if s["name"] == "task body"]

    assert len(consumers) == 3 and len(creates) == 2 and len(bodies) == 3
    consumer = consumers[single["attributes"]["cloudq.job_id"]]
    assert consumer["trace_id"] == single["trace_id"] and consumer["parent"] == single["span_id"]
    assert batch["name"] == "send tr.work" and batch["kind"] == "PRODUCER" and batch["attributes"]["messaging.batch.message_count"] == 2
    assert sorted(batch["links"]) == sorted(c["span_id"] for c in creates)
    for create in creates:
        own = consumers[create["attributes"]["cloudq.job_id"]]
        assert own["trace_id"] == create["trace_id"] and own["parent"] == create["span_id"]
    assert sorted(b["parent"] for b in bodies) == sorted(c["span_id"] for c in consumers.values())
    attributes = consumer["attributes"]
    assert attributes["messaging.system"] == "aws_sqs" and attributes["messaging.destination.name"] == "default"
    assert attributes["cloudq.task"] == "tr.work" and attributes["cloudq.attempt"] == 1 and attributes["cloudq.outcome"] == "ack"
    assert attributes["messaging.message.id"] and attributes["cloudq.job_id"]
    assert single["attributes"]["messaging.destination.name"] == "default"


def test_a_worker_on_sqs_writes_emf_lines_with_the_runs_counts(env: dict[str, str], tmp_path: Path) -> None:
    """`cloudq worker --burst` with CLOUDQ_METRICS=emf: its stdout holds EMF lines counting the 3 jobs, the
    receives and the DeleteMessageBatch calls of the run."""
    run(["-c", "import tr_app; tr_app.work.map([(1,), (2,), (3,)])"], env, tmp_path, "producer")
    result = run(["-m", "cloudq", "worker", "tr_app:app", "--burst"], {**env, "CLOUDQ_METRICS": "emf", "CLOUDQ_TRACING": "none"}, tmp_path, "worker")
    docs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"_aws"')]
    jobs = [d for d in docs if d.get("task") == "tr.work"]
    queue = [d for d in docs if "receives" in d]

    assert sum(d.get("jobs_succeeded", 0) for d in jobs) == 3
    assert sum(d["job_duration_ms"]["Count"] for d in jobs if "job_duration_ms" in d) == 3
    assert sum(sum(d["messages_per_receive"]["Values"][i] * c for i, c in enumerate(d["messages_per_receive"]["Counts"])) for d in queue) == 3
    assert sum(sum(v * c for v, c in zip(d["deletes_per_call"]["Values"], d["deletes_per_call"]["Counts"])) for d in docs if "deletes_per_call" in d) == 3


def test_the_emf_alarms_deploy_with_the_stack(make_settings: Any, unique_name: Any, localstack_endpoint: str) -> None:
    """`cloudq infra render` with CLOUDQ_METRICS=emf deploys on LocalStack's CloudFormation: per queue, the
    two SQS alarms and the two on the EMF metrics, in the app's namespace with the app and queue dimensions."""
    import boto3

    from cloudq.infra.cloudformation import render

    app = cloudq.App("emf-it", settings=make_settings(metrics="emf", metrics_namespace="emf-it"))
    app.task(name="it.t", queue="work")(lambda: None)
    cloudformation, sqs, cloudwatch = (boto3.client(s, endpoint_url=localstack_endpoint, region_name="us-east-1") for s in ("cloudformation", "sqs", "cloudwatch"))
    name = unique_name("cloudq-emf")
    cloudformation.create_stack(StackName=name, TemplateBody=render(app, "x:app"), Capabilities=["CAPABILITY_IAM"])
    try:
        cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        alarms = cloudwatch.describe_alarms(AlarmNamePrefix=app.settings.queue_prefix)["MetricAlarms"]
    finally:
        cloudformation.delete_stack(StackName=name)
        cloudformation.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        for url in sqs.list_queues(QueueNamePrefix=app.settings.queue_prefix).get("QueueUrls", []):
            sqs.delete_queue(QueueUrl=url)
        for client in (cloudformation, sqs, cloudwatch):
            client.close()
    emf = {a["AlarmName"]: a for a in alarms if a["Namespace"] == "emf-it"}

    assert len(alarms) == 8 and len(emf) == 4  # queues default and work
    failures = emf[app.settings.queue_name("work") + "-failures"]
    assert failures["MetricName"] == "jobs_failed" and failures["Statistic"] == "Sum"
    assert {d["Name"]: d["Value"] for d in failures["Dimensions"]} == {"app": "emf-it", "queue": "work"}


def test_status_watch_reads_the_oldest_age_of_an_sqs_queue_from_cloudwatch(make_settings: Any, localstack_endpoint: str) -> None:
    """The AWS/SQS ApproximateAgeOfOldestMessage datapoint of a queue (put here by hand: LocalStack's own SQS
    metrics are off) is what `status --watch` shows for it; a queue without one gets none."""
    import boto3

    from cloudq.cli.watch import CloudWatchAges

    settings = make_settings()
    name = settings.queue_name("aged")
    cloudwatch = boto3.client("cloudwatch", endpoint_url=localstack_endpoint, region_name="us-east-1")
    try:
        cloudwatch.put_metric_data(
            Namespace="AWS/SQS",
            MetricData=[{"MetricName": "ApproximateAgeOfOldestMessage", "Dimensions": [{"Name": "QueueName", "Value": name}], "Value": 421.0, "Unit": "Seconds"}],
        )
    finally:
        cloudwatch.close()
    ages = CloudWatchAges(settings, every_s=0)
    try:
        found: dict[str, float] = {}
        for _ in range(20):  # LocalStack may answer GetMetricData before the datapoint is stored
            found = ages([name, settings.queue_name("fresh")])
            if found:
                break
            time.sleep(0.25)
        assert found == {name: 421.0}
        assert not ages.failed
    finally:
        ages.close()

"""Job state on AWS services: SQS on LocalStack, DynamoDB on moto's standalone server, over HTTP.

* A `cloudq worker` process and the Lambda handler (in-process, real SQS records) share one DynamoDB job
  store: what one ran, the other sees, and a duplicate delivery is acked without running.
* A worker whose job table does not exist stops at start with one line naming the table (exit 2).
* Two producer processes enqueueing one unique job at the same instant get the same job.
* The SIGKILL duplicate on SQS is not run twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import cloudq

from .conftest import ensure_queues

APP_SOURCE = '''
import os
import cloudq

app = cloudq.App("jobsaws")

def note(line: str) -> None:
    with open(os.environ["RAN"], "a") as f:
        f.write(line + "\\n")

@app.task(name="add")
def add(a: int, b: int) -> int:
    note(f"add {a} {b}")
    return a + b

@app.task(name="fail", max_retries=0)
def fail() -> None:
    raise cloudq.Reject("no such customer")

@app.task(name="rebuild", unique=True)
def rebuild(index: str) -> str:
    note(f"rebuild {index}")
    return index
'''

ENQUEUE_AT = '''
import sys, time
from jobsaws import rebuild
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(rebuild.delay("products").id, flush=True)
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobsaws.py").write_text(APP_SOURCE)
    (tmp_path / "enqueue_at.py").write_text(ENQUEUE_AT)
    return tmp_path


@pytest.fixture
def setup(project: Path, make_settings: Any, dynamodb_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[cloudq.App, dict[str, str]]:
    """The module's app in this process on LocalStack + moto, and the environment its worker processes get."""
    table = f"jobs-{uuid.uuid4().hex[:10]}"
    settings = make_settings(job_store="dynamodb", job_table=table, job_store_endpoint_url=dynamodb_endpoint, visibility_timeout_s=2)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("RAN", str(project / "ran.txt"))
    import importlib

    module = importlib.import_module("jobsaws")
    module = importlib.reload(module)
    app: cloudq.App = module.app
    app.settings = settings
    ensure_queues(app)
    app.job_store.ensure()  # type: ignore[union-attr]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")},
        "PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")]),
        "RAN": str(project / "ran.txt"),
        "CLOUDQ_BROKER": "sqs", "CLOUDQ_ENDPOINT_URL": str(settings.endpoint_url), "CLOUDQ_REGION": "us-east-1",
        "CLOUDQ_QUEUE_PREFIX": settings.queue_prefix, "CLOUDQ_WAIT_TIME_S": "1", "CLOUDQ_VISIBILITY_TIMEOUT_S": "2",
        "CLOUDQ_JOB_STORE": "dynamodb", "CLOUDQ_JOB_TABLE": table, "CLOUDQ_JOB_STORE_ENDPOINT_URL": dynamodb_endpoint,
        "CLOUDQ_LOG_FORMAT": "json",
    }  # fmt: skip
    return app, env


def runs(project: Path) -> list[str]:
    path = project / "ran.txt"
    return path.read_text().splitlines() if path.exists() else []


def burst(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudq", "worker", "jobsaws:app", "--burst"], env={**env, **extra},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def sqs_record(app: cloudq.App, queue: str = "default") -> dict[str, Any]:
    """A real SQS record, as Lambda's event source mapping hands it over (received from LocalStack)."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=app.settings.endpoint_url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=app.settings.queue_name(queue))["QueueUrl"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=5, AttributeNames=["All"], MessageAttributeNames=["All"])
    (message,) = got["Messages"]
    return {
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
        "attributes": message["Attributes"], "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:000000000000:{app.settings.queue_name(queue)}",
    }  # fmt: skip


def wait_visible(app: cloudq.App, n: int) -> None:
    deadline = time.monotonic() + 30
    while app.broker.stats(app.settings.queue_name("default")).visible < n:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the message did not come back"
        time.sleep(0.2)


def test_the_worker_and_the_lambda_handler_share_one_job_store(setup: tuple[cloudq.App, dict[str, str]], project: Path) -> None:
    app, env = setup
    by_worker = app.enqueue("add", 1, 2)
    failing = app.enqueue("fail")
    assert by_worker.status().status == "queued"
    done = burst(env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert by_worker.result(timeout=5) == 3
    with pytest.raises(cloudq.JobFailed) as failed:
        failing.result(timeout=5)
    assert (failed.value.status, failed.value.reason, failed.value.error_message) == ("dead_lettered", "rejected", "no such customer")

    by_lambda = app.enqueue("add", 20, 22)
    record = sqs_record(app)
    assert app.lambda_handler({"Records": [record]}, None) == {"batchItemFailures": []}
    assert by_lambda.result(timeout=5) == 42

    # Nothing deleted the record's message (the event source mapping would have): it comes back after its
    # 2 s visibility, a duplicate delivery of a job that succeeded, and the worker acks it without running it.
    wait_visible(app, 1)
    again = burst(env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert runs(project) == ["add 1 2", "add 20 22"]
    stopped = [json.loads(line) for line in again.stdout.splitlines() if '"worker.stopped"' in line]
    assert stopped[0]["received"] == 1 and stopped[0]["succeeded"] == 0
    assert app.job(by_lambda.id).status().attempts == 1


def test_a_missing_job_table_stops_the_worker_at_start(setup: tuple[cloudq.App, dict[str, str]]) -> None:
    _, env = setup
    done = burst(env, CLOUDQ_JOB_TABLE="no-such-jobs")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("cloudq: error: job table 'no-such-jobs' does not exist")


def test_two_processes_enqueueing_one_unique_job_get_the_same_job(setup: tuple[cloudq.App, dict[str, str]], project: Path) -> None:
    app, env = setup
    start = time.time() + 3  # both interpreters are up by then
    procs = [subprocess.Popen([sys.executable, str(project / "enqueue_at.py"), str(start)], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    ids = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and ids[0] == ids[1] and ids[0]
    stats = app.broker.stats(app.settings.queue_name("default"))  # type: ignore[attr-defined]
    assert stats.visible + stats.delayed == 1


def test_the_sigkill_duplicate_is_not_run_twice(setup: tuple[cloudq.App, dict[str, str]], project: Path) -> None:
    app, env = setup
    ref = app.enqueue("add", 5, 5)
    worker = subprocess.Popen([sys.executable, "-m", "cloudq", "worker", "jobsaws:app"], env={**env, "CLOUDQ_DELETE_FLUSH_S": "60"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while ref.status().status != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    wait_visible(app, 1)  # the message is back after its 2 s visibility timeout
    again = burst(env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert runs(project) == ["add 5 5"]
    stats = app.broker.stats(app.settings.queue_name("default"))  # type: ignore[attr-defined]
    assert stats.visible + stats.in_flight == 0

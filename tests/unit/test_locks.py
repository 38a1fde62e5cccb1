"""requirements/: the exact pins the Docker image (runtime.txt) and the Lambda package (lambda.txt) install.

Both are written by scripts/lock.py from pyproject.toml. Here: they agree with pyproject.toml and with each
other, the Lambda lock leaves out the async stack, and what the Lambda handler imports is all in it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.lambda_package import LAMBDA_LOCK, LEFT_OUT, ROOT, RUNTIME_LOCK, canonical, guard, pins

pytestmark = pytest.mark.unit

DEPENDENCIES = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]]


def test_runtime_lock_pins_every_dependency_within_pyproject() -> None:
    """Every dependency in pyproject.toml is pinned to one exact version its specifier accepts."""
    locked = pins(RUNTIME_LOCK)
    for requirement in DEPENDENCIES:
        version = locked.get(canonical(requirement.name))
        assert version is not None and requirement.specifier.contains(version, prereleases=True), (requirement, version)
    lines = [line for line in RUNTIME_LOCK.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9-]+==[0-9][0-9A-Za-z.+-]*", line) for line in lines), lines
    assert "cloudq" not in locked


def test_lambda_lock_is_the_runtime_lock_without_the_async_stack() -> None:
    """Same versions as runtime.txt, every dependency but aioboto3, and none of aioboto3/aiobotocore/aiohttp."""
    runtime, lean = pins(RUNTIME_LOCK), pins(LAMBDA_LOCK)
    assert lean.items() <= runtime.items()
    assert {canonical(r.name) for r in DEPENDENCIES} - set(lean) == {"aioboto3"}
    assert set(lean).isdisjoint(LEFT_OUT) and set(LEFT_OUT) <= set(runtime)


def test_the_installed_versions_match_the_lambda_lock() -> None:
    """The venv the tests run in has the locked versions of the Lambda package, so the next test means something."""
    from importlib.metadata import version

    mismatched = {name: (want, version(name)) for name, want in pins(LAMBDA_LOCK).items() if version(name) != want}
    if mismatched:
        pytest.skip(f"this venv has other versions than requirements/lambda.txt: {mismatched}")


def test_the_handler_runs_with_only_the_lambda_package_importable(tmp_path: Path) -> None:
    """Importing the example handler and running records (a success, a retry) needs nothing outside lambda.txt;
    the integration test does it against LocalStack, dead letters and `.adelay` included."""
    script = guard() + """
import json
from cloudq.examples.shop_lambda import app, handler
app.broker._call = lambda queue, op, params: {}  # no SQS here: ChangeMessageVisibility's answer is empty anyway
def record(n, task, *args):
    body = json.dumps({"task": task, "args": list(args)})
    return {"messageId": f"m-{n}", "receiptHandle": f"r-{n}", "body": body, "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:default"}
records = [record(1, "cloudq.examples.shop.send_welcome_email", "ada@example.com"), record(2, "search.update_index", "p-1")]
print("RESULT", json.dumps(handler({"Records": records}, None)))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    env.update(AWS_LAMBDA_FUNCTION_NAME="shop-worker", CLOUDQ_BROKER="sqs", CLOUDQ_REGION="eu-west-1", CLOUDQ_LOG_LEVEL="WARNING")
    env.update(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="example", AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr + result.stdout
    [line] = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert json.loads(line.removeprefix("RESULT ")) == {"batchItemFailures": [{"itemIdentifier": "m-2"}]}

"""The chaos suite in small (`pytest -m chaos`): its proxy speaks SQS's wire, and a short run with every
kind of fault passes its own checks. `make chaos` is the full suite (chaos/README.md)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import pytest

from chaos.plan import GOOD
from chaos.proxy import FaultProxy
from cloudq.aws.errors import translate
from cloudq.errors import BrokerUnavailable

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A FaultProxy on its own loop in a thread (the client under test is sync boto3); no upstream needed."""
    loop = asyncio.new_event_loop()
    fault_proxy = FaultProxy(upstream_port=9, seed=1)
    loop.run_until_complete(fault_proxy.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield fault_proxy
    asyncio.run_coroutine_threadsafe(fault_proxy.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.mark.parametrize(("server_error", "codes"), [(0.0, {"RequestThrottled", "ThrottlingException"}), (1.0, {"InternalFailure", "ServiceUnavailableException"})])
def test_proxy_errors_are_ones_botocore_retries_and_cloudq_calls_transient(proxy: FaultProxy, server_error: float, codes: set[str]) -> None:
    """Throttles and 5xx in SQS's JSON wire shape: botocore parses the code and retries it (``max_attempts: 3``
    in standard mode is 3 retries, 4 calls, as cloudq configures its clients), and cloudq translates the final error to BrokerUnavailable."""
    proxy.throttle_share, proxy.server_error_share = 1.0, server_error
    config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 3})
    client = boto3.client("sqs", endpoint_url=proxy.url, region_name="us-east-1", config=config)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.send_message(QueueUrl=f"{proxy.url}/000000000000/q", MessageBody="x")
    client.close()
    response = caught.value.response
    assert response["Error"]["Code"] in codes
    assert response["ResponseMetadata"]["RetryAttempts"] == 3
    assert proxy.calls["SendMessage"] == 4
    assert isinstance(translate(caught.value, "sqs", "send_message"), BrokerUnavailable)


def test_a_short_chaos_run_passes_its_checks(localstack_endpoint: str, dynamodb_endpoint: str, tmp_path: Path) -> None:
    """SIGKILLs, an outage with a worker started in it, throttling, resets, latency and a rolling SIGTERM
    deploy on SQS without a job store and with DynamoDB's, then SIGKILLs and SIGTERMs on the local broker
    with its store: nothing lost, stranded or crashed, and no job the store saw succeed ran again."""
    command = [
        sys.executable, "-m", "chaos", "--endpoint", localstack_endpoint, "--dynamodb", dynamodb_endpoint, "--broker", "both",
        "--no-baseline", "-n", "600", "--store-jobs", "150", "-k", "3", "--duration", "8", "--outage", "2", "--throttle", "3",
        "--visibility", "6", "--timeout", "40", "--out", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "chaos: all checks passed" in result.stdout
    summary = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert {target: runs["faults"]["job_store"] for target, runs in summary.items()} == {"sqs": "none", "sqs+dynamodb": "dynamodb", "local": "local"}
    for target in ("sqs+dynamodb", "local"):
        figures = json.loads((tmp_path / f"{target}-faults" / "figures.json").read_text())
        assert figures["store_violations"] == 0
        good = sum(n for kind, n in figures["kinds"].items() if kind in GOOD)
        assert figures["store_end_state"]["good"] == {"succeeded": good}  # the store recorded every good job's success

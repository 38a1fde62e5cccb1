"""Smoke test of the test harness itself: LocalStack answers, and SQS behaves as localstack/run.sh sets it up.

If this fails, look at .localstack/localstack-<port>.log before at cloudq.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import boto3


def test_sqs_queue_round_trip(localstack_endpoint: str, unique_name: Callable[..., str]) -> None:
    sqs = boto3.client("sqs", endpoint_url=localstack_endpoint, region_name="us-east-1")
    try:
        url = sqs.create_queue(QueueName=unique_name())["QueueUrl"]
        try:
            # SQS_ENDPOINT_STRATEGY=dynamic: queue URLs point back at the host we called, not at
            # *.localhost.localstack.cloud (which needs public DNS).
            assert urlsplit(url).netloc == urlsplit(localstack_endpoint).netloc
            sqs.send_message(QueueUrl=url, MessageBody="ping")
            messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
            assert [m["Body"] for m in messages] == ["ping"]
        finally:
            sqs.delete_queue(QueueUrl=url)
    finally:
        sqs.close()

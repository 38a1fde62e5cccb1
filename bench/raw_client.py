"""The plain boto3 SQS client every raw side of the bench uses, configured like cloudq's own (standard
retries, the same timeouts). A module of its own, importing nothing else, so that a raw child process
pays no more start-up than the hand-written loop it stands for."""

from __future__ import annotations

from typing import Any

__all__ = ["sqs_client"]


def sqs_client(endpoint: str, region: str, pool: int = 10) -> Any:
    import boto3
    import botocore.config

    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=pool, connect_timeout=5, read_timeout=30
    )
    return boto3.session.Session(region_name=region).client("sqs", endpoint_url=endpoint, config=config)

"""The job store's DynamoDB table in a rendered template, and the grants its users need.

Rendered only when the app's settings say ``CLOUDQ_JOB_STORE=dynamodb`` (render with the target
environment's settings, as for the queue names). The table is on-demand (DynamoDB bills per request: see
the README's cost table), keyed by ``id`` alone (unique keys are items of the same table), with TTL on
``ttl`` and encryption at rest, and retained like the queues: deleting the stack never deletes job
state. No index: listing jobs is an admin scan (an index on status would cost a write per status change).

Grants, least privilege on this table only: the producer writes queued records, holds and releases
unique keys, reads state and cancels (PutItem, BatchWriteItem, UpdateItem, DeleteItem, GetItem); the
worker and the Lambda function also claim and finish jobs and read cancel requests in batches
(BatchGetItem), and check at start that the table exists (DescribeTable). ``cloudq jobs`` scans: give
that to the operators' own role (``dynamodb:Scan``), not to the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudq.jobs import store_kind, table_name

if TYPE_CHECKING:
    from cloudq.app import App

__all__ = ["JOB_TABLE_ID", "JobTableSection", "job_table_section"]

JOB_TABLE_ID = "JobTable"
PRODUCER_ACTIONS = ["dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
WORKER_ACTIONS = [*PRODUCER_ACTIONS, "dynamodb:BatchGetItem", "dynamodb:DescribeTable"]


@dataclass
class JobTableSection:
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    producer_actions: list[str] = field(default_factory=list)
    worker_actions: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def table_arn(self) -> dict[str, Any]:
        return {"Fn::GetAtt": [JOB_TABLE_ID, "Arn"]}


def job_table_section(app: App) -> JobTableSection:
    """The table, its grants and outputs; empty when the app keeps no job state in DynamoDB."""
    settings = app.settings
    if store_kind(settings) != "dynamodb":
        return JobTableSection()
    table = {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "TableName": table_name(settings),
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    }
    outputs = {
        "JobTableName": {"Description": "DynamoDB table of job state (CLOUDQ_JOB_TABLE)", "Value": {"Ref": JOB_TABLE_ID}},
        "JobTableArn": {"Description": "ARN of the job state table", "Value": {"Fn::GetAtt": [JOB_TABLE_ID, "Arn"]}},
    }
    return JobTableSection({JOB_TABLE_ID: table}, sorted(PRODUCER_ACTIONS), sorted(WORKER_ACTIONS), outputs)

"""The S3 bucket of large payloads (``CLOUDQ_PAYLOAD_BUCKET``) in ``cloudq infra render``'s template.

Rendered only when the setting is set (see :mod:`cloudq.payloads`):

* The bucket, named by the setting and retained with the stack (in-flight jobs point into it):
  SSE-S3 encryption (no KMS key, so no KMS permission to grant), every public access blocked,
  object ownership enforced, a policy that refuses plain-HTTP requests, and a lifecycle rule on the
  payload prefix that expires objects one day after the longest retention of the app's queues
  (DLQs: 14 days). An object normally goes when its job succeeds; the rule removes what a crash or
  a dead letter that was never redriven left behind, never one a live message still points to.
* IAM statements, scoped to ``<bucket>/<prefix>*``: producers ``s3:PutObject``; workers and Lambda
  functions (the worker policy serves both: they run the same consumer core) ``s3:GetObject`` and
  ``s3:DeleteObject``, plus ``s3:ListBucket`` on that prefix, without which S3 answers a missing
  object with AccessDenied rather than NoSuchKey, and the job could not be dead-lettered as
  ``payload_missing``.

Messages from AWS's extended clients must use the same bucket and key prefix to be readable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["EXPIRY_MARGIN_DAYS", "bucket_resources", "expiry_days", "producer_statements", "worker_statements"]

EXPIRY_MARGIN_DAYS = 1
BUCKET_ID = "PayloadBucket"
_DAY_S = 86_400


def expiry_days(retentions_s: Sequence[int]) -> int:
    """Days after which a payload object expires: the longest queue retention, rounded up, plus the margin."""
    return math.ceil(max(retentions_s, default=0) / _DAY_S) + EXPIRY_MARGIN_DAYS


def _objects_arn(bucket: str, prefix: str) -> str:
    return f"arn:aws:s3:::{bucket}/{prefix}*"


def bucket_resources(bucket: str, prefix: str, retentions_s: Sequence[int], tags: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """The bucket and its TLS-only policy, by logical id."""
    rule: dict[str, Any] = {
        "Id": "cloudq-expire-payloads",
        "Status": "Enabled",
        "ExpirationInDays": expiry_days(retentions_s),
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }
    if prefix:
        rule["Prefix"] = prefix
    props: dict[str, Any] = {
        "BucketName": bucket,
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
        },
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "LifecycleConfiguration": {"Rules": [rule]},
        "Tags": tags,
    }  # fmt: skip
    deny_http = {
        "Sid": "DenyPlainHttp",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    policy = {"Bucket": {"Ref": BUCKET_ID}, "PolicyDocument": {"Version": "2012-10-17", "Statement": [deny_http]}}
    return {
        BUCKET_ID: {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain", "Properties": props},
        f"{BUCKET_ID}Policy": {"Type": "AWS::S3::BucketPolicy", "Properties": policy},
    }


def producer_statements(bucket: str, prefix: str) -> list[dict[str, Any]]:
    return [{"Sid": "OffloadPayloads", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": [_objects_arn(bucket, prefix)]}]


def worker_statements(bucket: str, prefix: str) -> list[dict[str, Any]]:
    return [
        {"Sid": "ResolvePayloads", "Effect": "Allow", "Action": ["s3:DeleteObject", "s3:GetObject"], "Resource": [_objects_arn(bucket, prefix)]},
        {
            "Sid": "TellMissingPayloads",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        },
    ]

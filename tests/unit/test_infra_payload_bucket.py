"""`cloudq infra render` with CLOUDQ_PAYLOAD_BUCKET: the bucket of large payloads and its least-privilege IAM."""

from __future__ import annotations

import json
from typing import Any

import pytest

import cloudq
from cloudq.infra.cloudformation import render, render_template
from cloudq.infra.payload_bucket import expiry_days
from tests.unit.test_infra import cfn_lint

pytestmark = pytest.mark.unit


def make_app(**settings: Any) -> cloudq.App:
    app = cloudq.App("big", settings=cloudq.Settings(broker="memory", queue_prefix="big-", **settings))

    @app.task(name="digest")
    def digest(blob: str) -> None: ...

    @app.periodic("rate(1 hour)", name="hourly", args=("x",))
    def hourly(blob: str) -> None: ...

    return app


def statements(template: dict[str, Any], policy: str) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in template["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"]}


def test_without_a_bucket_nothing_changes() -> None:
    """No bucket resource and no S3 statement unless the setting is set."""
    text = render(make_app(), "big:app")
    assert "AWS::S3::Bucket" not in text and "s3:" not in text


def test_the_bucket_is_encrypted_private_tls_only_and_expires_objects_after_the_retention() -> None:
    """SSE, every public access block, ownership enforced, TLS only, expiry after 14 days plus one, retained."""
    template = render_template(make_app(payload_bucket="jobs-big", payload_prefix="p/"), "big:app")
    bucket = template["Resources"]["PayloadBucket"]
    props = bucket["Properties"]
    assert props["BucketName"] == "jobs-big" and bucket["DeletionPolicy"] == "Retain"
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    [rule] = props["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == "p/" and rule["ExpirationInDays"] == 15 and rule["Status"] == "Enabled"
    [deny] = template["Resources"]["PayloadBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_expiry_follows_the_longest_retention() -> None:
    """Rounded up to whole days, plus a day's margin."""
    assert expiry_days([3600, 4 * 86_400 + 1]) == 6


def test_producers_may_only_put_and_workers_only_get_delete_and_list_the_prefix() -> None:
    """Least privilege, scoped to the payload prefix; ListBucket lets a missing object read as NoSuchKey."""
    template = render_template(make_app(payload_bucket="jobs-big"), "big:app")
    producer = statements(template, "ProducerPolicy")
    assert producer["OffloadPayloads"]["Action"] == ["s3:PutObject"]
    assert producer["OffloadPayloads"]["Resource"] == ["arn:aws:s3:::jobs-big/cloudq/*"]
    worker = statements(template, "WorkerPolicy")
    assert worker["ResolvePayloads"]["Action"] == ["s3:DeleteObject", "s3:GetObject"]
    assert worker["ResolvePayloads"]["Resource"] == ["arn:aws:s3:::jobs-big/cloudq/*"]
    assert worker["TellMissingPayloads"]["Condition"] == {"StringLike": {"s3:prefix": ["cloudq/*"]}}
    actions = {a for policy in ("ProducerPolicy", "WorkerPolicy") for s in statements(template, policy).values() for a in s["Action"]}
    assert {a for a in actions if a.startswith("s3:")} == {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket"}


def test_the_template_with_a_bucket_passes_cfn_lint() -> None:
    """No finding, informational ones included."""
    assert cfn_lint(render(make_app(payload_bucket="jobs-big"), "big:app")) == []


def test_scheduled_inputs_are_signed_in_the_template_when_keys_are_set() -> None:
    """The rule's constant Input carries the signature (never the key)."""
    template = render_template(make_app(signing_keys="render-key-1"), "big:app")
    text = json.dumps(template)
    [rule] = [r for r in template["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert "cloudq-signature" in json.loads(rule["Properties"]["Targets"][0]["Input"])["headers"]
    assert "render-key-1" not in text

"""Signed envelopes on the memory broker: signing, tampering, rotation, unsigned jobs, keys never shown."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq.brokers.base import OutgoingMessage
from cloudq.brokers.memory import MemoryBroker
from cloudq.payloads import MemoryPayloadStore
from cloudq.runtimes.worker import Worker
from cloudq.signing import SIGNATURE_HEADER, Signer, canonical, parse_keys

pytestmark = pytest.mark.unit

OLD, NEW = "old-secret-3f9a7c", "new-secret-b81e22"


def make_app(broker: MemoryBroker, keys: str | None, **settings: Any) -> cloudq.App:
    app = cloudq.App("signed", settings=cloudq.Settings(broker="memory", max_retries=3, signing_keys=keys, **settings), broker=broker)
    app.ran = []  # type: ignore[attr-defined]

    @app.task(name="pay")
    def pay(account: str, cents: int) -> None:
        app.ran.append((account, cents))  # type: ignore[attr-defined]

    return app


async def burst(app: cloudq.App) -> Worker:
    worker = Worker(app, burst=True, burst_wait_s=0, burst_retry_wait_s=0)
    await asyncio.wait_for(worker.run(), 10)
    return worker


def reasons(broker: MemoryBroker) -> list[str]:
    return [a.get("cloudq-reason", "") for a in broker.attributes("default-dlq")]


async def test_signed_jobs_run() -> None:
    """A producer and a consumer sharing a key: the envelope carries a signature and the job runs."""
    broker = MemoryBroker()
    app = make_app(broker, NEW)
    app.get_task("pay").delay("acme", 100)
    [body] = broker.messages("default")
    assert json.loads(body)["headers"][SIGNATURE_HEADER].startswith("hmac-sha256:")
    await burst(app)
    assert app.ran == [("acme", 100)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["args"].__setitem__(1, 1_000_000),
        lambda d: d.__setitem__("task", "refund"),
        lambda d: d["kwargs"].__setitem__("x", 1),
        lambda d: d.__setitem__("id", "another-id"),
        lambda d: d.__setitem__("eta", "2020-01-01T00:00:00.000Z"),
    ],
    ids=["args", "task", "kwargs", "id", "eta"],
)
async def test_tampered_envelopes_are_dead_lettered_as_bad_signature_and_never_run(tamper: Any) -> None:
    """Changing any signed field after signing: reason bad_signature, no retry, the task never runs."""
    broker = MemoryBroker()
    app = make_app(broker, NEW)
    app.get_task("pay").delay("acme", 100)
    [delivery] = broker.receive_now("default", 1)
    data = json.loads(delivery.body)
    tamper(data)
    await broker.ack("default", [delivery])
    broker.send("default", [OutgoingMessage(json.dumps(data))])
    await burst(app)
    assert app.ran == [] and reasons(broker) == ["bad_signature"]  # type: ignore[attr-defined]


async def test_rotation_old_key_still_verifies_and_the_new_key_signs() -> None:
    """Keys "new,old": a job an old producer signed runs; a new job is signed with the new key, which a
    consumer holding only the old key refuses."""
    broker = MemoryBroker()
    old_producer, rotated = make_app(broker, OLD), make_app(broker, f"{NEW},{OLD}")
    old_producer.get_task("pay").delay("acme", 1)
    await burst(rotated)
    assert rotated.ran == [("acme", 1)]  # type: ignore[attr-defined]

    rotated.get_task("pay").delay("acme", 2)
    [body] = broker.messages("default")
    assert Signer(parse_keys(NEW)).verify(json.loads(body)) is True
    old_consumer = make_app(broker, OLD)
    await burst(old_consumer)
    assert old_consumer.ran == [] and reasons(broker) == ["bad_signature"]  # type: ignore[attr-defined]


async def test_unsigned_jobs_are_refused_unless_the_migration_flag_is_set() -> None:
    """Without CLOUDQ_ACCEPT_UNSIGNED an unsigned job is dead-lettered; with it, it runs and is logged."""
    broker = MemoryBroker()
    unsigned = json.dumps({"task": "pay", "args": ["acme", 5]})
    strict = make_app(broker, NEW)
    broker.send("default", [OutgoingMessage(unsigned)])
    await burst(strict)
    assert strict.ran == [] and reasons(broker) == ["bad_signature"]  # type: ignore[attr-defined]

    migrating = make_app(broker, NEW, accept_unsigned=True)
    broker.send("default", [OutgoingMessage(unsigned)])
    with capture_logs() as logs:
        await burst(migrating)
    assert migrating.ran == [("acme", 5)]  # type: ignore[attr-defined]
    assert any(e["event"] == "job.unsigned_accepted" and e["log_level"] == "warning" for e in logs)


async def test_a_job_delayed_past_15_minutes_is_signed_with_its_eta() -> None:
    """The ETA is set before signing: the job verifies, waits, and its ETA cannot be moved."""
    broker = MemoryBroker()
    app = make_app(broker, NEW)
    app.get_task("pay").with_options(delay=timedelta(hours=2)).delay("acme", 7)
    [body] = broker.messages("default")
    data = json.loads(body)
    assert data["eta"] and Signer(parse_keys(NEW)).verify(data) is True


async def test_an_offloaded_body_is_signed_inside_its_object() -> None:
    """A large job goes to S3 signed; the consumer resolves, verifies and runs it."""
    broker, store = MemoryBroker(), MemoryPayloadStore()
    app = cloudq.App("signed", settings=cloudq.Settings(broker="memory", signing_keys=NEW, payload_bucket="b"), broker=broker, payload_store=store)
    ran: list[int] = []

    @app.task(name="blob")
    def blob(data: str) -> None:
        ran.append(len(data))

    blob.delay("x" * 400_000)
    [stored] = store.objects.values()
    assert SIGNATURE_HEADER in json.loads(stored)["headers"]
    await burst(app)
    assert ran == [400_000]


def test_canonical_form_is_spelled_out_and_survives_mixed_key_types() -> None:
    """The signed bytes are the documented JSON array; keys of mixed types sort as the strings JSON makes them."""
    assert canonical("i", "t", (1,), {"b": 1, "a": 2}, None) == b'["cloudq-sig-v1","i","t",[1],{"a":2,"b":1},null]'
    signer = Signer(parse_keys(NEW))
    envelope = signer.sign(cloudq.Envelope("pay", ({1: "x", "a": "y"},)))
    assert signer.verify(json.loads(envelope.encode())) is True


def test_scheduled_inputs_are_signed_and_verify_without_an_id() -> None:
    """EventBridge inputs (no id, no eta; the message id names the job) carry a signature that verifies."""
    app = make_app(MemoryBroker(), NEW)

    @app.periodic("rate(1 hour)", name="nightly", args=("eu", 1))
    def nightly(region: str, n: int) -> None: ...

    from cloudq.schedules.eventbridge import sqs_target

    target = sqs_target(app.periodic_tasks["nightly"], "arn:aws:sqs:us-east-1:1:q", "cloudq-nightly", signer=app.wire.signer)
    data = json.loads(target["Input"])
    assert "id" not in data and app.wire.signer is not None and app.wire.signer.verify(data) is True


def test_keys_are_never_logged_or_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """Neither key appears in a repr, an error, a dead letter's attributes or a log line."""
    broker = MemoryBroker()
    app = make_app(broker, f"{NEW},{OLD}")
    other = make_app(broker, "third-key-77")
    other.get_task("pay").delay("acme", 1)
    with capture_logs() as logs:
        asyncio.run(burst(app))
    seen = " ".join(
        [repr(app.settings), str(app.settings), repr(app.wire.signer), json.dumps(logs, default=str), json.dumps(broker.attributes("default-dlq"))]
    )
    assert reasons(broker) == ["bad_signature"]
    assert NEW not in seen and OLD not in seen and "signature matches none" in seen
    env = cloudq.settings_env.EnvSettings(signing_keys=NEW)
    assert NEW not in repr(env)


def test_keys_are_not_in_status_output(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`cloudq status` with keys in the environment prints neither key, on stdout or stderr."""
    from cloudq.cli import main

    monkeypatch.setenv("CLOUDQ_SIGNING_KEYS", f"{NEW},{OLD}")
    monkeypatch.setenv("CLOUDQ_BROKER", "local")
    monkeypatch.setenv("CLOUDQ_LOCAL_PATH", str(tmp_path / "q.db"))
    assert main(["status", "cloudq.examples.shop:app"]) == 0
    out = capsys.readouterr()
    assert NEW not in out.out + out.err and OLD not in out.out + out.err


def test_routed_eventbridge_events_are_signed_by_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """An on_event task runs in Lambda with keys set: the handler signs the job it builds from the event."""
    from cloudq.runtimes import aws_lambda

    monkeypatch.setattr(aws_lambda, "configure_logging", lambda *args: None)
    app = make_app(MemoryBroker(), NEW)
    seen: list[Any] = []

    @app.on_event("shop.orders", "OrderPlaced")
    def placed(event: dict[str, Any]) -> None:
        seen.append(event["detail"])

    handler = app.lambda_handler
    try:
        response = handler({"source": "shop.orders", "detail-type": "OrderPlaced", "detail": {"id": 1}, "id": "e1"}, None)
    finally:
        handler.close()
    assert response["ok"] is True and seen == [{"id": 1}]


def test_arguments_json_cannot_carry_are_the_usual_envelope_error_when_signing() -> None:
    """Signing must not turn the producer's one-line error into a TypeError."""
    app = make_app(MemoryBroker(), NEW)
    with pytest.raises(cloudq.EnvelopeError, match="not JSON-serializable"):
        app.get_task("pay").delay("acme", object())
    with pytest.raises(cloudq.EnvelopeError, match="not JSON-serializable"):
        app.get_task("pay").delay("acme", float("nan"))


def test_schedules_sync_plans_signed_inputs_for_both_engines() -> None:
    """`schedules sync` (EventBridge rules and Scheduler schedules) deploys inputs signed with the app's first key."""
    from cloudq.schedules.eventbridge import desired_rules
    from cloudq.schedules.plan import QueueInfo
    from cloudq.schedules.scheduler import desired_schedules

    app = make_app(MemoryBroker(), f"{NEW},{OLD}", scheduler_role_arn="arn:aws:iam::1:role/s")

    @app.periodic("rate(1 hour)", name="nightly", args=("eu", 1))
    def nightly(region: str, n: int) -> None: ...

    queues = {"default": QueueInfo("default", "url", "arn:aws:sqs:us-east-1:1:default")}
    rule_input = next(iter(desired_rules(app, queues).values())).target["Input"]
    schedule_input = next(iter(desired_schedules(app, queues).values()))["Target"]["Input"]
    new_only = Signer(parse_keys(NEW))
    assert new_only.verify(json.loads(rule_input)) is True and new_only.verify(json.loads(schedule_input)) is True

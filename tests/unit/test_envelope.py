"""Envelope v1: encoding, strict decoding, and agreement with the shipped JSON Schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from cloudq.envelope import Envelope, envelope_schema
from cloudq.errors import EnvelopeError

pytestmark = pytest.mark.unit

SCHEMA = json.loads(envelope_schema())


def test_encode_roundtrip_keeps_every_field() -> None:
    """A full envelope survives encode/decode unchanged."""
    env = Envelope("billing.charge", ("c1", 100), {"currency": "EUR"}, headers={"trace": "abc"})
    back = Envelope.decode(env.encode())
    assert back == env
    assert json.loads(env.encode())["v"] == 1


def test_minimal_plain_boto3_body_is_a_complete_job() -> None:
    """{"task", "args", "kwargs"} alone decodes, taking the message id as job id."""
    env = Envelope.decode('{"task": "x.y", "args": [1], "kwargs": {"a": 2}}', default_id="mid-1")
    assert (env.task, env.args, env.kwargs, env.id, env.eta) == ("x.y", (1,), {"a": 2}, "mid-1", None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"args": []}', "missing required field 'task'"),
        ('{"task": ""}', "must not be empty"),
        ('{"task": 5}', "'task' must be str"),
        ('{"task": "t", "args": {"a": 1}}', "'args' must be list"),
        ('{"task": "t", "kwargs": [1]}', "'kwargs' must be dict"),
        ('{"task": "t", "v": 2}', "unsupported envelope version"),
        ('{"task": "t", "extra": 1}', "unknown envelope field"),
        ('{"task": "t", "eta": "tomorrow"}', "not an RFC 3339 time"),
        ('{"task": "t", "headers": {"a": 1}}', "map strings to strings"),
    ],
)
def test_invalid_bodies_raise_envelope_error_with_a_clear_message(body: str, message: str) -> None:
    """Every malformed body is an EnvelopeError that says what is wrong."""
    with pytest.raises(EnvelopeError, match=message):
        Envelope.decode(body)


def test_unserializable_arguments_fail_at_the_producer() -> None:
    """Arguments JSON cannot carry raise EnvelopeError when encoding, never pickle."""
    with pytest.raises(EnvelopeError, match="not JSON-serializable"):
        Envelope("t", (object(),)).encode()


def test_schema_accepts_what_cloudq_encodes_and_the_minimal_form() -> None:
    """The shipped JSON Schema validates encoded envelopes and the minimal form."""
    jsonschema.validate(json.loads(Envelope("t", (1,), {"k": "v"}).encode()), SCHEMA)
    jsonschema.validate({"task": "t", "args": [], "kwargs": {}}, SCHEMA)


@pytest.mark.parametrize("doc", [{"args": []}, {"task": "t", "extra": 1}, {"task": "t", "v": 2}, {"task": "t", "headers": {"a": 1}}])
def test_schema_rejects_what_decode_rejects(doc: dict) -> None:
    """The schema and the decoder agree on invalid documents."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)
    with pytest.raises(EnvelopeError):
        Envelope.from_dict(doc)

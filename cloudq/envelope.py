"""The wire format: Envelope v1, the JSON body of every SQS message cloudq sends.

An envelope is what a producer means ("run task T with these arguments"); a
:class:`~cloudq.brokers.base.Delivery` is one received copy of it. Any program can
produce envelopes, so :meth:`Envelope.decode` is strict about types and forgiving
about what is optional: ``{"task": "...", "args": [...], "kwargs": {...}}`` is a
complete job. The JSON Schema shipped in ``cloudq/schema/envelope-v1.json`` says the
same thing for other languages; a unit test keeps the two in agreement.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from cloudq.errors import EnvelopeError

__all__ = ["ENVELOPE_VERSION", "Envelope", "decode_dict", "encode_dict", "envelope_schema", "format_time", "parse_time", "utcnow"]

ENVELOPE_VERSION = 1
_KNOWN_KEYS = frozenset({"v", "id", "task", "args", "kwargs", "enqueued_at", "eta", "headers"})


def utcnow() -> datetime:
    """Now in UTC, at the millisecond precision the wire format carries (so round trips are exact)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z``: short, sortable, unambiguous."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str, *, field_name: str) -> datetime:
    """Parse RFC 3339; a time without an offset is taken as UTC rather than rejected.

    Python 3.11's ``fromisoformat`` reads a trailing ``Z`` itself (every envelope cloudq writes has one):
    tried first, it saves a microsecond per delivery; 3.10, and a lowercase ``z``, take the rewrite."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except (TypeError, ValueError, AttributeError) as exc:
            raise EnvelopeError(f"envelope field {field_name!r} is not an RFC 3339 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One job as it travels: which task, its arguments, and when it may run."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    enqueued_at: datetime = field(default_factory=utcnow)
    eta: datetime | None = None
    headers: dict[str, str] = field(default_factory=dict)
    v: int = ENVELOPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "id": self.id,
            "task": self.task,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "enqueued_at": format_time(self.enqueued_at),
            "eta": format_time(self.eta) if self.eta else None,
            "headers": self.headers,
        }

    def encode(self) -> str:
        """Serialize to compact JSON; arguments that JSON cannot carry are a producer error."""
        return encode_dict(self.to_dict())

    def with_headers(self, **headers: str) -> Envelope:
        return replace(self, headers={**self.headers, **headers})

    @classmethod
    def decode(cls, body: str | bytes, *, default_id: str | None = None) -> Envelope:
        """Parse and validate a message body; every problem is an :class:`EnvelopeError`.

        ``default_id`` (the message id) names jobs from producers that sent no ``id``.
        """
        return cls.from_dict(decode_dict(body), default_id=default_id)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, default_id: str | None = None) -> Envelope:
        version = data.get("v", ENVELOPE_VERSION)
        if version != ENVELOPE_VERSION:
            raise EnvelopeError(f"unsupported envelope version {version!r} (this cloudq reads v{ENVELOPE_VERSION})")
        if not _KNOWN_KEYS.issuperset(data):
            unknown = set(data) - _KNOWN_KEYS
            raise EnvelopeError(f"unknown envelope field(s): {', '.join(sorted(unknown))}")
        task = _typed(data, "task", str, required=True)
        if not task:
            raise EnvelopeError("envelope field 'task' must not be empty")
        job_id = _typed(data, "id", str) or default_id or uuid.uuid4().hex
        headers = _typed(data, "headers", dict) or {}
        if headers and not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise EnvelopeError("envelope field 'headers' must map strings to strings")
        enqueued_at = _typed(data, "enqueued_at", str)
        eta = _typed(data, "eta", str)
        args = _typed(data, "args", list)
        return cls(
            task=task,
            args=tuple(args) if args else (),
            kwargs=_typed(data, "kwargs", dict) or {},
            id=job_id,
            enqueued_at=parse_time(enqueued_at, field_name="enqueued_at") if enqueued_at else utcnow(),
            eta=parse_time(eta, field_name="eta") if eta else None,
            headers=headers,
        )


def decode_dict(body: str | bytes) -> dict[str, Any]:
    """A message body as the JSON object an envelope is, before its fields are checked (signature checks
    read it too); every problem is an :class:`EnvelopeError`."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"message body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EnvelopeError(f"envelope must be a JSON object, got {type(data).__name__}")
    return data


def encode_dict(data: dict[str, Any]) -> str:
    """An envelope's wire dict (:meth:`Envelope.to_dict`, maybe with more headers) as the compact JSON body."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"arguments of task {data.get('task')!r} are not JSON-serializable: {exc}") from exc


def _typed(data: dict[str, Any], key: str, kind: type, *, required: bool = False) -> Any:
    """``data[key]`` checked to be a ``kind`` (None if absent and not required); the worker runs this
    for every field of every delivery, so the exact JSON type is checked first."""
    value = data.get(key)
    if type(value) is kind:
        return value
    if value is None:
        if required:
            raise EnvelopeError(f"envelope is missing required field {key!r}")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise EnvelopeError(f"envelope field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def envelope_schema() -> str:
    """The JSON Schema of envelope v1, as shipped inside the package."""
    from importlib import resources  # here: only `cloudq schema` and tests read it (3 ms of every start-up)

    return resources.files("cloudq").joinpath("schema/envelope-v1.json").read_text(encoding="utf-8")

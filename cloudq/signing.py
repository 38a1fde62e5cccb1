"""Signed envelopes: an HMAC-SHA256 that lets consumers refuse jobs no trusted producer sent.

``CLOUDQ_SIGNING_KEYS`` holds one or more secrets, comma-separated. Producers sign every envelope
with the first; consumers accept a signature by any of them, so keys rotate without downtime: add
the new key second everywhere, then move it first, then drop the old one.

The signature travels inside the envelope, as the header ``cloudq-signature``
(``hmac-sha256:<64 hex digits>``), so it survives everything that keeps the body: an S3 offload
(the stored envelope is signed), a dead letter and its redrive, an ETA re-send, and EventBridge
inputs, which carry no message attributes. It covers what decides what runs, the canonical form::

    json.dumps(["cloudq-sig-v1", id, task, args, kwargs, eta], sort_keys=True,
               separators=(",", ":"), ensure_ascii=False).encode("utf-8")

where each value is the envelope's field as it is on the wire (``id`` and ``eta`` null when absent,
``args`` ``[]`` and ``kwargs`` ``{}`` when absent), so another language can sign too. Headers and
``enqueued_at`` are not covered: middleware may add headers, and they select no code.

Keys never appear in a log line, an error, a repr or a status output; neither does the signature a
message *should* have carried (it would let anyone forge that one message). hashlib and hmac are
imported with this module, which only apps with keys load.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cloudq.envelope import Envelope, encode_dict
from cloudq.errors import BadSignature, ConfigurationError, EnvelopeError

__all__ = ["SIGNATURE_HEADER", "Signer", "canonical", "parse_keys"]

SIGNATURE_HEADER = "cloudq-signature"
_SCHEME = "hmac-sha256:"
_VERSION = "cloudq-sig-v1"


def parse_keys(raw: str | None) -> tuple[bytes, ...]:
    """``CLOUDQ_SIGNING_KEYS`` as keys: comma-separated, blanks ignored, the signing key first."""
    return tuple(part.strip().encode() for part in (raw or "").split(",") if part.strip())


# Built once: json.dumps with options builds a new encoder on every call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _dumps(value: Any) -> bytes:
    return _CANONICAL_JSON.encode(value).encode()


def canonical(job_id: str | None, task: str, args: Sequence[Any], kwargs: Mapping[str, Any], eta: str | None) -> bytes:
    """The bytes a signature covers (see the module docstring)."""
    form = [_VERSION, job_id, task, list(args), kwargs, eta]
    try:
        try:
            return _dumps(form)
        except TypeError:
            # Keys of mixed types (1 and "a") cannot be sorted; as JSON they are all strings, as a consumer sees them.
            return _dumps(json.loads(json.dumps(form, ensure_ascii=False, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"arguments of task {task!r} are not JSON-serializable: {exc}") from exc


class Signer:
    """Signs envelopes with the first key and verifies with all of them.

    ``accept_unsigned``: an envelope without a signature runs anyway (a migration to signing),
    which :meth:`verify` reports by returning False so the caller can log it.
    """

    __slots__ = ("_macs", "accept_unsigned")

    def __init__(self, keys: Sequence[bytes], *, accept_unsigned: bool = False) -> None:
        if not keys:
            raise ConfigurationError("CLOUDQ_SIGNING_KEYS holds no key (comma-separated secrets)")
        # One keyed HMAC per key, copied per message: cheaper than keying a new one each time.
        self._macs = tuple(hmac.new(key, digestmod=hashlib.sha256) for key in keys)
        self.accept_unsigned = accept_unsigned

    @classmethod
    def from_settings(cls, settings: Any) -> Signer | None:
        """The app's signer, or None when ``CLOUDQ_SIGNING_KEYS`` is unset (nothing is signed or checked)."""
        keys = parse_keys(getattr(settings, "signing_keys", None))
        return cls(keys, accept_unsigned=bool(getattr(settings, "accept_unsigned", False))) if keys else None

    def __repr__(self) -> str:
        return f"<Signer keys={len(self._macs)} accept_unsigned={self.accept_unsigned}>"

    @staticmethod
    def _mac(keyed: Any, message: bytes) -> str:
        mac = keyed.copy()
        mac.update(message)
        return _SCHEME + str(mac.hexdigest())

    def sign_dict(self, data: dict[str, Any]) -> dict[str, Any]:
        """Sign an envelope as a wire dict (``id`` and ``eta`` may be absent: EventBridge inputs); the
        signature header replaces any earlier one."""
        mac = self._mac(self._macs[0], _canonical_of(data))
        return {**data, "headers": {**(data.get("headers") or {}), SIGNATURE_HEADER: mac}}

    def encode(self, envelope: Envelope) -> str:
        """The signed body of ``envelope`` (what :meth:`Envelope.encode` gives, plus the signature header)."""
        return encode_dict(self.sign_dict(envelope.to_dict()))

    def sign(self, envelope: Envelope) -> Envelope:
        """``envelope`` with its signature header, for callers that keep the envelope (tests, tools)."""
        signed = self.sign_dict(envelope.to_dict())["headers"][SIGNATURE_HEADER]
        return envelope.with_headers(**{SIGNATURE_HEADER: signed})

    def verify(self, data: Mapping[str, Any]) -> bool:
        """Check a parsed envelope as it came off the wire: True if signed by one of the keys, False if
        unsigned and unsigned envelopes are accepted; raises :class:`BadSignature` otherwise."""
        headers = data.get("headers")
        given = headers.get(SIGNATURE_HEADER) if isinstance(headers, Mapping) else None
        if given is None:
            if self.accept_unsigned:
                return False
            raise BadSignature("the envelope is not signed and this consumer requires signatures (CLOUDQ_SIGNING_KEYS)")
        if not isinstance(given, str) or not given.startswith(_SCHEME):
            raise BadSignature(f"the envelope's {SIGNATURE_HEADER} header is not an {_SCHEME[:-1]} signature")
        try:
            message = _canonical_of(data)
        except EnvelopeError as exc:
            raise BadSignature(f"the envelope's signed fields cannot be put in canonical form: {exc}") from None
        if any(hmac.compare_digest(self._mac(keyed, message), given) for keyed in self._macs):
            return True
        raise BadSignature("the envelope's signature matches none of the consumer's signing keys (tampered, or signed with another key)")


def _canonical_of(data: Mapping[str, Any]) -> bytes:
    task = data.get("task")
    return canonical(data.get("id"), task if isinstance(task, str) else "", data.get("args") or [], data.get("kwargs") or {}, data.get("eta"))

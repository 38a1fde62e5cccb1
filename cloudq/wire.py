"""What happens to a job between its envelope and the broker: signing and S3 offloading.

The producer seals (:meth:`Wire.encode` signs each envelope, then :meth:`Wire.offload` the messages); the
consumer core opens (:meth:`Wire.open`: resolve a pointer, verify the signature, decode); the
runtimes delete an offloaded object once its message is deleted after success
(:meth:`Wire.adelete`). The App builds one Wire from its settings and hands it to both sides, so
the producer and consumer code keep one call each. Details: :mod:`cloudq.payloads`,
:mod:`cloudq.signing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cloudq.envelope import Envelope, decode_dict
from cloudq.payloads import Payloads, Pointer, parse_pointer

if TYPE_CHECKING:
    from cloudq.brokers.base import Delivery, OutgoingMessage
    from cloudq.payloads import PayloadStore
    from cloudq.signing import Signer

__all__ = ["Wire"]


class Wire:
    """Sealing and opening of messages for one app's settings; without a bucket and without keys,
    every method passes bodies through untouched."""

    def __init__(self, payloads: Payloads, signer: Signer | None = None) -> None:
        self.payloads = payloads
        self.signer = signer

    @classmethod
    def from_settings(cls, settings: Any, *, store: PayloadStore | None = None) -> Wire:
        signer = None
        if getattr(settings, "signing_keys", None):  # hmac and hashlib only for apps that sign
            from cloudq.signing import Signer

            signer = Signer.from_settings(settings)
        return cls(Payloads(settings, store=store), signer)

    # -- producing ------------------------------------------------------------------------------
    def encode(self, envelope: Envelope) -> str:
        """The message body of ``envelope``: signed when the app has keys."""
        return self.signer.encode(envelope) if self.signer is not None else envelope.encode()

    def offload(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        return self.payloads.offload(messages)

    async def aoffload(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        return await self.payloads.aoffload(messages)

    # -- consuming ------------------------------------------------------------------------------
    async def open(self, delivery: Delivery) -> Envelope:
        """The delivery's envelope: its pointer resolved, its signature verified, then decoded.

        Raises PayloadMissing, BadSignature or EnvelopeError (all poison) or a BrokerError from S3
        (retried)."""
        body, _ = await self.payloads.aresolve(delivery.body)
        if self.signer is None:
            return Envelope.decode(body, default_id=delivery.message_id)
        data = decode_dict(body)
        if not self.signer.verify(data):
            from cloudq.logs import get_logger

            get_logger("cloudq.job").warning("job.unsigned_accepted", reason="CLOUDQ_ACCEPT_UNSIGNED=true")
        return Envelope.from_dict(data, default_id=delivery.message_id)

    def pointer(self, delivery: Delivery) -> Pointer | None:
        """The S3 object a delivery's body points to (to delete after success), if any."""
        return parse_pointer(delivery.body)

    async def adelete(self, pointers: Iterable[Pointer]) -> None:
        await self.payloads.adelete(pointers)

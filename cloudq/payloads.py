"""Large payloads through S3, in the format of AWS's SQS extended client libraries (Java, Python).

A body over ``CLOUDQ_PAYLOAD_THRESHOLD_BYTES`` (body plus attributes, counted as SQS counts them)
is written to ``s3://CLOUDQ_PAYLOAD_BUCKET/CLOUDQ_PAYLOAD_PREFIX<uuid>`` and the message carries
a pointer instead, exactly as the extended clients write it::

    body       ["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "b", "s3Key": "k"}]
    attribute  ExtendedPayloadSize (Number): the stored body's size in bytes

so Java, Python and cloudq services can share a queue in both directions. The legacy pointer class
(``com.amazon.sqs.javamessaging.MessageS3Pointer``) and attribute (``SQSLargePayloadSize``) are
read too. A pointer is recognised by its body, so it is resolved wherever it shows up (the worker,
the Lambda handler, lambda-local, ``dlq peek``, the dashboard through :func:`resolve_body`), even
where no bucket is configured.

Lifetime: the object lives as long as its message. The runtimes delete it only after the message
itself was deleted after success (:attr:`cloudq.consumer.Settled.payload`); a retry, a dead letter
(the DLQ copy keeps the pointer body byte for byte), an ETA re-send and a redrive all keep it. A
pointer whose object is gone is poison: :class:`~cloudq.errors.PayloadMissing`, dead-lettered with
reason ``payload_missing``. The bucket's lifecycle rule (``cloudq infra render``) expires what a
crash left behind, after the queues' retention.

Without a bucket, a message over SQS's own limit is a :class:`~cloudq.errors.PayloadTooLarge` at
enqueue, before anything is sent. The S3 store sits behind the small :class:`PayloadStore`
protocol (:class:`MemoryPayloadStore` for tests); boto3 is imported only when a store is first used.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cloudq.brokers.base import OutgoingMessage
from cloudq.errors import BrokerError, PayloadMissing, PayloadTooLarge, ResourceNotFound

__all__ = [
    "MemoryPayloadStore",
    "POINTER_CLASS",
    "PayloadStore",
    "Payloads",
    "Pointer",
    "S3PayloadStore",
    "SIZE_ATTRIBUTE",
    "SQS_MAX_MESSAGE_BYTES",
    "message_size",
    "parse_pointer",
    "pointer_body",
    "resolve_body",
]

POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
LEGACY_POINTER_CLASS = "com.amazon.sqs.javamessaging.MessageS3Pointer"
SIZE_ATTRIBUTE = "ExtendedPayloadSize"
LEGACY_SIZE_ATTRIBUTE = "SQSLargePayloadSize"
NUMBER_ATTRIBUTES = frozenset({SIZE_ATTRIBUTE, LEGACY_SIZE_ATTRIBUTE})
"""Attributes sent with DataType Number (the extended clients' type for the size); all others are String."""
SQS_MAX_MESSAGE_BYTES = 1_048_576  # SQS's limit of one message, body plus attributes (1 MiB since 2025)
_POINTER_CLASSES = (POINTER_CLASS, LEGACY_POINTER_CLASS)
_DATA_TYPE_BYTES = len("String")  # as long as "Number"
_S3_DELETE_BATCH = 1000  # DeleteObjects' limit of keys per call


@dataclass(frozen=True, slots=True)
class Pointer:
    """Where an offloaded body is: one S3 object."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def pointer_body(pointer: Pointer) -> str:
    """The message body of an offloaded payload, as the extended clients write it."""
    return json.dumps([POINTER_CLASS, {"s3BucketName": pointer.bucket, "s3Key": pointer.key}])


def parse_pointer(body: str) -> Pointer | None:
    """The pointer a body holds, or None for any other body (an envelope: never a JSON array)."""
    if not body.startswith("[") or "PayloadS3Pointer" not in body and "MessageS3Pointer" not in body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(data, list) and len(data) == 2 and data[0] in _POINTER_CLASSES and isinstance(data[1], dict)):
        return None
    bucket, key = data[1].get("s3BucketName"), data[1].get("s3Key")
    return Pointer(bucket, key) if isinstance(bucket, str) and isinstance(key, str) and bucket and key else None


def message_size(body: str, attributes: Mapping[str, str]) -> int:
    """A message's size as SQS counts it against its limit: the body plus each attribute's name,
    data type and value, in UTF-8 bytes."""
    size = len(body.encode())
    for name, value in attributes.items():
        size += len(name.encode()) + len(value.encode()) + _DATA_TYPE_BYTES
    return size


class PayloadStore(Protocol):
    """Where offloaded bodies live: S3 in production, memory in tests. Calls are blocking."""

    def put(self, pointer: Pointer, data: bytes) -> None: ...

    def get(self, pointer: Pointer) -> bytes:
        """The stored bytes; raises :class:`PayloadMissing` if the object is gone."""

    def delete(self, pointers: Sequence[Pointer]) -> None: ...


class MemoryPayloadStore:
    """A dict of objects, for tests; ``calls`` counts puts, gets and deletes like S3 requests."""

    def __init__(self) -> None:
        self.objects: dict[Pointer, bytes] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    def put(self, pointer: Pointer, data: bytes) -> None:
        with self._lock:
            self._count("put")
            self.objects[pointer] = bytes(data)

    def get(self, pointer: Pointer) -> bytes:
        with self._lock:
            self._count("get")
            if pointer not in self.objects:
                raise PayloadMissing(f"the payload object {pointer} does not exist (deleted, or expired by the bucket's lifecycle rule)")
            return self.objects[pointer]

    def delete(self, pointers: Sequence[Pointer]) -> None:
        with self._lock:
            self._count("delete")
            for pointer in pointers:
                self.objects.pop(pointer, None)


class S3PayloadStore:
    """S3 through the shared client factory and error translation (:mod:`cloudq.aws`)."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def _s3(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from cloudq.aws import clients

                    self._client = clients.client("s3", self._settings, max_pool_connections=20)
        return self._client

    def _call(self, op: str, pointer: Pointer, **params: Any) -> dict[str, Any]:
        from cloudq.aws.errors import translated

        with translated("s3", op, str(pointer)):
            return dict(getattr(self._s3(), op)(Bucket=pointer.bucket, **params))

    def put(self, pointer: Pointer, data: bytes) -> None:
        self._call("put_object", pointer, Key=pointer.key, Body=data)

    def get(self, pointer: Pointer) -> bytes:
        try:
            response = self._call("get_object", pointer, Key=pointer.key)
        except ResourceNotFound as exc:  # NoSuchKey, or NoSuchBucket
            raise PayloadMissing(f"the payload object {pointer} does not exist (deleted, or expired by the bucket's lifecycle rule)") from exc
        return bytes(response["Body"].read())

    def delete(self, pointers: Sequence[Pointer]) -> None:
        by_bucket: dict[str, list[Pointer]] = {}
        for pointer in pointers:
            by_bucket.setdefault(pointer.bucket, []).append(pointer)
        for group in by_bucket.values():
            for start in range(0, len(group), _S3_DELETE_BATCH):
                chunk = group[start : start + _S3_DELETE_BATCH]
                if len(chunk) == 1:
                    self._call("delete_object", chunk[0], Key=chunk[0].key)
                else:
                    objects = [{"Key": p.key} for p in chunk]
                    self._call("delete_objects", chunk[0], Delete={"Objects": objects, "Quiet": True})


class Payloads:
    """Offload on the way out, resolve on the way in, delete after success: one per app.

    ``bucket`` None turns offloading off (bodies over SQS's limit then raise PayloadTooLarge);
    resolving works either way, since a pointer names its bucket.
    """

    def __init__(self, settings: Any, *, store: PayloadStore | None = None) -> None:
        self.bucket: str | None = getattr(settings, "payload_bucket", None) or None
        self.prefix: str = getattr(settings, "payload_prefix", "cloudq/")
        self.threshold_bytes: int = getattr(settings, "payload_threshold_bytes", 262_144)
        self._settings = settings
        self._store = store

    @property
    def store(self) -> PayloadStore:
        if self._store is None:
            self._store = S3PayloadStore(self._settings)
        return self._store

    # -- out ------------------------------------------------------------------------------------
    def plan(self, messages: Sequence[OutgoingMessage]) -> tuple[list[OutgoingMessage], list[tuple[Pointer, bytes]]]:
        """The messages to send (pointers in place of large bodies) and the objects to write first; pure."""
        out: list[OutgoingMessage] = []
        uploads: list[tuple[Pointer, bytes]] = []
        for message in messages:
            size = message_size(message.body, message.attributes)
            if size <= self.threshold_bytes or (self.bucket is None and size <= SQS_MAX_MESSAGE_BYTES):
                out.append(message)
                continue
            if self.bucket is None:
                raise PayloadTooLarge(
                    f"message of {size} bytes is over SQS's limit of {SQS_MAX_MESSAGE_BYTES} bytes (body plus attributes); "
                    "set CLOUDQ_PAYLOAD_BUCKET to send large payloads through S3",
                    size_bytes=size,
                    limit_bytes=SQS_MAX_MESSAGE_BYTES,
                )
            data = message.body.encode()
            pointer = Pointer(self.bucket, f"{self.prefix}{uuid.uuid4()}")
            uploads.append((pointer, data))
            attributes = {**message.attributes, SIZE_ATTRIBUTE: str(len(data))}
            out.append(replace(message, body=pointer_body(pointer), attributes=attributes))
        return out, uploads

    def offload(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        """``messages`` ready to send; large bodies are written to S3 first (one PUT each)."""
        out, uploads = self.plan(messages)
        for pointer, data in uploads:
            self.store.put(pointer, data)
        return out

    async def aoffload(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        out, uploads = self.plan(messages)
        if uploads:
            await asyncio.gather(*(asyncio.to_thread(self.store.put, p, d) for p, d in uploads))
        return out

    # -- in ---------------------------------------------------------------------------------------
    def resolve(self, body: str) -> tuple[str, Pointer | None]:
        """The real body of a message and its pointer (None: the body was not offloaded)."""
        pointer = parse_pointer(body)
        if pointer is None:
            return body, None
        data = self.store.get(pointer)
        try:
            return data.decode(), pointer
        except UnicodeDecodeError as exc:
            raise PayloadMissing(f"the payload object {pointer} is not UTF-8 text") from exc

    async def aresolve(self, body: str) -> tuple[str, Pointer | None]:
        if parse_pointer(body) is None:  # the common case stays on the loop
            return body, None
        return await asyncio.to_thread(self.resolve, body)

    # -- after success ------------------------------------------------------------------------------
    def delete(self, pointers: Iterable[Pointer]) -> None:
        """Delete objects whose messages are gone; a failure is logged, never raised (the lifecycle
        rule expires what is left)."""
        pointers = list(pointers)
        if not pointers:
            return
        try:
            self.store.delete(pointers)
        except BrokerError as exc:
            from cloudq.logs import get_logger

            get_logger(__name__).warning("payload.delete_failed", count=len(pointers), error=str(exc))

    async def adelete(self, pointers: Iterable[Pointer]) -> None:
        pointers = list(pointers)
        if pointers:
            await asyncio.to_thread(self.delete, pointers)


def resolve_body(body: str, settings: Any = None, *, store: PayloadStore | None = None) -> str:
    """The real body of a message: ``body`` itself, or for a pointer (the extended client's format)
    the S3 object's text. For tools that show messages (``dlq peek``, the dashboard); raises
    :class:`PayloadMissing` if the object is gone. ``settings`` give the region and endpoint
    (default: ``CLOUDQ_*`` from the environment)."""
    if parse_pointer(body) is None:
        return body
    if settings is None and store is None:
        from cloudq.settings_env import load_settings

        settings = load_settings()
    return Payloads(settings, store=store).resolve(body)[0]

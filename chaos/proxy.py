"""A fault-injecting HTTP/1.1 proxy in front of LocalStack, on loopback only.

Every worker of a chaos run talks to SQS through it. It forwards requests one at a time per client
connection (botocore never pipelines) over an upstream connection of that client's own, so a long poll
holds only its own pair, and it can, per request:

* **take the endpoint down** (:meth:`FaultProxy.take_down`): the listening socket closes (connection
  refused) and every open connection is reset, long polls included, until :meth:`FaultProxy.bring_up`;
* **reset a connection mid-response**: half the real response is written, then an RST (SO_LINGER 0);
* **add latency** before forwarding;
* **answer with AWS's own errors** in the wire shape of SQS's JSON protocol (the one botocore uses for
  SQS: ``X-Amz-Target: AmazonSQS.<Operation>``, ``application/x-amz-json-1.0``), so that botocore's
  ``standard`` retry mode and cloudq react as they would on AWS: HTTP 400 with ``__type``
  ``com.amazonaws.sqs#RequestThrottled`` and the ``x-amzn-query-error`` header botocore maps the code
  from, or the generic ``ThrottlingException``; HTTP 500 ``InternalFailure`` and 503 ``ServiceUnavailable``.

Shares and latency are plain attributes the orchestrator sets on a schedule; every decision draws from
one seeded ``random.Random``, and every fault is counted by kind in :attr:`FaultProxy.faults`.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import uuid
from collections import Counter
from dataclasses import dataclass

__all__ = ["FaultProxy", "error_response"]

_THROTTLES = (
    # (status, reason, __type, x-amzn-query-error or None, message)
    (400, "Bad Request", "com.amazonaws.sqs#RequestThrottled", "RequestThrottled;Sender", "Request is throttled."),
    (400, "Bad Request", "com.amazon.coral.availability#ThrottlingException", None, "Rate exceeded"),
)
_SERVER_ERRORS = (
    (500, "Internal Server Error", "com.amazon.coral.service#InternalFailure", None, "We encountered an internal error. Please try again."),
    (503, "Service Unavailable", "com.amazon.coral.availability#ServiceUnavailableException", None, "Service is unavailable. Please try again."),
)


def error_response(status: int, reason: str, error_type: str, query_error: str | None, message: str) -> bytes:
    """An SQS JSON-protocol error response as AWS sends it (``x-amzn-RequestId``, ``__type``, ``message``)."""
    body = json.dumps({"__type": error_type, "message": message}).encode()
    headers = [
        f"HTTP/1.1 {status} {reason}",
        f"x-amzn-RequestId: {uuid.uuid4()}",
        "Content-Type: application/x-amz-json-1.0",
        f"Content-Length: {len(body)}",
    ]
    if query_error:
        headers.append(f"x-amzn-query-error: {query_error}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


@dataclass(slots=True)
class _Request:
    head: bytes
    body: bytes
    operation: str


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = int(_header(head, b"content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    target = (_header(head, b"x-amz-target") or b"").decode()
    return _Request(head, body, target.rpartition(".")[2] or "unknown")


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """One raw response (head and body, framing kept) and whether the server closes after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    closes = (_header(head, b"connection") or b"").lower() == b"close"
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        parts = [head]
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            parts += [size_line, await reader.readexactly(size + 2)]
            if size == 0:
                return b"".join(parts), closes
    length = _header(head, b"content-length")
    if length is None:
        return head + await reader.read(), True
    return head + await reader.readexactly(int(length)), closes


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN: what a dropped connection looks like to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class FaultProxy:
    """Loopback proxy to ``127.0.0.1:upstream_port``; faults off until the attributes below are set."""

    def __init__(self, upstream_port: int, *, seed: int, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.rng = random.Random(seed)
        self.throttle_share = 0.0  # of requests answered with a throttling or 5xx error (see error_share)
        self.server_error_share = 0.4  # of those errors, the part that are 5xx rather than throttles
        self.reset_share = 0.0  # of responses cut in the middle with an RST
        self.latency_share = 0.0  # of requests delayed by latency_s (a uniform range)
        self.latency_s = (0.05, 0.5)
        self.down = False
        self.faults: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def take_down(self) -> None:
        """Refuse new connections and reset every open one, until :meth:`bring_up`."""
        self.down = True
        self.faults["outage"] += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def bring_up(self) -> None:
        self.down = False
        await self.start()

    async def close(self) -> None:
        await self.take_down()
        self.faults["outage"] -= 1

    # -- one client connection ------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while not self.down:
                request = await _read_request(reader)
                if request is None:
                    break
                self.calls[request.operation] += 1
                if await self._answered_by_fault(request, writer):
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                    self._writers.add(upstream[1])
                upstream[1].write(request.head + request.body)
                response, closes = await _read_response(upstream[0])
                if self.down:
                    break
                if self.reset_share and self.rng.random() < self.reset_share:
                    self.faults[f"reset:{request.operation}"] += 1
                    writer.write(response[: len(response) // 2])
                    await writer.drain()
                    _reset(writer)
                    return
                writer.write(response)
                await writer.drain()
                if closes:
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a client gone, LocalStack gone, or an outage that reset both sides
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    async def _answered_by_fault(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Latency first (it delays whatever follows), then maybe an AWS error instead of forwarding."""
        if self.latency_share and self.rng.random() < self.latency_share:
            self.faults["latency"] += 1
            await asyncio.sleep(self.rng.uniform(*self.latency_s))
        if not (self.throttle_share and self.rng.random() < self.throttle_share):
            return False
        server_error = self.rng.random() < self.server_error_share
        status, reason, error_type, query_error, message = self.rng.choice(_SERVER_ERRORS if server_error else _THROTTLES)
        self.faults[f"{'5xx' if server_error else 'throttled'}:{error_type.rpartition('#')[2]}"] += 1
        writer.write(error_response(status, reason, error_type, query_error, message))
        await writer.drain()
        return True

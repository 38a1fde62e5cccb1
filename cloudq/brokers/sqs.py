"""Amazon SQS transport: boto3 for sync producers and admin, aioboto3 for the async paths.

Each public method is a thin I/O loop over the pure requests of :mod:`cloudq.brokers.sqs_requests`.
Clients come from :mod:`cloudq.aws.clients` and every call runs inside
:func:`cloudq.aws.errors.translated`, as for every other AWS service cloudq calls. botocore already
retries throttling with its ``standard`` mode; tenacity adds a longer, bounded retry on
:class:`BrokerUnavailable` (endpoint down, connection reset) for producer sends, and the worker keeps
polling through outages on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cloudq.aws import clients as aws
from cloudq.aws.errors import translated
from cloudq.brokers import sqs_requests as rq
from cloudq.brokers.blocking import DaemonThreads
from cloudq.brokers.base import SQS_MAX_BATCH, Delivery, MoveProgress, OutgoingMessage, QueueConfig, QueueStats
from cloudq.errors import BrokerError, ConfigurationError, QueueNotFound
from cloudq.logs import get_logger
from cloudq.transient import acall_retrying, call_retrying

__all__ = ["SqsBroker"]

# cloudq.logs imports structlog only for a line written: a producer's first send must not pay its import
# (with rich installed, structlog imports it: about 70 ms of a web process's first ``.map()``).
_logger = get_logger(__name__)
GIVE_BACK_WAIT_S = 5.0  # how long aclose waits for the answers of receives cancelled in flight
_READ_TIMEOUT_S = 30  # above the 20 s long poll
_ADMIN_VISIBILITY_S = 15  # how long a peeked or redriven message hides at worst (the CLI dying mid-way)
_ADMIN_WAIT_S = 1  # a long poll (all SQS hosts), so an empty answer means an empty queue
_MOVE_POLL_S = 1.0
_MOVE_TASK_MISSES = 5
_STATS_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class SqsBroker:
    """SQS (or LocalStack) behind both broker protocols (:mod:`cloudq.brokers.base`).

    ``async_io``: how the async methods reach SQS. ``"aioboto3"`` (the default; a worker's) keeps
    every call on the event loop. ``"threads"`` runs the boto3 client on daemon threads
    (:mod:`cloudq.brokers.blocking`; a long poll cancelled at SIGTERM is abandoned, never waited for):
    :class:`cloudq.App` picks it inside the Lambda runtime, where importing aioboto3/aiohttp would
    cost the first failed record of a cold start 100-160 ms. Measured in a worker (bench, cli
    section), threads start 100-200 ms sooner but cost about 0.1 ms more client CPU per job (GIL
    hand-offs). ``"auto"`` (what :class:`cloudq.App` uses elsewhere) has both: its first calls go
    through threads while aioboto3 is imported and its client built in the background, and every
    call after that is on the loop.
    """

    def __init__(self, settings: Any, *, send_retry_s: float = 30.0, async_io: str = "aioboto3") -> None:
        if async_io not in ("aioboto3", "threads", "auto"):
            raise ConfigurationError(f"async_io must be 'aioboto3', 'threads' or 'auto', got {async_io!r}")
        self.async_io = async_io
        self._settings = settings
        self._client_lock = threading.Lock()
        self._urls: dict[str, str] = {settings.queue_name(k): v for k, v in settings.queue_urls.items()}
        self._pool = max(10, settings.concurrency + 4)
        self._threads = DaemonThreads(self._pool, name="cloudq-sqs")
        self._send_retry_s = send_retry_s
        self._client: Any = None
        self._aclient: Any = None
        self._astack: contextlib.AsyncExitStack | None = None
        self._warming: asyncio.Task[None] | None = None
        self._giving_back: set[asyncio.Task[None]] = set()  # cancelled receives whose answers are awaited
        self.calls: dict[str, int] = {}

    # -- clients ----------------------------------------------------------------------------
    def _sync_client(self) -> Any:
        if self._client is None:
            with self._client_lock:  # threads mode: concurrent first calls build one client
                if self._client is None:
                    self._client = aws.client("sqs", self._settings, max_pool_connections=self._pool, read_timeout_s=_READ_TIMEOUT_S, validate=False)
        return self._client

    async def _async_client(self) -> Any:
        if self._aclient is None:
            self._astack = contextlib.AsyncExitStack()
            factory = aws.aclient("sqs", self._settings, max_pool_connections=self._pool, read_timeout_s=_READ_TIMEOUT_S, validate=False)
            self._aclient = await self._astack.enter_async_context(factory)
        return self._aclient

    async def _warm_async_client(self) -> None:
        """``auto``: import aioboto3 off the loop, then build its client; calls switch over once it is ready."""
        try:
            await asyncio.to_thread(importlib.import_module, "aioboto3")
            await self._async_client()
        except Exception as exc:  # noqa: BLE001 - threads keep serving; nothing is lost
            _logger.warning("sqs.async_client_unavailable", error=f"{type(exc).__name__}: {exc}")
            self.async_io = "threads"

    # -- the two I/O primitives --------------------------------------------------------------
    def _call(self, queue: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls[op] = self.calls.get(op, 0) + 1
        client = self._sync_client()
        with translated("sqs", op, queue):
            return getattr(client, op)(**params)  # type: ignore[no-any-return]

    async def _acall(self, queue: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.async_io == "threads" or (self.async_io == "auto" and self._aclient is None):
            result = await self._threads.run(lambda: self._call(queue, op, params))
            if self.async_io == "auto" and self._warming is None and op == "receive_message":
                # After the first receive, not before: the import would hold the GIL the first job needs.
                self._warming = asyncio.ensure_future(self._warm_async_client())
            return result
        self.calls[op] = self.calls.get(op, 0) + 1
        client = await self._async_client()
        with translated("sqs", op, queue):
            return await getattr(client, op)(**params)  # type: ignore[no-any-return]

    # -- queue URLs: resolved once, cached; never created at run time --------------------------
    async def prepare(self, queues: Sequence[str]) -> None:
        """Resolve and cache each queue's URL now, so the first poll needs no GetQueueUrl (and a missing
        queue or an unreachable endpoint shows before a worker takes any job)."""
        for queue in queues:
            await self.aqueue_url(queue)

    def queue_url(self, queue: str) -> str:
        if queue not in self._urls:
            self._urls[queue] = self._call(queue, "get_queue_url", {"QueueName": queue})["QueueUrl"]
        return self._urls[queue]

    async def aqueue_url(self, queue: str) -> str:
        if queue not in self._urls:
            self._urls[queue] = (await self._acall(queue, "get_queue_url", {"QueueName": queue}))["QueueUrl"]
        return self._urls[queue]

    # -- producer ---------------------------------------------------------------------------
    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        def attempt() -> list[str]:
            url = self.queue_url(queue)
            return [i for op, p in rq.send_requests(queue, url, messages) for i in rq.parse_send(self._call(queue, op, p))]

        return call_retrying(attempt, stop_after_s=self._send_retry_s)

    async def asend(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        async def attempt() -> list[str]:
            url = await self.aqueue_url(queue)
            ids: list[str] = []
            for op, p in rq.send_requests(queue, url, messages):
                ids += rq.parse_send(await self._acall(queue, op, p))
            return ids

        return await acall_retrying(attempt, stop_after_s=self._send_retry_s)

    # -- consumer ---------------------------------------------------------------------------
    async def receive(
        self, queue: str, *, max_messages: int, wait_s: float, visibility_timeout_s: int | None = None
    ) -> list[Delivery]:
        """Receive; a receive cancelled in flight (a worker stopping) gives back what it took.

        SQS may already have handed out messages when the caller gives up: the request goes on, shielded,
        and when its answer comes those messages are made visible again at once (``sqs.receive_given_back``)
        instead of staying invisible for the whole visibility timeout. ``aclose`` waits for such answers
        up to ``GIVE_BACK_WAIT_S``."""
        url = await self.aqueue_url(queue)
        op, params = rq.receive_request(url, max_messages, wait_s, visibility_timeout_s)
        call = asyncio.ensure_future(self._acall(queue, op, params))
        try:
            response = await asyncio.shield(call)
        except asyncio.CancelledError:
            task = asyncio.ensure_future(self._give_back(queue, call))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)
            raise
        return rq.parse_messages(queue, response)

    async def _give_back(self, queue: str, call: asyncio.Future[dict[str, Any]]) -> None:
        try:
            deliveries = rq.parse_messages(queue, await call)
        except Exception:  # noqa: BLE001 - the receive failed: it took nothing we could give back
            return
        if not deliveries:
            return
        try:
            await self.change_visibility(queue, deliveries, 0)
        except BrokerError as exc:
            _logger.warning("sqs.give_back_failed", queue=queue, count=len(deliveries), error=str(exc))
            return
        _logger.info("sqs.receive_given_back", queue=queue, count=len(deliveries))

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        await self._abatch(queue, deliveries, lambda url: rq.delete_requests(url, deliveries))

    async def change_visibility(self, queue: str, deliveries: Sequence[Delivery], timeout_s: int) -> None:
        await self._abatch(queue, deliveries, lambda url: rq.change_visibility_requests(url, deliveries, timeout_s))

    async def _abatch(self, queue: str, deliveries: Sequence[Delivery], build: Callable[[str], list[rq.Request]]) -> None:
        if not deliveries:
            return
        url = await self.aqueue_url(queue)
        for op, params in build(url):
            failures = rq.parse_batch_result(await self._acall(queue, op, params))
            if failures:
                _logger.warning("sqs.batch_partial_failure", queue=queue, operation=op, failures=failures)

    # -- admin ------------------------------------------------------------------------------
    def ensure_queue(self, queue: str, config: QueueConfig) -> None:
        dlq_arn = None
        if config.dead_letter_queue:
            dlq = config.dead_letter_queue
            self.ensure_queue(dlq, QueueConfig(visibility_timeout_s=config.visibility_timeout_s))
            dlq_arn = self._call(dlq, "get_queue_attributes", {"QueueUrl": self.queue_url(dlq), "AttributeNames": ["QueueArn"]})["Attributes"]["QueueArn"]
        attributes = rq.ensure_queue_attributes(queue, config, dlq_arn)
        try:
            url = self.queue_url(queue)
        except QueueNotFound:
            self._urls[queue] = self._call(queue, "create_queue", {"QueueName": queue, "Attributes": attributes})["QueueUrl"]
            return
        attributes.pop("FifoQueue", None)  # immutable after creation
        self._call(queue, "set_queue_attributes", {"QueueUrl": url, "Attributes": attributes})

    def stats(self, queue: str) -> QueueStats:
        try:
            url = self.queue_url(queue)
            response = self._call(queue, "get_queue_attributes", {"QueueUrl": url, "AttributeNames": _STATS_ATTRIBUTES})
        except QueueNotFound:
            return QueueStats(queue, exists=False)
        return rq.parse_stats(queue, response.get("Attributes", {}))

    def list_queues(self, prefix: str = "") -> list[str]:
        """ListQueues by name prefix, every page; the URLs it returns are cached as a look-up would."""
        names: list[str] = []
        token: str | None = None
        while True:
            op, params = rq.list_queues_request(prefix, token)
            page, token = rq.parse_list_queues(self._call(prefix, op, params))
            self._urls.update(page)
            names += page
            if token is None:
                return sorted(names)

    # -- admin: the ops CLI's DLQ tools (never on a worker's path) ---------------------------------
    def queue_arn(self, queue: str) -> str:
        op, params = rq.queue_arn_request(self.queue_url(queue))
        return str(self._call(queue, op, params)["Attributes"]["QueueArn"])

    def peek(self, queue: str, n: int = 10) -> list[Delivery]:
        """Up to ``n`` messages, received briefly and made visible again at once.

        SQS has no read-only peek: each receive hides the messages for at most
        ``_ADMIN_VISIBILITY_S`` (until the release below, or if the CLI dies) and adds one to their
        ApproximateReceiveCount, which the returned counts leave out. On a FIFO queue a group shows
        at most one receive's worth (10) of messages, since in-flight messages lock their group.
        Receipts are cleared: acking a peeked message does nothing, as on the other brokers.
        """
        taken: dict[str, Delivery] = {}
        try:
            while len(taken) < n:
                got = self._receive_now(queue, n - len(taken), _ADMIN_VISIBILITY_S)
                if not got:
                    break
                taken.update((d.message_id, d) for d in got)
        finally:
            if taken:
                self._sync_batch(queue, rq.change_visibility_requests(self.queue_url(queue), list(taken.values()), 0))
        return [dataclasses.replace(d, receipt="", receive_count=max(0, d.receive_count - 1)) for d in taken.values()]

    def _receive_now(self, queue: str, max_messages: int, visibility_timeout_s: int) -> list[Delivery]:
        op, params = rq.receive_request(self.queue_url(queue), min(max_messages, SQS_MAX_BATCH), _ADMIN_WAIT_S, visibility_timeout_s)
        return rq.parse_messages(queue, self._call(queue, op, params))

    def _sync_batch(self, queue: str, requests: list[rq.Request]) -> None:
        for op, params in requests:
            failures = rq.parse_batch_result(self._call(queue, op, params))
            if failures:
                _logger.warning("sqs.batch_partial_failure", queue=queue, operation=op, failures=failures)

    def move_messages(
        self, source: str, destination: str, max_messages: int | None = None, *, on_progress: MoveProgress | None = None
    ) -> int:
        """Redrive ``source`` (a DLQ) into ``destination``; returns how many moved.

        Without a limit this is SQS's own message move task (StartMessageMoveTask), polled until it
        finishes. A move task cannot stop after N messages, so ``max_messages`` copies instead:
        receive, send to ``destination`` (body and attributes kept), then delete from ``source``.
        Interrupting the poll leaves the move task running on SQS (CancelMessageMoveTask stops it).
        On LocalStack a moved message's receive count includes the move's own receive (the job's
        first run then counts as attempt 2); copies start afresh.
        """
        if max_messages is None:
            return self._run_move_task(source, destination, on_progress)
        return self._copy_messages(source, destination, max_messages, on_progress)

    def _run_move_task(self, source: str, destination: str, on_progress: MoveProgress | None) -> int:
        source_arn = self.queue_arn(source)
        op, params = rq.start_move_task_request(source_arn, self.queue_arn(destination))
        handle = self._call(source, op, params)["TaskHandle"]
        task = self._wait_move_task(source, source_arn, handle, on_progress)
        if task.status != "COMPLETED":
            raise BrokerError(f"message move task from {source!r} ended {task.status} after {task.moved} moved: {task.failure or 'no reason given'}")
        return task.moved

    def _wait_move_task(self, source: str, source_arn: str, handle: str, on_progress: MoveProgress | None) -> rq.MoveTask:
        """Poll ListMessageMoveTasks about once a second, reporting progress, until the task ends."""
        misses = 0
        while True:
            op, params = rq.list_move_tasks_request(source_arn)
            task = rq.parse_move_task(self._call(source, op, params), handle)
            if task is None:
                misses += 1
                if misses > _MOVE_TASK_MISSES:
                    raise BrokerError(f"message move task from {source!r} is missing from ListMessageMoveTasks")
            else:
                if on_progress is not None:
                    on_progress(task.moved, task.to_move)
                if task.finished:
                    return task
            time.sleep(_MOVE_POLL_S)

    def _copy_messages(self, source: str, destination: str, max_messages: int, on_progress: MoveProgress | None) -> int:
        moved = 0
        while moved < max_messages:
            got = self._receive_now(source, max_messages - moved, _ADMIN_VISIBILITY_S)
            if not got:
                break
            self.send(destination, rq.redrive_messages(destination, got))
            self._sync_batch(source, rq.delete_requests(self.queue_url(source), got))
            moved += len(got)
            if on_progress is not None:
                on_progress(moved, None)
        return moved

    def purge(self, queue: str) -> int:
        """PurgeQueue; returns the approximate count before it. SQS allows one purge a minute per
        queue and may take up to 60 s to finish deleting."""
        before = self.stats(queue)
        if not before.exists:
            raise QueueNotFound(f"queue {queue!r} does not exist (create it with `cloudq queues ensure` or in infra)")
        op, params = rq.purge_request(self.queue_url(queue))
        self._call(queue, op, params)
        return before.visible + before.in_flight + before.delayed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._giving_back:
            # A busy queue answers in milliseconds; an idle long poll may not answer before its wait ends,
            # and a message arriving after GIVE_BACK_WAIT_S in that abandoned poll waits out its visibility.
            _, late = await asyncio.wait(set(self._giving_back), timeout=GIVE_BACK_WAIT_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)
            self._warming = None
        if self._astack is not None:
            await self._astack.aclose()
            self._astack = None
            self._aclient = None
        self.close()

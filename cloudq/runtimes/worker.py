"""The long-polling worker: the ECS container's entry point (``cloudq worker``).

One asyncio loop per process. Each queue has a poller that receives at most as
many messages as there are free slots (so nothing waits unstarted while holding
its visibility), async tasks run on the loop and sync tasks on a bounded thread
pool. Deletes are batched (:class:`AckBatcher`), visibility is extended for long
jobs by one batched heartbeat, and SIGTERM drains: stop receiving, let running
jobs finish within the grace period, release the rest at once, flush deletes.

What happens to each delivery (run, then ack, retry, dead-letter, re-send) is the consumer core's
(:class:`cloudq.consumer.Consumer`); this module keeps what is the worker's own:

* **Slots** are handed out in turn: a poller that asks while others wait queues behind them, so
  every queue is served whatever ``concurrency`` and the number of queues (with fewer slots than
  queues, long polls are cut to 1 s so that the slots rotate quickly).
* **Burst** (``--burst``) ends when the queues are empty, nothing runs, and no retry this worker
  scheduled is due within ``burst_retry_wait_s`` (60 s): those it waits for and runs. A retry due
  later is made visible again at exit, so a burst never leaves a job stranded in flight. (A run
  ended by ``max_tasks`` or a signal leaves a retry's backoff alone.)
* **Start-up** through an outage: resolving the queues retries with backoff
  (``worker.broker_unavailable``) until the endpoint answers; SIGTERM meanwhile exits cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import tenacity

from cloudq.brokers.base import SQS_MAX_BATCH, Delivery
from cloudq.errors import BrokerError, BrokerUnavailable
from cloudq.transient import transient_retry

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.brokers.base import Broker
    from cloudq.consumer import Settled
    from cloudq.tasks import Task

__all__ = ["AckBatcher", "Worker", "WorkerStats"]

logger = structlog.get_logger("cloudq.runtimes.worker")

_ACK_ATTEMPTS = 5  # tries of one delete batch (about 3 s of pauses) before it is left to the visibility timeout
_GATHER_S = 0.02  # longest wait for more free slots before a receive (see Worker._gather_batch)
_ROTATE_WAIT_S = 1  # long poll when there are fewer slots than queues, so that slots rotate


def _backoff_s(failures: int) -> float:
    """Pause after ``failures`` failed calls in a row to an unreachable broker: 1 s doubling to 30 s."""
    return min(30.0, 0.5 * 2 ** min(failures, 6))


@dataclass(slots=True)
class WorkerStats:
    received: int = 0
    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    rescheduled: int = 0

    @property
    def processed(self) -> int:
        return self.succeeded + self.retried + self.dead_lettered + self.rescheduled


@dataclass(eq=False, slots=True)
class _Job:
    queue: str
    physical: str
    delivery: Delivery
    visible_until: float
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    timed_out: bool = False
    task: asyncio.Task[None] | None = None


class AckBatcher:
    """Collects deletes per queue and sends them 10 at a time, or after ``flush_s``.

    A poller *holds* its queue's deletes while it waits for free slots, and lets them go just
    after it has started its next receive. The last job of a batch both fills a delete batch and
    frees the slots the poller waits for; sent first, the delete would be built and answered ahead
    of the receive that the next jobs wait on. Deletes are off the critical path, receives are on
    it (about +7% drain rate on LocalStack, same calls). Held deletes still go out at ``flush_s``.
    """

    def __init__(self, broker: Broker, flush_s: float) -> None:
        self._broker = broker
        self._flush_s = flush_s
        self._pending: dict[str, list[Delivery]] = defaultdict(list)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._holds: dict[str, int] = defaultdict(int)

    def add(self, queue: str, delivery: Delivery) -> None:
        batch = self._pending[queue]
        batch.append(delivery)
        if len(batch) >= SQS_MAX_BATCH and not self._holds[queue]:
            self._flush(queue)
        elif queue not in self._timers:
            self._timers[queue] = asyncio.get_running_loop().call_later(self._flush_s, self._flush, queue)

    def hold(self, queue: str) -> None:
        self._holds[queue] += 1

    def unhold(self, queue: str) -> None:
        """End one hold; full batches held meanwhile go out now, even if other pollers of the queue
        still hold (they wait for slots: their receives are not due yet)."""
        self._holds[queue] -= 1
        if len(self._pending.get(queue, ())) >= SQS_MAX_BATCH:
            self._flush(queue)

    def _flush(self, queue: str) -> None:
        timer = self._timers.pop(queue, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(queue, [])
        if batch:
            sending = asyncio.create_task(self._send(queue, batch))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, queue: str, batch: list[Delivery]) -> None:
        """Delete ``batch``, retrying transient errors; if that fails, the messages come back after
        their visibility timeout and run again (at least once), which is logged."""

        def retrying(exc: BaseException, attempt: int) -> None:
            logger.warning("worker.ack_retrying", queue=queue, error=str(exc), attempt=attempt)

        try:
            await tenacity.AsyncRetrying(**transient_retry(attempts=_ACK_ATTEMPTS, on_retry=retrying))(self._broker.ack, queue, batch)
        except BrokerError as exc:
            logger.error("worker.ack_failed", queue=queue, count=len(batch), error=str(exc))

    async def drain(self) -> None:
        for queue in list(self._pending):
            self._flush(queue)
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _ThreadResults:
    """Hands results from the thread pool back to the loop, waking it once per burst, not per job.

    What ``loop.run_in_executor`` does, minus a future and two callbacks per job: when ten short
    jobs finish together, their results cross to the loop in one call instead of ten.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[Any], Future[Any]]] = []

    async def run(self, pool: ThreadPoolExecutor, call: Callable[[], Any]) -> Any:
        future = self._loop.create_future()
        work = pool.submit(call)
        work.add_done_callback(lambda work: self._add(future, work))
        try:
            return await future
        except asyncio.CancelledError:
            work.cancel()  # not started yet: it never runs (as with run_in_executor)
            raise

    def _add(self, future: asyncio.Future[Any], work: Future[Any]) -> None:
        """Any thread: queue a finished job, and wake the loop if nothing else is queued."""
        if future.cancelled():
            return
        with self._lock:
            self._done.append((future, work))
            if len(self._done) > 1:
                return
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for future, work in done:
            if future.cancelled():
                continue
            if work.cancelled():
                future.cancel()
            elif (exc := work.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(work.result())


class Worker:
    """Consumes logical ``queues`` of ``app`` until stopped (or drained, with ``burst``)."""

    def __init__(
        self,
        app: App,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        burst: bool = False,
        max_tasks: int | None = None,
        burst_wait_s: float = 1.0,
        burst_retry_wait_s: float = 60.0,
        fire_schedules: bool | None = None,
    ) -> None:
        settings = app.settings
        self.app = app
        self.consumer = app.consumer
        self.broker = app.broker
        self.queues = list(queues or app.queues())
        self.concurrency = concurrency or settings.concurrency
        self.burst = burst
        self.burst_retry_wait_s = burst_retry_wait_s
        self.max_tasks = max_tasks
        self.wait_s = min(settings.wait_time_s, burst_wait_s) if burst else settings.wait_time_s
        if self.concurrency < len(self.queues):
            self.wait_s = min(self.wait_s, _ROTATE_WAIT_S)
        self.visibility_timeout_s = max(1, settings.visibility_timeout_s)
        self.grace_s = settings.shutdown_grace_s
        # Periodic tasks: EventBridge fires them on SQS; on the local broker the workers do, sharing a
        # lease in the SQLite file. On SQS only an explicit flag makes a worker fire (see README).
        self.fire_schedules = bool(app.periodic_tasks) and (settings.broker == "local" if fire_schedules is None else fire_schedules)
        self.stats = WorkerStats()
        self._free = self.concurrency
        # Each poller reserves at most its share of slots while it long-polls (so an idle queue cannot
        # hold every slot while another queue's messages wait), and a queue gets enough pollers to
        # keep its share busy: above 10 slots per queue, several receives run at once.
        per_queue = max(1, -(-self.concurrency // len(self.queues)))
        self._pollers_per_queue = -(-per_queue // SQS_MAX_BATCH)
        self._poller_share = max(1, -(-per_queue // self._pollers_per_queue))
        self._turns: deque[asyncio.Future[None]] = deque()  # pollers waiting for slots, first come first served
        self._gathering: set[asyncio.Future[None]] = set()  # pollers waiting for a full batch of slots
        self._stopping = asyncio.Event()
        self._running: set[_Job] = set()
        self._started_jobs = 0
        # Retries this worker scheduled and has not seen again: queue -> message id -> (delivery, due).
        self._retries: dict[str, dict[str, tuple[Delivery, float]]] = defaultdict(dict)
        self._drained = False  # a burst found its queues empty (not stopped by max_tasks or a signal)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="cloudq-task")
        self._results: _ThreadResults | None = None
        self._acks = AckBatcher(self.broker, settings.delete_flush_s)
        self._heartbeat_path = Path(settings.heartbeat_path) if settings.heartbeat_path else None

    # -- control ----------------------------------------------------------------------------
    def stop(self, reason: str = "requested") -> None:
        """Begin a graceful shutdown; safe to call from a signal handler on the loop."""
        if not self._stopping.is_set():
            logger.info("worker.stopping", reason=reason, running=len(self._running))
            self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig.name)

    async def run(self) -> WorkerStats:
        """Run until stopped; returns counts. Raises QueueNotFound at start for a missing queue."""
        if not await self._resolve_queues():
            logger.info("worker.stopped", received=0, succeeded=0, retried=0, dead_lettered=0)
            return self.stats
        self._touch_health_file()
        logger.info("worker.started", queues=self.queues, concurrency=self.concurrency, burst=self.burst)
        pollers = {
            asyncio.create_task(self._poll(q), name=f"cloudq-poll-{q}-{i}")
            for q in self.queues
            for i in range(self._pollers_per_queue)
        }
        heartbeat = asyncio.create_task(self._heartbeat())
        scheduler = self._start_scheduler()
        try:
            await self._until_stopped_or_drained(pollers)
        finally:
            self._stopping.set()
            if scheduler is not None:
                await asyncio.gather(scheduler, return_exceptions=True)
            for poller in pollers:
                poller.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            await self._drain_running()
            if self._drained:
                await self._release_retries()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self._acks.drain()
            self._pool.shutdown(wait=False, cancel_futures=True)
            logger.info("worker.stopped", **{k: getattr(self.stats, k) for k in ("received", "succeeded", "retried", "dead_lettered")})
        return self.stats

    def _start_scheduler(self) -> asyncio.Task[None] | None:
        if not self.fire_schedules:
            return None
        from cloudq.schedules.local import LocalScheduler

        scheduler = LocalScheduler(self.app)

        async def run() -> None:
            try:
                await scheduler.run(self._stopping)
            finally:
                scheduler.close()

        logger.info("worker.firing_schedules", tasks=sorted(self.app.periodic_tasks))
        return asyncio.create_task(run(), name="cloudq-scheduler")

    async def _until_stopped_or_drained(self, pollers: set[asyncio.Task[None]]) -> None:
        stop_wait = asyncio.create_task(self._stopping.wait())
        pending = set(pollers)
        try:
            while pending and not self._stopping.is_set():
                done, pending = await asyncio.wait(pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stop_wait)
                for finished in done - {stop_wait}:
                    finished.result()  # re-raise a poller's fatal error
        finally:
            stop_wait.cancel()

    async def _resolve_queues(self) -> bool:
        """Resolve the queues before polling, waiting out an unreachable endpoint (an ECS task started
        during a blip must not crash-loop); False if stopped meanwhile. A missing queue still raises."""
        resolve = getattr(self.broker, "aqueue_url", None)
        failures = 0
        while resolve is not None and not self._stopping.is_set():
            try:
                for queue in self.queues:
                    await resolve(self.app.settings.queue_name(queue))
                return True
            except BrokerUnavailable as exc:
                failures += 1
                logger.warning("worker.broker_unavailable", phase="start", error=str(exc), failures=failures)
                await self._sleep(_backoff_s(failures))
        return not self._stopping.is_set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is asked to stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- receiving --------------------------------------------------------------------------
    async def _take_slots(self) -> int:
        """Wait for this poller's turn and a free slot, then take up to its share."""
        turn = await self._my_turn()
        try:
            await self._gather_batch()
            wanted = min(self._free, self._poller_share)
            if self.max_tasks is not None:
                wanted = min(wanted, self.max_tasks - self._started_jobs)
            self._free -= wanted
            return wanted
        finally:
            self._end_turn(turn)

    async def _my_turn(self) -> asyncio.Future[None] | None:
        """Return once a slot is free and every poller that asked earlier has taken its slots; a
        poller that just gave its slots back thus queues behind the others (no queue starves)."""
        if self._free > 0 and not self._turns:
            return None
        turn = asyncio.get_running_loop().create_future()
        self._turns.append(turn)
        try:
            await turn
        except BaseException:
            self._end_turn(turn)
            raise
        return turn

    def _end_turn(self, turn: asyncio.Future[None] | None) -> None:
        if turn is not None and turn in self._turns:
            self._turns.remove(turn)
        self._pass_turn()

    def _pass_turn(self) -> None:
        """Wake the first waiting poller if a slot is free; it stays first until it has taken them."""
        if self._free > 0 and self._turns and not self._turns[0].done():
            self._turns[0].set_result(None)

    def _batch_ready(self) -> bool:
        return self._free >= self._poller_share or not self._running

    async def _gather_batch(self) -> None:
        """With short jobs, slots free up one by one; receiving at the first free slot would ask SQS
        for 1-2 messages per call. Wait a moment for a full batch instead: same messages, fewer calls.

        The wait is woken by :meth:`_release` only once a batch is ready (or by the deadline), not
        at every freed slot."""
        if self._batch_ready():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GATHER_S
        while not self._batch_ready() and (left := deadline - loop.time()) > 0:
            waiter = loop.create_future()
            self._gathering.add(waiter)
            timer = loop.call_later(left, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._gathering.discard(waiter)

    def _release(self, slots: int) -> None:
        self._free += slots
        self._pass_turn()
        if self._gathering and self._batch_ready():
            for waiter in self._gathering:
                _wake(waiter)

    async def _poll(self, queue: str) -> None:
        physical = self.app.settings.queue_name(queue)
        failures = 0
        while not self._stopping.is_set():
            self._acks.hold(physical)  # this queue's deletes wait for the receive below (see AckBatcher)
            try:
                wanted = await self._take_slots()
            except BaseException:
                self._acks.unhold(physical)
                raise
            if wanted <= 0:
                self._acks.unhold(physical)
                self._release(wanted)
                return
            receiving = asyncio.ensure_future(self._receive(physical, wanted))
            # Scheduled after the receive task's first step, which builds its request and starts sending it.
            asyncio.get_running_loop().call_soon(self._acks.unhold, physical)
            try:
                deliveries = await receiving
            except BrokerUnavailable as exc:
                failures += 1
                logger.warning("worker.broker_unavailable", queue=queue, error=str(exc), failures=failures)
                await self._sleep(_backoff_s(failures))
                continue
            failures = 0
            self._release(wanted - len(deliveries))
            if self._stopping.is_set() and deliveries:
                await self._nack(physical, deliveries)
                self._release(len(deliveries))
                return
            if not deliveries:
                logger.debug("worker.empty_poll", queue=queue)
                if self.burst and not self._running and not self._retry_due_soon(physical):
                    self._drained = True
                    return
                if self.wait_s < 1:
                    await asyncio.sleep(0.01)  # a short poll came back empty: do not spin the loop
                continue
            retries = self._retries.get(physical)
            for delivery in deliveries:
                if retries:
                    retries.pop(delivery.message_id, None)
                self._start(queue, physical, delivery)

    async def _receive(self, physical: str, wanted: int) -> list[Delivery]:
        """Receive for ``wanted`` taken slots; on any error the slots are given back first."""
        try:
            return await self.broker.receive(
                physical, max_messages=wanted, wait_s=self.wait_s, visibility_timeout_s=self.visibility_timeout_s
            )
        except BaseException:
            self._release(wanted)
            raise

    def _start(self, queue: str, physical: str, delivery: Delivery) -> None:
        self.stats.received += 1
        self._started_jobs += 1
        job = _Job(queue, physical, delivery, visible_until=time.monotonic() + self.visibility_timeout_s)
        self._running.add(job)
        job.task = asyncio.create_task(self._process(job))

    # -- running ----------------------------------------------------------------------------
    async def _run_sync(self, call: Callable[[], Any]) -> Any:
        if self._results is None:
            self._results = _ThreadResults(asyncio.get_running_loop())
        return await self._results.run(self._pool, call)

    async def _process(self, job: _Job) -> None:
        def on_start(task: Task[Any, Any]) -> None:
            if task.timeout is not None:
                job.deadline = job.started + task.timeout

        try:
            settled = await self.consumer.process(job.delivery, job.queue, run_sync=self._run_sync, on_start=on_start)
            self._account(job, settled)
        finally:
            self._running.discard(job)
            self._release(1)
            if self.max_tasks is not None and self.stats.processed >= self.max_tasks:
                self.stop("max_tasks")

    def _account(self, job: _Job, settled: Settled) -> None:
        """Count the outcome; batch the delete of a finished message; remember a retry (for burst)."""
        kind = settled.outcome.kind
        if kind == "ack":
            self.stats.succeeded += 1
        elif kind == "retry":
            self.stats.retried += 1
            if self.burst and settled.delay_s is not None:
                self._retries[job.physical][job.delivery.message_id] = (job.delivery, time.monotonic() + settled.delay_s)
        elif kind == "dead_letter":
            self.stats.dead_lettered += 1
        else:
            self.stats.rescheduled += 1
        if settled.done:
            self._acks.add(job.physical, job.delivery)

    def _retry_due_soon(self, physical: str) -> bool:
        """Whether a retry this worker scheduled on ``physical`` comes back within the burst's bound."""
        horizon = time.monotonic() + self.burst_retry_wait_s
        return any(due <= horizon for _, due in self._retries.get(physical, {}).values())

    async def _release_retries(self) -> None:
        """At the end of a burst, retries due beyond the bound are made visible now, not left in flight."""
        for physical, retries in self._retries.items():
            if retries:
                logger.info("worker.retries_released", queue=physical, count=len(retries))
                await self._nack(physical, [delivery for delivery, _ in retries.values()])
        self._retries.clear()

    async def _nack(self, physical: str, deliveries: Sequence[Delivery]) -> None:
        """Make messages visible again at once (shutdown): another worker takes them now."""
        try:
            await self.broker.change_visibility(physical, deliveries, 0)
        except BrokerError as exc:
            logger.warning("worker.release_failed", count=len(deliveries), error=str(exc))

    async def _drain_running(self) -> None:
        jobs = [j.task for j in self._running if j.task is not None]
        if jobs:
            await asyncio.wait(jobs, timeout=self.grace_s)
        leftovers = [j for j in self._running if j.task is not None and not j.task.done()]
        if not leftovers:
            return
        logger.warning("worker.grace_expired", released=len(leftovers))
        by_queue: dict[str, list[Delivery]] = defaultdict(list)
        for job in leftovers:
            assert job.task is not None
            job.task.cancel()
            by_queue[job.physical].append(job.delivery)
        await asyncio.gather(*(j.task for j in leftovers if j.task), return_exceptions=True)
        for physical, deliveries in by_queue.items():
            await self._nack(physical, deliveries)

    # -- visibility heartbeat ---------------------------------------------------------------
    async def _heartbeat(self) -> None:
        vt = self.visibility_timeout_s
        tick = max(0.2, min(5.0, vt / 4))
        while True:
            await asyncio.sleep(tick)
            self._touch_health_file()
            now = time.monotonic()
            due: dict[str, list[_Job]] = defaultdict(list)
            for job in list(self._running):
                if job.visible_until - now >= vt / 2:
                    continue
                if job.deadline is not None and now >= job.deadline:
                    if not job.timed_out:
                        job.timed_out = True
                        logger.warning("job.timeout", message_id=job.delivery.message_id, queue=job.queue)
                    continue
                due[job.physical].append(job)
            for physical, jobs in due.items():
                await self._extend(physical, jobs, now + vt)

    async def _extend(self, physical: str, jobs: list[_Job], visible_until: float) -> None:
        try:
            await self.broker.change_visibility(physical, [j.delivery for j in jobs], self.visibility_timeout_s)
        except BrokerError as exc:
            logger.warning("worker.heartbeat_failed", queue=physical, error=str(exc))
            return
        for job in jobs:
            job.visible_until = visible_until
        logger.debug("worker.visibility_extended", queue=physical, count=len(jobs))

    def _touch_health_file(self) -> None:
        if self._heartbeat_path is not None:
            self._heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
            self._heartbeat_path.write_text(f"{time.time():.3f}\n")

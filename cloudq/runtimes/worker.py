"""The long-polling worker: the ECS container's entry point (``cloudq worker``).

One asyncio loop per process. Each queue has a poller that receives at most as
many messages as there are free slots (so nothing waits unstarted while holding
its visibility), async tasks run on the loop and sync tasks on a bounded thread
pool. Deletes are batched (:class:`~cloudq.runtimes.acks.AckBatcher`), visibility is extended for long
jobs by one batched heartbeat (:class:`~cloudq.runtimes.visibility.Heartbeat`), and SIGTERM drains: stop receiving, let running
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
* **Metrics** (``CLOUDQ_METRICS``, :mod:`cloudq.observability`): the jobs' are counted through the
  middleware seam; the worker adds its own per receive (receives, empty ones, messages per receive,
  slots busy) and per delete batch, and flushes EMF every interval and at exit. With metrics off the
  only cost is one ``is None`` check per receive.
* **Start-up** through an outage: resolving the queues retries with backoff
  (``worker.broker_unavailable``) until the endpoint answers; SIGTERM meanwhile exits cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudq.brokers.base import SQS_MAX_BATCH, Delivery
from cloudq.brokers.blocking import DaemonThreads
from cloudq.errors import BrokerError, BrokerUnavailable
from cloudq.logs import get_logger
from cloudq.runtimes.acks import AckBatcher
from cloudq.runtimes.burst import PendingRetries
from cloudq.runtimes.slots import Slots
from cloudq.runtimes.visibility import Heartbeat, HeldJob

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.consumer import Settled
    from cloudq.tasks import Task

__all__ = ["Worker", "WorkerStats"]

logger = get_logger("cloudq.worker")

_GATHER_S = 0.02  # longest wait for more free slots before a receive (see cloudq.runtimes.slots)
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
    cancelled: int = 0
    skipped: int = 0
    """Deliveries of jobs the job store saw succeed already (acked without running)."""

    @property
    def processed(self) -> int:
        return self.succeeded + self.retried + self.dead_lettered + self.rescheduled + self.cancelled + self.skipped

    def count(self, kind: str) -> None:
        """One more delivery whose outcome was ``kind`` (an Outcome kind: ack, retry, dead_letter...)."""
        name = _COUNTED.get(kind, "skipped")
        setattr(self, name, getattr(self, name) + 1)


_COUNTED = {"ack": "succeeded", "retry": "retried", "dead_letter": "dead_lettered", "reschedule": "rescheduled", "cancelled": "cancelled"}


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
        # Each poller reserves at most its share of slots while it long-polls (so an idle queue cannot
        # hold every slot while another queue's messages wait), and a queue gets enough pollers to
        # keep its share busy: above 10 slots per queue, several receives run at once.
        per_queue = max(1, -(-self.concurrency // len(self.queues)))
        self._pollers_per_queue = -(-per_queue // SQS_MAX_BATCH)
        share = max(1, -(-per_queue // self._pollers_per_queue))
        self._slots = Slots(self.concurrency, share=share, idle=lambda: not self._running, gather_s=_GATHER_S)
        self._stopping = asyncio.Event()
        self._running: set[HeldJob] = set()
        self._started_jobs = 0
        self._retries = PendingRetries(burst_retry_wait_s)  # scheduled by a burst and not seen again
        self._releasing: set[asyncio.Task[None]] = set()  # releases a stopping poller started (see _release_now)
        self._recording: set[asyncio.Future[None]] = set()  # end states being written to the job store (deletes wait)
        self._drained = False  # a burst found its queues empty (not stopped by max_tasks or a signal)
        self._threads = DaemonThreads(self.concurrency, "cloudq-task", skip_cancelled=True)
        # Metrics (CLOUDQ_METRICS): per receive and per delete batch, never per message; None when off.
        self._metrics = app.metrics
        on_ack = self._metrics.deletes_of({settings.queue_name(q): q for q in self.queues}) if self._metrics is not None else None
        # Finished jobs whose delete has not returned yet: the heartbeat keeps them invisible too, or a delete
        # slowed by throttling and retries would outlive the visibility and the job would run again.
        self._deleting: dict[int, HeldJob] = {}
        self._acks = AckBatcher(
            self.broker, settings.delete_flush_s, self.consumer.wire.adelete, on_ack=on_ack, on_done=self._deleted
        )
        self._heartbeat = Heartbeat(
            self.broker, self.visibility_timeout_s, lambda: [*self._running, *self._deleting.values()],
            lambda delivery: id(delivery) in self._deleting, settings.heartbeat_path,
        )  # fmt: skip

    # -- control ----------------------------------------------------------------------------
    def tasks_still_running(self) -> bool:
        """Whether a sync task outlived the run (past the shutdown grace: its message was released)."""
        return self._threads.busy() > 0

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
        await self._check_job_store()
        self._heartbeat.touch_health_file()
        logger.info("worker.started", queues=self.queues, concurrency=self.concurrency, burst=self.burst)
        pollers = {
            asyncio.create_task(self._poll(q), name=f"cloudq-poll-{q}-{i}")
            for q in self.queues
            for i in range(self._pollers_per_queue)
        }
        heartbeat = asyncio.create_task(self._heartbeat.run())
        scheduler = self._start_scheduler()
        flusher = asyncio.create_task(self._metrics.flush_every_interval()) if self._metrics is not None else None
        try:
            await self._until_stopped_or_drained(pollers)
        finally:
            self._stopping.set()
            if scheduler is not None:
                await asyncio.gather(scheduler, return_exceptions=True)
            for poller in pollers:
                poller.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            await asyncio.gather(*self._releasing, return_exceptions=True)
            await self._drain_running()
            await asyncio.gather(*self._recording, return_exceptions=True)
            if self._drained:
                await self._release_retries()
            await self._acks.drain()  # before the heartbeat stops: it keeps deletes in flight covered
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            if flusher is not None:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)
            if self._metrics is not None:
                self._metrics.flush()  # at exit: what the last interval holds
            self._threads.close()
            logger.info("worker.stopped", **{k: getattr(self.stats, k) for k in ("received", "succeeded", "retried", "dead_lettered")})
        return self.stats

    def _start_scheduler(self) -> asyncio.Task[None] | None:
        if not self.fire_schedules:
            return None
        from cloudq.schedules.local import LocalScheduler

        logger.info("worker.firing_schedules", tasks=sorted(self.app.periodic_tasks))
        return asyncio.create_task(LocalScheduler(self.app).run_until(self._stopping), name="cloudq-scheduler")

    async def _until_stopped_or_drained(self, pollers: set[asyncio.Task[None]]) -> None:
        stop_wait = asyncio.create_task(self._stopping.wait())
        pending: set[asyncio.Task[Any]] = set(pollers)
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
        physical = [self.app.settings.queue_name(queue) for queue in self.queues]
        failures = 0
        while not self._stopping.is_set():
            try:
                await self.broker.prepare(physical)
                return True
            except BrokerUnavailable as exc:
                failures += 1
                await self._wait_out(exc, failures, phase="start")
        return False

    async def _check_job_store(self) -> None:
        """A job table that does not exist is one clear error at start (ConfigurationError: exit 2), not a
        warning per job; a store that cannot be reached now is left to each call's retries."""
        tracker = self.consumer.tracker
        if tracker is None:
            return
        try:
            await asyncio.to_thread(tracker.store.check)
        except BrokerError as exc:
            logger.warning("worker.job_store_unavailable", error=str(exc))

    async def _wait_out(self, exc: BrokerUnavailable, failures: int, **where: str) -> None:
        """An unreachable broker: log it, then pause (growing with ``failures``) unless asked to stop."""
        logger.warning("worker.broker_unavailable", **where, error=str(exc), failures=failures)
        await self._sleep(_backoff_s(failures))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is asked to stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- receiving --------------------------------------------------------------------------
    def _jobs_left(self) -> int:
        return self.concurrency if self.max_tasks is None else self.max_tasks - self._started_jobs

    async def _poll(self, queue: str) -> None:
        physical = self.app.settings.queue_name(queue)
        failures = 0
        while not self._stopping.is_set():
            self._acks.hold(physical)  # this queue's deletes wait for the receive below (see AckBatcher)
            try:
                wanted = await self._slots.take(self._jobs_left)
            except BaseException:
                self._acks.unhold(physical)
                raise
            if wanted <= 0:
                self._acks.unhold(physical)
                self._slots.release(wanted)
                return
            receiving = asyncio.ensure_future(self._receive(physical, wanted))
            # Scheduled after the receive task's first step, which builds its request and starts sending it.
            asyncio.get_running_loop().call_soon(self._acks.unhold, physical)
            try:
                deliveries = await receiving
            except asyncio.CancelledError:
                await self._give_back_answered(physical, receiving)
                raise
            except BrokerUnavailable as exc:
                failures += 1
                await self._wait_out(exc, failures, queue=queue)
                continue
            failures = 0
            self._slots.release(wanted - len(deliveries))
            if self._metrics is not None:
                self._metrics.received(queue, len(deliveries), self.concurrency - self._slots.free)
            if self._stopping.is_set() and deliveries:
                await self._release_now(physical, deliveries)
                self._slots.release(len(deliveries))
                return
            if not deliveries:
                logger.debug("worker.empty_poll", queue=queue)
                if self.burst and not self._running and not self._retries.due_soon(physical):
                    self._drained = True
                    return
                if self.wait_s < 1:
                    await asyncio.sleep(0.01)  # a short poll came back empty: do not spin the loop
                continue
            for delivery in deliveries:
                self._retries.seen(physical, delivery)
                self._start(queue, physical, delivery)

    async def _give_back_answered(self, physical: str, receiving: asyncio.Future[list[Delivery]]) -> None:
        """The worker stopped just as a receive answered: the poller is cancelled with the messages in hand
        (the receive itself was not, so the broker's own give-back does not apply). They are made visible
        again at once; left alone they would wait out their visibility timeout (issue 16's SIGTERM strand)."""
        if receiving.done() and not receiving.cancelled() and receiving.exception() is None and receiving.result():
            await self._release_now(physical, receiving.result())

    async def _release_now(self, physical: str, deliveries: Sequence[Delivery]) -> None:
        """Release received messages (the worker is stopping) in a task of its own that ``run`` waits for:
        the poller may be cancelled mid-way, and closing the broker under a release still in flight
        would lose it (on the local broker: its connection closed under the UPDATE)."""
        task = asyncio.ensure_future(self._nack(physical, deliveries))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        await asyncio.shield(task)

    async def _receive(self, physical: str, wanted: int) -> list[Delivery]:
        """Receive for ``wanted`` taken slots; on any error the slots are given back first."""
        try:
            return await self.broker.receive(
                physical, max_messages=wanted, wait_s=self.wait_s, visibility_timeout_s=self.visibility_timeout_s
            )
        except BaseException:
            self._slots.release(wanted)
            raise

    def _start(self, queue: str, physical: str, delivery: Delivery) -> None:
        self.stats.received += 1
        self._started_jobs += 1
        job = HeldJob(queue, physical, delivery, visible_until=time.monotonic() + self.visibility_timeout_s)
        self._running.add(job)
        job.task = asyncio.create_task(self._process(job))

    # -- running ----------------------------------------------------------------------------
    async def _process(self, job: HeldJob) -> None:
        def on_start(task: Task[Any, Any]) -> None:
            if task.timeout is not None:
                job.deadline = job.started + task.timeout

        try:
            settled = await self.consumer.process(job.delivery, job.queue, run_sync=self._threads.run, on_start=on_start, defer_record=True)
            self._account(job, settled)
        finally:
            self._running.discard(job)
            self._slots.release(1)
            if self.max_tasks is not None and self.stats.processed >= self.max_tasks:
                self.stop("max_tasks")

    def _account(self, job: HeldJob, settled: Settled) -> None:
        """Count the outcome; batch the delete of a finished message; remember a retry (for burst)."""
        self.stats.count(settled.outcome.kind)
        if settled.outcome.kind == "retry" and self.burst and settled.delay_s is not None:
            self._retries.add(job.physical, job.delivery, settled.delay_s)
        recorded = settled.recorded
        if recorded is not None and not recorded.done():  # the job store's end state first, then the delete
            self._recording.add(recorded)
            if settled.done:  # covered by the heartbeat from now, through the store's write and the delete
                self._deleting[id(job.delivery)] = job
            recorded.add_done_callback(lambda _: self._recorded(recorded, job, settled))
        elif settled.done:
            self._delete(job, settled)

    def _recorded(self, recorded: asyncio.Future[None], job: HeldJob, settled: Settled) -> None:
        self._recording.discard(recorded)
        if settled.done:
            self._delete(job, settled)

    def _delete(self, job: HeldJob, settled: Settled) -> None:
        self._deleting[id(job.delivery)] = job
        self._acks.add(job.physical, job.delivery, settled.payload)

    def _deleted(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self._deleting.pop(id(delivery), None)

    async def _release_retries(self) -> None:
        """At the end of a burst, retries due beyond the bound are made visible now, not left in flight."""
        for physical, deliveries in self._retries.take_all().items():
            logger.info("worker.retries_released", queue=physical, count=len(deliveries))
            await self._nack(physical, deliveries)

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

"""Helpers for testing your own code that enqueues: see what waits, run it in-process, or run it at once.

::

    from cloudq import testing

    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory"))

    testing.enqueued(app, task="shop.send_welcome_email")   # -> [cloudq.Envelope], what waits in the queues
    stats = testing.drain(app)                               # run every job until the queues are empty
    with testing.eager(app):                                 # .delay/.map/app.enqueue run the task at once
        signup("ada@example.com")

Every job runs through the app's consumer core (:class:`cloudq.consumer.Consumer`), the one the worker
and the Lambda handler use: the same argument checks, middleware, ``current_job()``, log lines and retry
decisions. Why not a :class:`~cloudq.runtimes.worker.Worker` in burst mode: it waits as a worker must
(long polls, a retry's backoff in real time: about a second per drain), where a test wants time to
jump. ``drain`` takes no sleeps: a retry it scheduled is made visible again as soon as nothing else is
left, and on the memory broker its clock jumps past send delays (``with_options(delay=...)``). Jobs
with an ETA (a delay beyond SQS's 15 minutes) wait on the wall clock, so they are not due: ``drain``
leaves them queued. ``enqueued`` and ``drain`` need the memory or local broker; ``eager`` needs none.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from cloudq.brokers.base import SQS_MAX_BATCH, SQS_MAX_VISIBILITY_S, AdminBroker, Delivery, OutgoingMessage
from cloudq.envelope import Envelope, utcnow
from cloudq.errors import ConfigurationError, EnvelopeError
from cloudq.tasks import Task

if TYPE_CHECKING:
    from collections.abc import Callable

    from cloudq.app import App
    from cloudq.brokers.base import Broker
    from cloudq.consumer import Settled

__all__ = ["DrainStats", "DrainTimeout", "adrain", "drain", "eager", "enqueued"]

T = TypeVar("T")

_PEEK_ALL = 1_000_000
# One jump of the memory broker's clock: past every SQS delay (15 min) and visibility timeout (12 h).
_SKIP_S = SQS_MAX_VISIBILITY_S + 1


@dataclass
class DrainStats:
    """What a drain ran. ``errors`` holds what the failed runs raised, in order, so that a test can
    show why (``assert not stats.errors, stats.errors``); ``rescheduled`` counts re-sends of jobs
    whose ETA is still ahead; with a job store, ``cancelled`` and ``skipped`` (deliveries of jobs that had
    already succeeded) count jobs acked without running."""

    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    rescheduled: int = 0
    errors: list[BaseException] = field(default_factory=list)
    cancelled: int = 0
    skipped: int = 0

    @property
    def processed(self) -> int:
        return self.succeeded + self.retried + self.dead_lettered + self.rescheduled + self.cancelled + self.skipped


_COUNTERS = {
    "ack": "succeeded", "retry": "retried", "dead_letter": "dead_lettered", "reschedule": "rescheduled",
    "cancelled": "cancelled", "duplicate": "skipped",
}  # fmt: skip


class DrainTimeout(TimeoutError):
    """The queues did not empty within the drain's timeout (a task that keeps enqueuing, one that hangs);
    ``stats`` says what ran until then."""

    def __init__(self, message: str, stats: DrainStats) -> None:
        super().__init__(message)
        self.stats = stats


# -- what waits ---------------------------------------------------------------------------------
def enqueued(app: App, task: str | Task[Any, Any] | None = None) -> list[Envelope]:
    """The jobs waiting in ``app``'s queues (dead-letter queues excluded), in flight or not, queue by
    queue in send order; only ``task``'s (a name or the Task) if given. Bodies that are not envelopes
    are left out. Changes nothing."""
    admin = _admin(app)
    name = task.name if isinstance(task, Task) else task
    found: list[Envelope] = []
    for physical in admin.list_queues(app.settings.queue_prefix):
        if _is_dlq(physical):
            continue
        for delivery in admin.peek(physical, _PEEK_ALL):
            try:
                envelope = Envelope.decode(delivery.body, default_id=delivery.message_id)
            except EnvelopeError:
                continue
            if name is None or envelope.task == name:
                found.append(envelope)
    return found


# -- drain --------------------------------------------------------------------------------------
def drain(app: App, queues: Iterable[str] | None = None, timeout: float = 10) -> DrainStats:
    """Run the jobs of ``queues`` (logical names; default: the app's and any other that holds jobs) in
    this process until they are empty, retries included; raises :class:`DrainTimeout` after
    ``timeout`` seconds. From async code, ``await adrain(...)`` spares a thread."""
    return _run_blocking(adrain(app, queues, timeout))


async def adrain(app: App, queues: Iterable[str] | None = None, timeout: float = 10) -> DrainStats:
    """The async twin of :func:`drain`, on the running loop."""
    admin = _admin(app)
    stats = DrainStats()
    names = list(queues) if queues is not None else _app_queues(app, admin)
    try:
        await asyncio.wait_for(_Drain(app, names, stats).run(), timeout)
    except asyncio.TimeoutError:
        raise DrainTimeout(f"queues {names} not empty after {timeout:g} s ({stats.processed} runs)", stats) from None
    return stats


class _SkipClock:
    """A memory broker's clock plus the time drains skipped: it still only moves forward, so every
    visibility and delay the broker recorded stays consistent."""

    def __init__(self, base: Callable[[], float]) -> None:
        self.base = base
        self.skipped_s = 0.0

    def __call__(self) -> float:
        return self.base() + self.skipped_s


class _Drain:
    """One drain: rounds of receive-and-run over the queues; when a round finds nothing, time moves on
    (retries released, then the memory clock skipped) until nothing is left that could become due."""

    def __init__(self, app: App, queues: Sequence[str], stats: DrainStats) -> None:
        self.consumer = app.consumer
        self.broker: Broker = app.broker
        self.admin = _admin(app)
        self.stats = stats
        self.physical = {queue: app.settings.queue_name(queue) for queue in queues}
        self.retries: dict[str, list[Delivery]] = defaultdict(list)  # physical queue -> retries we scheduled
        self.clock = _skip_clock(self.broker)
        self.progressed = True  # since the last skip, something ran that was not an ETA re-send

    async def run(self) -> None:
        while await self._round() or await self._release_retries() or self._skip_ahead():
            pass

    async def _round(self) -> bool:
        """One receive per queue, each delivery run in its own asyncio task (its log context and
        ``current_job()`` stay its own), in order; finished messages deleted in one call."""
        ran = False
        for queue, physical in self.physical.items():
            deliveries = await self.broker.receive(physical, max_messages=SQS_MAX_BATCH, wait_s=0)
            done = []
            for delivery in deliveries:
                settled = await asyncio.create_task(self.consumer.process(delivery, queue))
                self._account(physical, delivery, settled)
                if settled.done:
                    done.append(delivery)
            if done:
                await self.broker.ack(physical, done)
            ran = ran or bool(deliveries)
        return ran

    def _account(self, physical: str, delivery: Delivery, settled: Settled) -> None:
        outcome = settled.outcome
        counter = _COUNTERS[outcome.kind]
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if outcome.error is not None and outcome.kind != "cancelled":
            self.stats.errors.append(outcome.error)
        if outcome.kind != "reschedule":
            self.progressed = True
        if outcome.kind == "retry" and not settled.done:
            self.retries[physical].append(delivery)

    async def _release_retries(self) -> bool:
        """Nothing else to run: the retries' backoff is over, as far as this drain is concerned."""
        released = False
        for physical, deliveries in self.retries.items():
            if deliveries:
                await self.broker.change_visibility(physical, deliveries, 0)
                released = True
        self.retries.clear()
        return released

    def _skip_ahead(self) -> bool:
        """Jump the memory broker's clock when messages still wait (delayed, or in flight elsewhere);
        not again after a jump that ran only ETA re-sends, which wait on the wall clock."""
        if self.clock is None or not self.progressed:
            return False
        if not any(self._waiting(physical) for physical in self.physical.values()):
            return False
        self.clock.skipped_s += _SKIP_S
        self.progressed = False
        return True

    def _waiting(self, physical: str) -> bool:
        stats = self.admin.stats(physical)
        return stats.delayed + stats.in_flight > 0


def _skip_clock(broker: Broker) -> _SkipClock | None:
    """The memory broker's clock, made skippable once (the local broker's is shared with other processes
    through its file, so it is never moved)."""
    from cloudq.brokers.memory import MemoryBroker

    if not isinstance(broker, MemoryBroker):
        return None
    if not isinstance(broker.clock, _SkipClock):
        broker.clock = _SkipClock(broker.clock)
    return broker.clock


# -- eager --------------------------------------------------------------------------------------
@contextmanager
def eager(app: App) -> Iterator[None]:
    """Inside the block, ``.delay``/``.adelay``/``.map``/``app.enqueue`` run each job at once, in the
    caller's process, through the consumer core, and raise what the task raised (``cloudq.Retry`` and
    ``Reject`` included); send delays are ignored. They return their ``JobRef`` as usual. No broker is
    used or created; middleware's ``on_send`` (around the job's run, which is the send here), ``on_enqueue``,
    ``on_job`` and ``on_outcome`` all run."""
    with app.producer.sending_to(_EagerBroker(app)):  # type: ignore[arg-type]  # sends only: all eager needs
        yield


class _EagerBroker:
    """Stands in for the producer's broker inside :func:`eager`: each message sent becomes a direct
    invocation (a delivery without a receipt, as when EventBridge invokes Lambda), so the consumer
    settles nothing, and its outcome's error is raised to the sender."""

    def __init__(self, app: App) -> None:
        self.app = app

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        return _run_blocking(self.asend(queue, messages))

    async def asend(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        # Each job in a task of its own: a nested .adelay must not rebind its caller's log context.
        return [await asyncio.create_task(self._run(queue, message)) for message in messages]

    async def _run(self, physical: str, message: OutgoingMessage) -> str:
        message_id = str(uuid.uuid4())
        delivery = Delivery(physical, message_id, "", _due_now(message.body), 1, dict(message.attributes), utcnow(), message.group_id)
        logical = physical.removeprefix(self.app.settings.queue_prefix)
        settled = await self.app.consumer.process(delivery, logical)
        if settled.outcome.error is not None:
            raise settled.outcome.error
        return message_id


def _due_now(body: str) -> str:
    """The body without its ETA: an eager job runs now (with one, the consumer would re-send it)."""
    envelope = Envelope.decode(body)
    return body if envelope.eta is None else replace(envelope, eta=None).encode()


# -- plumbing -----------------------------------------------------------------------------------
def _admin(app: App) -> AdminBroker:
    """The app's broker if it is one a test can look into and drain (memory, local), else a clear error."""
    from cloudq.brokers.local import LocalBroker
    from cloudq.brokers.memory import MemoryBroker

    broker = app.broker
    if not isinstance(broker, (MemoryBroker, LocalBroker)):
        raise ConfigurationError(
            f"cloudq.testing needs the memory or local broker, not {type(broker).__name__}: "
            "App(..., settings=cloudq.Settings(broker='memory')) (or use testing.eager, which needs none)"
        )
    return broker


def _app_queues(app: App, admin: AdminBroker) -> list[str]:
    """The app's logical queues plus any other of its prefix that exists (a ``with_options(queue=...)``),
    dead-letter queues excluded."""
    prefix = app.settings.queue_prefix
    existing = {name.removeprefix(prefix) for name in admin.list_queues(prefix) if not _is_dlq(name)}
    return sorted(set(app.queues()) | existing)


def _is_dlq(physical: str) -> bool:
    return physical.endswith(("-dlq", "-dlq.fifo"))


def _run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end from sync code. On a loop of its own (nothing of the memory and local
    brokers is bound to a loop, so nothing outlives it), or, when this thread already runs a loop (a
    sync call from async code), on a thread of its own, in a copy of the caller's context."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloudq-testing") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()

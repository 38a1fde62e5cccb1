"""Middleware: the one public seam into a job's life, on the producer and on every runtime.

Subclass :class:`Middleware` and override what you need; every hook is optional::

    class Timing(cloudq.Middleware):
        async def on_job(self, job, call_next):
            started = time.perf_counter()
            try:
                return await call_next()
            finally:
                metrics.observe(job.task, time.perf_counter() - started)

    app = cloudq.App("shop", middleware=[Timing()])

* ``on_enqueue(envelope) -> envelope`` runs in the producer (``.delay``, ``.adelay``, ``.map``,
  ``app.enqueue``, ``cloudq enqueue``) before anything is sent; it may return the envelope with
  headers added (:meth:`cloudq.Envelope.with_headers`). One that raises fails the enqueue: nothing
  is sent.
* ``on_send(queue, envelopes)`` returns a context manager that the producer holds open around the
  whole send of one ``.delay``/``.map``/``app.enqueue`` call (``on_enqueue``, signing, S3 offload,
  the job-state write, the broker call): entered before ``on_enqueue``, exited once the broker call
  has returned, or has raised (the exception is thrown into it, as in any ``with`` block), so it can
  time the send and see it fail. ``queue`` is the logical queue and
  ``envelopes`` the jobs as built (ids final, before ``on_enqueue``). It is one hook for the sync
  (boto3) and async (aioboto3) producers alike, which a ``call_next`` wrapper could not be. One that
  raises on entry fails the enqueue (nothing is sent); it cannot swallow a failed send (what its exit
  returns is ignored); one that raises on exit is logged (``middleware.failed``) and changes nothing:
  the messages are sent, and raising would invite sending them twice.
* ``on_job(job, call_next)`` wraps the task call in the worker and in Lambda alike, on the event
  loop (a sync task runs in its thread inside ``call_next``). Its result is the task's result; one
  that raises counts as the task failing (the retry policy decides).
* ``on_outcome(job, outcome)`` runs once the fate is decided and carried out. One that raises is
  logged (``middleware.failed``) and changes nothing: the message is already settled.

Middleware runs in the order given, the first outermost: ``on_send``, ``on_enqueue`` and ``on_job``
enter first to last (``on_send`` and ``on_job`` exit last to first), ``on_outcome`` is called first
to last too. Hooks a subclass does not override are never called, so an installed middleware costs
only the hooks it has, and without any ``on_send`` the producer takes its plain path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cloudq.errors import ConfigurationError

if TYPE_CHECKING:
    from cloudq.envelope import Envelope
    from cloudq.job import Job
    from cloudq.retry import Outcome

__all__ = ["CallNext", "Middleware", "MiddlewareChain"]

CallNext = Callable[[], Awaitable[Any]]


class Middleware:
    """Base class of middleware; the default hooks do nothing (and are skipped)."""

    def on_enqueue(self, envelope: Envelope) -> Envelope:
        return envelope

    def on_send(self, queue: str, envelopes: Sequence[Envelope]) -> AbstractContextManager[Any]:
        return nullcontext()

    async def on_job(self, job: Job, call_next: CallNext) -> Any:
        return await call_next()

    def on_outcome(self, job: Job, outcome: Outcome) -> None:
        return None


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


class MiddlewareChain:
    """An app's middleware in order, with each hook's list kept apart so that an empty one is free."""

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self.items: list[Middleware] = []
        self._enqueue: list[Middleware] = []
        self._send: list[Middleware] = []
        self._job: list[Middleware] = []
        self._outcome: list[Middleware] = []
        for item in middleware:
            self.add(item)

    def add(self, middleware: Middleware, *, first: bool = False) -> None:
        """Append ``middleware`` (innermost), or with ``first`` put it before all others (outermost)."""
        if not isinstance(middleware, Middleware):
            raise ConfigurationError(f"middleware must subclass cloudq.Middleware, got {type(middleware).__name__}")
        at = 0 if first else len(self.items)
        self.items.insert(at, middleware)
        for hook, chain in self._hooks():
            if _overrides(middleware, hook):
                chain.insert(0 if first else len(chain), middleware)

    def remove(self, middleware: Middleware) -> None:
        """Take ``middleware`` out again (the App does, for the observability it installed, on new settings)."""
        for chain in (self.items, *(c for _, c in self._hooks())):
            if middleware in chain:
                chain.remove(middleware)

    def _hooks(self) -> tuple[tuple[str, list[Middleware]], ...]:
        return (("on_enqueue", self._enqueue), ("on_send", self._send), ("on_job", self._job), ("on_outcome", self._outcome))

    def enqueue(self, envelope: Envelope) -> Envelope:
        for middleware in self._enqueue:
            envelope = middleware.on_enqueue(envelope)
        return envelope

    def enqueue_all(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Each envelope of one send (a ``.map`` batch) through every ``on_enqueue``. A middleware may
        see the batch at once through an ``on_enqueue_batch(envelopes) -> envelopes`` method (cloudq's
        tracing does, to add each job's own creation context); the others see the envelopes one by one."""
        for middleware in self._enqueue:
            batch = getattr(middleware, "on_enqueue_batch", None)
            envelopes = list(batch(envelopes)) if batch is not None else [middleware.on_enqueue(e) for e in envelopes]
        return envelopes

    def sending(self, queue: str, envelopes: Sequence[Envelope]) -> AbstractContextManager[None] | None:
        """Every ``on_send`` as one context manager for the producer to hold around a send, or None when
        no middleware has the hook (the producer then sends without any ``with``: the hot path)."""
        return _Sending(self._send, queue, envelopes) if self._send else None

    async def run(self, job: Job, call: CallNext) -> Any:
        """``call`` (the task) wrapped by every ``on_job``, the first outermost."""
        if not self._job:
            return await call()
        for middleware in reversed(self._job):
            call = _wrap(middleware, job, call)
        return await call()

    def outcome(self, job: Job, outcome: Outcome) -> None:
        """Tell every ``on_outcome``; failures are logged, never raised (the message is settled)."""
        for middleware in self._outcome:
            try:
                middleware.on_outcome(job, outcome)
            except Exception as exc:  # noqa: BLE001 - observing a fate must not change it
                _log_failure("on_outcome", middleware, exc)

    def __len__(self) -> int:
        return len(self.items)


def _wrap(middleware: Middleware, job: Job, call_next: CallNext) -> CallNext:
    return lambda: middleware.on_job(job, call_next)


def _log_failure(hook: str, middleware: Middleware, exc: BaseException) -> None:
    from cloudq.logs import get_logger  # structlog itself is imported only when the line is written

    get_logger("cloudq.middleware").error("middleware.failed", hook=hook, middleware=type(middleware).__name__, error=f"{type(exc).__name__}: {exc}")


class _Sending:
    """The ``on_send`` context managers of one send, entered first to last and exited last to first.

    Hand-written rather than an ExitStack, for what the producer promises: a failed send is never
    swallowed (what a manager's exit returns is ignored), and an exit that raises after a send that
    went through is logged, not raised (the messages are in the queue; an error would invite a re-send).
    """

    __slots__ = ("_envelopes", "_entered", "_middleware", "_queue")

    def __init__(self, middleware: list[Middleware], queue: str, envelopes: Sequence[Envelope]) -> None:
        self._middleware, self._queue, self._envelopes = middleware, queue, envelopes
        self._entered: list[tuple[Middleware, AbstractContextManager[Any]]] = []

    def __enter__(self) -> None:
        for middleware in self._middleware:
            try:
                manager = middleware.on_send(self._queue, self._envelopes)
                manager.__enter__()
            except BaseException as exc:  # the enqueue fails; the managers already entered see why
                self.__exit__(type(exc), exc, exc.__traceback__)
                raise
            self._entered.append((middleware, manager))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        interrupted: BaseException | None = None
        while self._entered:
            middleware, manager = self._entered.pop()
            try:
                manager.__exit__(kind, exc, tb)
            except Exception as error:  # noqa: BLE001 - observing a send must not change its result
                if error is not exc:  # re-raising the send's own error is a manager's way of not swallowing it
                    _log_failure("on_send", middleware, error)
            except BaseException as error:  # KeyboardInterrupt, cancellation: raised once the others are out
                if error is not exc:
                    interrupted = error
        if interrupted is not None:
            raise interrupted

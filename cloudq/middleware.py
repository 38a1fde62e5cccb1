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
* ``on_job(job, call_next)`` wraps the task call in the worker and in Lambda alike, on the event
  loop (a sync task runs in its thread inside ``call_next``). Its result is the task's result; one
  that raises counts as the task failing (the retry policy decides).
* ``on_outcome(job, outcome)`` runs once the fate is decided and carried out. One that raises is
  logged (``middleware.failed``) and changes nothing: the message is already settled.

Middleware runs in the order given, the first outermost: ``on_enqueue`` and ``on_job`` enter
first to last, ``on_outcome`` is called first to last too. Hooks a subclass does not override are
never called, so an installed middleware costs only the hooks it has.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
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
        return (("on_enqueue", self._enqueue), ("on_job", self._job), ("on_outcome", self._outcome))

    def enqueue(self, envelope: Envelope) -> Envelope:
        for middleware in self._enqueue:
            envelope = middleware.on_enqueue(envelope)
        return envelope

    def enqueue_all(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Each envelope of one send (a ``.map`` batch) through every ``on_enqueue``. A middleware may
        see the batch at once through an ``on_enqueue_batch(envelopes) -> envelopes`` method (cloudq's
        tracing does: one span per batch); the others see the envelopes one by one."""
        for middleware in self._enqueue:
            batch = getattr(middleware, "on_enqueue_batch", None)
            envelopes = list(batch(envelopes)) if batch is not None else [middleware.on_enqueue(e) for e in envelopes]
        return envelopes

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
                import structlog  # here, not at the top: producers import this module, and rarely fail here

                structlog.get_logger("cloudq.middleware").error("middleware.failed", hook="on_outcome", middleware=type(middleware).__name__, error=f"{type(exc).__name__}: {exc}")

    def __len__(self) -> int:
        return len(self.items)


def _wrap(middleware: Middleware, job: Job, call_next: CallNext) -> CallNext:
    return lambda: middleware.on_job(job, call_next)

"""Tasks: registered functions that can run inline or be enqueued as jobs, and the registry.

A :class:`Task` wraps a function; calling it runs the function in-process, and
``delay``/``adelay``/``map`` enqueue jobs through the producer it was given (the app's). Options
that vary per send (delay, queue, FIFO group, dedup id) live in
:class:`~cloudq.producer.SendOptions`, so ``task.with_options(...)`` is a cheap view, not a copy.
The :class:`Registry` is the only place a task is looked up by name: an envelope can never name
arbitrary code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from cloudq.errors import ArgumentsError, ConfigurationError, TaskNotFound
from cloudq.producer import JobRef, SendOptions, Tracking

if TYPE_CHECKING:
    from cloudq.producer import Producer

__all__ = ["EventRoute", "JobRef", "Registry", "SendOptions", "Task"]

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A registered function. ``task(...)`` runs it now; ``task.delay(...)`` runs it on a worker."""

    def __init__(
        self,
        producer: Producer,
        fn: Callable[P, R],
        *,
        name: str,
        queue: str | None,
        max_retries: int | None,
        timeout: float | None,
        options: SendOptions | None = None,
        tracking: Tracking | None = None,
    ) -> None:
        if max_retries is not None and max_retries < 0:
            raise ConfigurationError(f"task {name!r}: max_retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"task {name!r}: timeout must be > 0 seconds")
        self.producer = producer
        self.fn = fn
        self.name = name
        self._queue = queue
        self._max_retries = max_retries
        self.timeout = timeout
        self.options = options or SendOptions()
        self.tracking = tracking or Tracking()
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._arity = _positional_arity(self.signature)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    @property
    def queue(self) -> str:
        return self.options.queue or self._queue or self.producer.settings.default_queue

    @property
    def track(self) -> bool:
        """False for ``@app.task(track=False)``: its jobs never touch the job store."""
        return self.tracking.track

    @property
    def max_retries(self) -> int:
        return self.producer.settings.max_retries if self._max_retries is None else self._max_retries

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def check(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise ArgumentsError unless the arguments fit the signature. Positional arguments alone, of a
        function with plain parameters, are counted (a worker checks every job: ``Signature.bind`` costs
        some 5 µs, 3% of a no-op job's whole CPU); anything else is bound."""
        arity = self._arity
        if arity is not None and not kwargs and arity[0] <= len(args) <= arity[1]:
            return
        self.bind(args, kwargs)

    def bind(self, args: Iterable[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        """Check arguments against the signature; producers fail fast, workers dead-letter."""
        try:
            return self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentsError(f"arguments do not fit task {self.name!r}{self.signature}: {exc}") from exc

    def with_options(
        self,
        *,
        delay: float | timedelta | None = None,
        queue: str | None = None,
        group_id: str | None = None,
        dedup_id: str | None = None,
        unique_key: str | None = None,
    ) -> Task[P, R]:
        """A view of this task that sends with other options (None keeps the current one); the options
        are spelled out so that a type checker catches a misspelt one, and the view keeps ``P, R``."""
        view: Task[P, R] = Task.__new__(Task)
        view.__dict__.update(self.__dict__)
        view.options = self.options.merge(delay=delay, queue=queue, group_id=group_id, dedup_id=dedup_id, unique_key=unique_key)
        return view

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        """Enqueue one job (boto3 on SQS); arguments are checked against the signature first."""
        self.check(args, kwargs)
        return self.producer.send(self.name, self.queue, [(tuple(args), dict(kwargs))], self.options, self.tracking)[0]

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        """Enqueue one job without blocking the event loop (aioboto3 on SQS)."""
        self.check(args, kwargs)
        return (await self.producer.asend(self.name, self.queue, [(tuple(args), dict(kwargs))], self.options, self.tracking))[0]

    def map(self, items: Iterable[Any]) -> list[JobRef]:
        """Enqueue one job per item, 10 per SendMessageBatch. An item is a tuple of args,
        a dict of kwargs, an ``(args, kwargs)`` pair, or a single argument."""
        return self.producer.send(self.name, self.queue, self._calls(items), self.options, self.tracking)

    async def amap(self, items: Iterable[Any]) -> list[JobRef]:
        return await self.producer.asend(self.name, self.queue, self._calls(items), self.options, self.tracking)

    def _calls(self, items: Iterable[Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        calls = [_as_call(item) for item in items]
        for args, kwargs in calls:
            self.check(args, kwargs)
        return calls


def _positional_arity(signature: inspect.Signature) -> tuple[int, int] | None:
    """(required, total) positional parameters of a signature made of plain ones only (no ``*args``,
    ``**kwargs`` or keyword-only), for :meth:`Task.check`'s count; None for any other."""
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = list(signature.parameters.values())
    if not all(p.kind in plain for p in parameters):
        return None
    return sum(1 for p in parameters if p.default is inspect.Parameter.empty), len(parameters)


def _as_call(item: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(item, dict):
        return (), dict(item)
    if isinstance(item, (tuple, list)):
        if len(item) == 2 and isinstance(item[0], (tuple, list)) and isinstance(item[1], dict):
            return tuple(item[0]), dict(item[1])
        return tuple(item), {}
    return (item,), {}


@dataclass(frozen=True, slots=True)
class EventRoute:
    """An EventBridge event (``source``, optionally ``detail-type``) that runs ``task`` when it invokes Lambda."""

    source: str
    detail_type: str | None
    task: str

    def matches(self, event: Mapping[str, Any]) -> bool:
        return event.get("source") == self.source and self.detail_type in (None, event.get("detail-type"))


class Registry(dict[str, Task[Any, Any]]):
    """Task name -> Task for one app, plus the EventBridge routes of ``app.on_event``."""

    def __init__(self, app_name: str) -> None:
        super().__init__()
        self.app_name = app_name
        self.routes: list[EventRoute] = []

    def lookup(self, name: str) -> Task[Any, Any]:
        """Tasks are looked up only here: an envelope can never name arbitrary code."""
        try:
            return self[name]
        except KeyError:
            raise TaskNotFound(f"no task named {name!r} is registered in app {self.app_name!r}") from None

    def routed(self, event: Mapping[str, Any]) -> list[str]:
        """Names of the tasks registered for ``event``, in registration order."""
        return [route.task for route in self.routes if route.matches(event)]

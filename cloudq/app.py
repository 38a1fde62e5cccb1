"""The App: settings, the task registry and the broker handle, in one object users import.

``App`` creates nothing on the network when built or imported, so modules that
define tasks are cheap to import in a web process, a worker, or a Lambda cold start.
The broker is created on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, overload

from cloudq.brokers import Broker, create_broker
from cloudq.errors import ConfigurationError, TaskNotFound
from cloudq.producer import Producer
from cloudq.settings_env import EnvSettings, load_settings
from cloudq.tasks import JobRef, SendOptions, Task

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from cloudq.runtimes.aws_lambda import LambdaHandler
    from cloudq.settings import Settings
    from cloudq.schedules.periodic import PeriodicSpec

__all__ = ["App"]

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """A named set of tasks plus how to reach their queues."""

    def __init__(self, name: str, *, settings: Settings | EnvSettings | None = None, broker: Broker | None = None) -> None:
        if not name:
            raise ConfigurationError("App needs a name")
        self.name = name
        # Without explicit settings, CLOUDQ_* is read without importing pydantic (see cloudq.settings_env).
        self.settings: Settings | EnvSettings = settings if settings is not None else load_settings()
        self.registry: dict[str, Task[Any, Any]] = {}
        self.periodic_tasks: dict[str, PeriodicSpec] = {}
        self._broker = broker
        self.broker_options: dict[str, Any] = {}  # keywords of create_broker for the broker built on first use
        self.producer = Producer(self)

    # -- registry ---------------------------------------------------------------------------
    @overload
    def task(self, fn: F, /) -> Task[Any, Any]: ...

    @overload
    def task(
        self, *, name: str | None = None, queue: str | None = None, max_retries: int | None = None, timeout: float | None = None
    ) -> Callable[[F], Task[Any, Any]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Register a function as a task; usable bare (``@app.task``) or with options."""

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if task_name in self.registry and self.registry[task_name].fn is not func:
                raise ConfigurationError(f"task name {task_name!r} is already registered to another function")
            task = Task(self, func, name=task_name, queue=queue, max_retries=max_retries, timeout=timeout)
            self.registry[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def periodic(
        self,
        schedule: str,
        *,
        name: str | None = None,
        queue: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        timezone: str | None = None,
    ) -> Callable[[F], Task[Any, Any]]:
        """Register a task that runs on an AWS schedule expression; see :mod:`cloudq.schedules.periodic`."""
        from cloudq.schedules.periodic import periodic

        return periodic(self, schedule, name=name, queue=queue, args=args, kwargs=kwargs, timezone=timezone)

    def get_task(self, name: str) -> Task[Any, Any]:
        """Tasks are looked up only here: an envelope can never name arbitrary code."""
        try:
            return self.registry[name]
        except KeyError:
            raise TaskNotFound(f"no task named {name!r} is registered in app {self.name!r}") from None

    def queues(self) -> list[str]:
        """Logical queues the registry uses (the default queue always included), sorted."""
        return sorted({self.settings.default_queue, *(t.queue for t in self.registry.values())})

    # -- producing by name ------------------------------------------------------------------
    def enqueue(self, task: str, /, *args: Any, **kwargs: Any) -> JobRef:
        """Enqueue by task name without importing the function (its queue if registered)."""
        return self.send_task(task, args, kwargs)

    async def aenqueue(self, task: str, /, *args: Any, **kwargs: Any) -> JobRef:
        return await self.asend_task(task, args, kwargs)

    def send_task(self, task: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> JobRef:
        """``enqueue`` with send options (delay, queue, group_id, dedup_id) spelled out."""
        queue, opts = self._route(task, args, kwargs or {}, options)
        return self.producer.send(task, queue, [(tuple(args), kwargs or {})], opts)[0]

    async def asend_task(self, task: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> JobRef:
        queue, opts = self._route(task, args, kwargs or {}, options)
        return (await self.producer.asend(task, queue, [(tuple(args), kwargs or {})], opts))[0]

    def _route(self, task: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> tuple[str, SendOptions]:
        registered = self.registry.get(task)
        if registered is not None:
            registered.bind(args, kwargs)
            return registered.queue, registered.options.merge(**options)
        return self.settings.default_queue, SendOptions().merge(**options)

    # -- broker -----------------------------------------------------------------------------
    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = create_broker(self.settings, **self.broker_options)
        return self._broker

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()

    async def aclose(self) -> None:
        if self._broker is not None:
            await self._broker.aclose()

    # -- AWS Lambda ---------------------------------------------------------------------------
    @cached_property
    def lambda_handler(self) -> LambdaHandler:
        """The Lambda handler (``handler = app.lambda_handler``), built once: warm invocations reuse its loop."""
        from cloudq.runtimes.aws_lambda import LambdaHandler

        return LambdaHandler(self)

    def on_event(self, source: str, detail_type: str | None = None, **task_options: Any) -> Callable[[F], Task[Any, Any]]:
        """Register a task for EventBridge events that invoke the Lambda directly; see :func:`cloudq.runtimes.aws_lambda.on_event`."""
        from cloudq.runtimes.aws_lambda import on_event

        return on_event(self, source, detail_type, **task_options)

    def __repr__(self) -> str:
        return f"<App {self.name} broker={self.settings.broker} tasks={len(self.registry)}>"

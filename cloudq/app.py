"""The App: the composition root users import: settings, registry, broker, middleware.

``App`` builds the parts and hands each what it needs: the :class:`~cloudq.producer.Producer`
(settings, broker, middleware), every :class:`~cloudq.tasks.Task` (its producer), the
:class:`~cloudq.consumer.Consumer` the runtimes drive (registry, naming, broker, retry policy,
middleware). Nothing below imports the App back. It creates nothing on the network when built or
imported, so modules that define tasks are cheap to import in a web process, a worker, or a Lambda
cold start; the broker is created on first use.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from cloudq.brokers import Broker, create_broker
from cloudq.errors import ConfigurationError
from cloudq.middleware import Middleware, MiddlewareChain
from cloudq.producer import JobRef, Producer, SendOptions, Tracking
from cloudq.settings_env import EnvSettings, load_settings
from cloudq.tasks import EventRoute, Registry, Task

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from cloudq.consumer import Consumer
    from cloudq.jobs.store import JobStore
    from cloudq.payloads import PayloadStore
    from cloudq.observability import Observability
    from cloudq.observability.metrics import Metrics
    from cloudq.runtimes.aws_lambda import LambdaHandler
    from cloudq.schedules.periodic import PeriodicSpec
    from cloudq.settings import Settings
    from cloudq.wire import Wire

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")


class TaskDecorator(Protocol):
    """What ``@app.task(...)``, ``@app.periodic(...)`` and ``@app.on_event(...)`` return: a decorator
    generic in the function it is given, so ``Task[P, R]`` keeps that function's signature and mypy or
    pyright check ``.delay``/``.adelay``/plain calls against it (a ``Callable[[F], Task[Any, Any]]``
    would forget it)."""

    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


def _tracking(task: str, track: bool, unique: bool, unique_key: Callable[..., str] | None) -> Tracking:
    if unique_key is not None and not callable(unique_key):
        raise ConfigurationError(f"task {task!r}: unique_key must be a function of the task's arguments returning a string")
    if unique_key is not None:
        key_fn = unique_key

        def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            key = key_fn(*args, **kwargs)
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"task {task!r}: unique_key returned {key!r}, not a non-empty string")
            return key

        return Tracking(track, rule)
    if unique:
        from cloudq.jobs.state import default_unique_key

        return Tracking(track, lambda args, kwargs: default_unique_key(args, kwargs))
    return Tracking(track)


class App:
    """A named set of tasks plus how to reach their queues."""

    def __init__(
        self,
        name: str,
        *,
        settings: Settings | EnvSettings | None = None,
        broker: Broker | None = None,
        middleware: Iterable[Middleware] = (),
        payload_store: PayloadStore | None = None,
    ) -> None:
        if not name:
            raise ConfigurationError("App needs a name")
        self.name = name
        self.registry = Registry(name)
        self.periodic_tasks: dict[str, PeriodicSpec] = {}
        self.middleware = MiddlewareChain(middleware)
        self._broker = broker
        self._lambda_handler: LambdaHandler | None = None
        # Without explicit settings, CLOUDQ_* is read without importing pydantic (see cloudq.settings_env).
        self._settings: Settings | EnvSettings = settings if settings is not None else load_settings()
        self._job_store: JobStore | None = None
        self._job_store_built = False
        self._payload_store = payload_store  # tests: a MemoryPayloadStore instead of S3
        self._wire: Wire | None = None
        self.producer = Producer(self._settings, lambda: self.broker, self.middleware, lambda: self.job_store, lambda: self.wire)
        self._consumer: Consumer | None = None
        self._observability: Observability | None = None
        self._observe()

    @property
    def settings(self) -> Settings | EnvSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings | EnvSettings) -> None:
        """New settings reach every part (tasks keep their producer); the broker is rebuilt on next use."""
        self._settings = self.producer.settings = settings
        self._consumer = None
        self._job_store, self._job_store_built = None, False
        self._wire = None
        self._observe()

    @property
    def wire(self) -> Wire:
        """Signing and S3 offloading of this app's messages (:mod:`cloudq.wire`), built on first use."""
        if self._wire is None:
            from cloudq.wire import Wire

            self._wire = Wire.from_settings(self._settings, store=self._payload_store)
        return self._wire

    @property
    def metrics(self) -> Metrics | None:
        """The app's metrics (``CLOUDQ_METRICS``), None when off; the worker adds its receive records here."""
        return self._observability.metrics if self._observability is not None else None

    def _observe(self) -> None:
        """Install metrics and tracing as the settings ask (see :mod:`cloudq.observability`), outermost.

        Checked without importing anything: with ``CLOUDQ_METRICS=none`` and no OpenTelemetry in the
        process (the default), nothing is installed and the job path is what it was.
        """
        if self._observability is not None:
            for middleware in self._observability.middleware:
                self.middleware.remove(middleware)
            self._observability.close()
            self._observability = None
        settings = self._settings
        tracing = getattr(settings, "tracing", "none")
        if getattr(settings, "metrics", "none") == "none" and (tracing == "none" or (tracing == "auto" and "opentelemetry.trace" not in sys.modules)):
            return
        from cloudq.observability import Observability

        observability = Observability(settings, self.name, self.registry.__contains__)
        if observability.empty:
            return
        self._observability = observability
        for middleware in reversed(self._observability.middleware):
            self.middleware.add(middleware, first=True)

    def use_broker(self, broker: Broker | None) -> None:
        """Replace the broker (None: build one from the settings on next use); the old one is not closed."""
        self._broker = broker

    @property
    def consumer(self) -> Consumer:
        """The consumer core the runtimes drive, built on first use (producers never load it)."""
        if self._consumer is None:
            self._consumer = self._build_consumer()
        return self._consumer

    def _build_consumer(self) -> Consumer:
        from cloudq.consumer import Consumer
        from cloudq.retry import RetryPolicy

        settings = self._settings
        return Consumer(
            registry=self.registry,
            naming=settings,
            broker=lambda: self.broker,
            policy=RetryPolicy(settings.retry_backoff_s, settings.retry_backoff_max_s),
            max_retries=settings.max_retries,
            default_queue=settings.default_queue,
            middleware=self.middleware,
            tracker=self._build_tracker(),
            wire=lambda: self.wire,
        )

    def _build_tracker(self) -> Any:
        store = self.job_store
        if store is None:
            return None
        from cloudq.jobs.tracker import JobTracker

        settings = self._settings
        record_running = settings.job_track == "running"
        tracker = JobTracker(store, record_running=record_running, cancel_check_s=settings.job_cancel_check_s)
        tracker.ledger = self._attach_ledger(store, record_running=record_running)
        return tracker

    def _attach_ledger(self, store: JobStore, *, record_running: bool) -> bool:
        """The local broker writes the local store's claims and end states in its own transactions (one
        SQLite file: see cloudq.jobs.sqlite.BrokerLedger); not for an app that signs, whose bodies must be
        verified before anything trusts the job id in them."""
        from cloudq.brokers.local import LocalBroker

        broker = self.broker
        if store.kind != "local" or not isinstance(broker, LocalBroker) or self.wire.signer is not None:
            return False
        registry = self.registry

        def tracked(name: str) -> bool:
            task = registry.get(name)
            return task is not None and task.track

        ledger = store.ledger(broker.path, tracked, record_running=record_running)  # type: ignore[attr-defined]
        broker.attach_ledger(ledger)
        return ledger is not None

    # -- job state --------------------------------------------------------------------------
    @property
    def job_store(self) -> JobStore | None:
        """The job store of ``CLOUDQ_JOB_STORE`` (None for ``none``), built on first use."""
        if not self._job_store_built:
            from cloudq.jobs import create_job_store

            self._job_store, self._job_store_built = create_job_store(self._settings), True
        return self._job_store

    def use_job_store(self, store: JobStore | None) -> None:
        """Replace the job store (tests, or a store built by hand); the consumer picks it up on next build."""
        self._job_store, self._job_store_built = store, True
        self._consumer = None

    def job(self, job_id: str) -> JobRef:
        """A job by id, from any process (a web request polling a job): ``app.job(id).status()``."""
        if not job_id or not isinstance(job_id, str):
            raise ConfigurationError(f"a job id must be a non-empty string, got {job_id!r}")
        return JobRef(job_id, "", "", "", lambda: self.job_store)

    def add_middleware(self, middleware: Middleware) -> None:
        """Install one more middleware, innermost (after those given to the constructor)."""
        self.middleware.add(middleware)

    # -- registry ---------------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        track: bool = True,
        unique: bool = False,
        unique_key: Callable[..., str] | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        track: bool = True,
        unique: bool = False,
        unique_key: Callable[..., str] | None = None,
    ) -> Any:
        """Register a function as a task; usable bare (``@app.task``) or with options.

        With a job store: ``track=False`` keeps its jobs out of it; ``unique=True`` (same arguments, same
        job) or ``unique_key=fn(*args, **kwargs) -> str`` makes an enqueue return the queued, retrying or
        running job with the same key instead of sending another."""

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if task_name in self.registry and self.registry[task_name].fn is not func:
                raise ConfigurationError(f"task name {task_name!r} is already registered to another function")
            tracking = _tracking(task_name, track, unique, unique_key)
            task = Task(self.producer, func, name=task_name, queue=queue, max_retries=max_retries, timeout=timeout, tracking=tracking)
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
    ) -> TaskDecorator:
        """Register a task that runs on an AWS schedule expression; see :mod:`cloudq.schedules.periodic`."""
        from cloudq.schedules.periodic import periodic

        return periodic(self.task, self.periodic_tasks, schedule, name=name, queue=queue, args=args, kwargs=kwargs, timezone=timezone)

    def get_task(self, name: str) -> Task[Any, Any]:
        """Tasks are looked up only in the registry: an envelope can never name arbitrary code."""
        return self.registry.lookup(name)

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
        queue, opts, tracking = self._route(task, args, kwargs or {}, options)
        return self.producer.send(task, queue, [(tuple(args), kwargs or {})], opts, tracking)[0]

    async def asend_task(self, task: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> JobRef:
        queue, opts, tracking = self._route(task, args, kwargs or {}, options)
        return (await self.producer.asend(task, queue, [(tuple(args), kwargs or {})], opts, tracking))[0]

    def _route(
        self, task: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> tuple[str, SendOptions, Tracking]:
        registered = self.registry.get(task)
        if registered is not None:
            registered.check(args, kwargs)
            return registered.queue, registered.options.merge(**options), registered.tracking
        return self.settings.default_queue, SendOptions().merge(**options), Tracking()

    # -- broker -----------------------------------------------------------------------------
    @property
    def broker(self) -> Broker:
        if self._broker is None:
            # Inside the Lambda runtime nothing long-polls: boto3 on daemon threads spares a cold start
            # the aioboto3/aiohttp import. Elsewhere (a worker) "auto": threads while aioboto3 loads
            # in the background, then aioboto3, whose calls cost less client CPU per job (bench, cli
            # section). See cloudq.brokers.sqs.SqsBroker's async_io.
            async_io = "threads" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "auto"
            self._broker = create_broker(self.settings, sqs_async_io=async_io)
        return self._broker

    def close(self) -> None:
        if self._observability is not None:
            self._observability.close()  # what EMF still holds is written; /metrics stops serving
        if self._broker is not None:
            self._broker.close()
        if self._job_store is not None:
            self._job_store.close()

    async def aclose(self) -> None:
        if self._observability is not None:
            self._observability.close()
        if self._broker is not None:
            await self._broker.aclose()

    # -- AWS Lambda ---------------------------------------------------------------------------
    @property
    def lambda_handler(self) -> LambdaHandler:
        """The Lambda handler (``handler = app.lambda_handler``), built once: warm invocations reuse its
        loop. After ``close()`` the next access builds a new one."""
        if self._lambda_handler is None or self._lambda_handler.closed:
            from cloudq.runtimes.aws_lambda import LambdaHandler

            self._lambda_handler = LambdaHandler(self)
        return self._lambda_handler

    def on_event(self, source: str, detail_type: str | None = None, **task_options: Any) -> TaskDecorator:
        """Register a task for EventBridge events with this ``source`` (and ``detail-type``, if given)
        that invoke the Lambda function directly (see :mod:`cloudq.runtimes.aws_lambda`).

        The function is an ordinary task (it can be enqueued too) called with one argument, the event
        dict. Use ``source="aws.events", detail_type="Scheduled Event"`` for a scheduled rule without Input.
        """

        def register(fn: Callable[P, R]) -> Task[P, R]:
            try:
                inspect.signature(fn).bind({})
            except TypeError as exc:
                raise ConfigurationError(f"event task {fn.__qualname__!r} must take exactly one argument, the event: {exc}") from exc
            task = self.task(**task_options)(fn)
            self.registry.routes.append(EventRoute(source, detail_type, task.name))
            return task

        return register

    def __repr__(self) -> str:
        return f"<App {self.name} broker={self.settings.broker} tasks={len(self.registry)}>"

"""``@app.periodic``: a task plus the schedule it runs on, validated when the module is imported.

A periodic task is an ordinary :class:`~cloudq.tasks.Task` (``.delay()`` still works); what the decorator adds
is a :class:`PeriodicSpec` in ``app.periodic_tasks``. Everything that can be wrong with a schedule (the
expression, the time zone, arguments that do not fit the function or cannot travel as JSON) is checked at
decoration time, so a bad schedule fails on import, in a developer's test run, rather than at deploy or at
3 a.m. when it first fires.

The spec knows how to build the job a firing enqueues (:meth:`PeriodicSpec.envelope_body`): a constant JSON
body with no ``id`` and no ``enqueued_at``, so that the body deployed to EventBridge never changes between
syncs; the worker names the job after the SQS message id and stamps the time it decodes it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloudq.envelope import Envelope
from cloudq.errors import ConfigurationError, EnvelopeError, ScheduleError
from cloudq.schedules.expressions import Schedule, parse_schedule

if TYPE_CHECKING:
    from cloudq.signing import Signer
    from cloudq.tasks import Task

    RegisterTask = Callable[..., Callable[[Callable[..., Any]], Task[Any, Any]]]

__all__ = ["SCHEDULED_HEADER", "PeriodicSpec", "periodic"]

# The header a scheduled job carries; its value names the rule or schedule that fired it.
SCHEDULED_HEADER = "cloudq-scheduled"


@dataclass(frozen=True)
class PeriodicSpec:
    """A periodic task's schedule and the constant arguments each firing passes it."""

    task: Task[Any, Any]
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timezone: str | None = None

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def queue(self) -> str:
        """The task's logical queue, resolved late: settings may change after decoration (tests do this)."""
        return self.task.queue

    @property
    def tz(self) -> str:
        """The IANA zone cron expressions are evaluated in; UTC unless the task said otherwise."""
        return self.timezone or "UTC"

    def envelope(self, scheduled_by: str) -> Envelope:
        """The job one firing enqueues, marked with the rule or schedule that fired it."""
        return Envelope(self.name, tuple(self.args), dict(self.kwargs), headers={SCHEDULED_HEADER: scheduled_by})

    def envelope_body(self, scheduled_by: str, signer: Signer | None = None) -> str:
        """The constant JSON body deployed as a target's Input: no id, no enqueued_at, so no churn.

        With the app's ``signer`` (``CLOUDQ_SIGNING_KEYS``) it is signed at sync time, so scheduled
        jobs pass the consumers' verification (the signature is constant too)."""
        data = self.envelope(scheduled_by).to_dict()
        for volatile in ("id", "enqueued_at", "eta"):
            data.pop(volatile)
        if signer is not None:
            data = signer.sign_dict(data)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def periodic(
    register_task: RegisterTask,
    periodic_tasks: dict[str, PeriodicSpec],
    schedule: str,
    *,
    name: str | None = None,
    queue: str | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    timezone: str | None = None,
) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
    """The decorator behind :meth:`cloudq.App.periodic`: registers the task through ``register_task``
    (the app's ``task``), then its spec in ``periodic_tasks``."""

    def register(fn: Callable[..., Any]) -> Task[Any, Any]:
        task_name = name or f"{fn.__module__}.{fn.__qualname__}"
        parsed = parse_schedule(schedule, task=task_name)
        _check_timezone(task_name, timezone)
        spec_args, spec_kwargs = tuple(args), dict(kwargs or {})
        _check_arguments(task_name, fn, spec_args, spec_kwargs)
        existing = periodic_tasks.get(task_name)
        if existing is not None and _key(existing) != (parsed, spec_args, spec_kwargs, timezone):
            raise ConfigurationError(f"task {task_name!r} is already periodic with another schedule or arguments")
        task = register_task(name=task_name, queue=queue)(fn)
        periodic_tasks[task_name] = PeriodicSpec(task, parsed, spec_args, spec_kwargs, timezone)
        return task

    return register


def _check_timezone(task: str, timezone: str | None) -> None:
    """Reject a zone AWS would not know, at import rather than at deploy."""
    if timezone is None or timezone.upper() == "UTC":
        return
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"task {task!r}: unknown time zone {timezone!r}; expected an IANA name such as 'Europe/Berlin'") from None


def _check_arguments(task: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The fixed arguments must fit the signature and survive JSON, or every firing would be poison.

    Checked before the task is registered, so a failed decoration leaves no half-registered task behind.
    """
    signature = inspect.signature(fn)
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"periodic task {task!r}: args/kwargs do not fit {fn.__qualname__}{signature}: {exc}") from None
    try:
        Envelope(task, args, kwargs).encode()
    except EnvelopeError as exc:
        raise ConfigurationError(f"periodic task {task!r}: {exc}") from None


def _key(spec: PeriodicSpec) -> tuple[Schedule, tuple[Any, ...], dict[str, Any], str | None]:
    return spec.schedule, tuple(spec.args), dict(spec.kwargs), spec.timezone

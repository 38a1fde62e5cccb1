"""The one table of cloudq's settings: each field's name, type, default, bounds, choices and description.

Two readers of ``CLOUDQ_*`` are derived from it and declare no field of their own:

* :class:`cloudq.Settings` (:mod:`cloudq.settings`), the pydantic-settings model users construct;
* :class:`cloudq.settings_env.EnvSettings`, which reads the environment without importing pydantic
  (about 85 ms of a Lambda cold start) and asks pydantic only about values that are not plain.

The table is :class:`SettingsFields`, a frozen dataclass written like a pydantic model, so that type
checkers see every field with its type; :data:`SETTINGS` is the same table as rows (:class:`Setting`)
for code that needs the rules: the two readers, the CLI checking ``-c`` against
``field_bounds("concurrency")``, and the one-line rejection messages both readers give.

Pure and imported on the cold path: the standard library only. Annotations are real objects here (no
``from __future__ import annotations``): they are the table's types.
"""

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

__all__ = ["ENV_PREFIX", "SETTINGS", "Setting", "SettingsFields", "field_bounds", "rejection"]

ENV_PREFIX = "CLOUDQ_"
"""Each field ``name`` is the environment variable ``CLOUDQ_<NAME>`` (any case, as pydantic-settings reads it)."""

Kind = Literal["str", "int", "float", "bool", "map"]
_KEY = "cloudq.setting"


class Setting(NamedTuple):
    """One row of the table: what a field accepts, and how to say what it accepts.

    A NamedTuple, not a dataclass: building the class costs less on the cold path.
    """

    name: str
    type: Any
    """The annotation: ``str``, ``str | None``, ``int``, ``float``, ``dict[str, str]`` or a ``Literal`` of choices."""
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    description: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    non_empty: bool = False
    fold_case: bool = False
    """Choices match in any case and are stored as declared (``debug`` -> ``DEBUG``)."""
    secret: bool = False
    """Never shown: left out of reprs (a secret such as the signing keys)."""

    @property
    def env_name(self) -> str:
        return f"{ENV_PREFIX}{self.name.upper()}"

    @property
    def choices(self) -> tuple[str, ...]:
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else ()

    @property
    def kind(self) -> Kind:
        """How a raw environment string becomes a value."""
        if self.type is int or self.type is float:
            return "int" if self.type is int else "float"
        if self.type is bool:
            return "bool"
        return "map" if typing.get_origin(self.type) is dict else "str"

    def default_value(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default

    def normalize(self, value: Any) -> Any:
        """``value`` with a case-folded choice spelled as declared; anything else unchanged."""
        if self.fold_case and isinstance(value, str) and value.upper() in self.choices:
            return value.upper()
        return value

    def violation(self, value: Any) -> str | None:
        """The rule that ``value`` (already of the field's type, normalized) breaks, or None if it is valid.

        The same checks pydantic makes from the constraints :mod:`cloudq.settings` derives from this row.
        """
        broken = (
            (self.choices and value not in self.choices)
            or (self.non_empty and not value)
            or (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
        )
        return self.rule() if broken else None

    def rule(self, *, type_ok: bool = True) -> str:
        """What a valid value is, e.g. ``must be between 1 and 1000``; ``type_ok=False`` names the type too."""
        if self.choices:
            return f"must be one of {', '.join(self.choices)}" + (" (any case)" if self.fold_case else "")
        if self.kind == "map":
            return 'must map queue names to URL strings, as JSON in the environment: {"billing": "<queue URL>"}'
        if self.non_empty:
            return "must be a non-empty string" if not type_ok else "must not be empty"
        bounds = self._bounds()
        if type_ok and bounds:
            return f"must be {bounds}"
        noun = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(self.kind, "a string")
        return " ".join(("must be", noun, bounds)).rstrip()

    def _bounds(self) -> str:
        low = f"at least {self.ge}" if self.ge is not None else f"greater than {self.gt}" if self.gt is not None else ""
        if self.le is None:
            return low
        if self.ge is not None:
            return f"between {self.ge} and {self.le}"
        return f"{low} and at most {self.le}" if low else f"at most {self.le}"


def _setting(
    default: Any = None,
    description: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    non_empty: bool = False,
    fold_case: bool = False,
    secret: bool = False,
) -> Any:
    """One field of :class:`SettingsFields`: a dataclass field whose metadata holds the rules of its row."""
    rules = {"description": description, "ge": ge, "gt": gt, "le": le, "non_empty": non_empty, "fold_case": fold_case, "secret": secret}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_KEY: rules})
    return dataclasses.field(default=default, repr=not secret, metadata={_KEY: rules})


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@dataclass(frozen=True, kw_only=True)
class SettingsFields:
    """All of cloudq's knobs; each field is ``CLOUDQ_<FIELD>`` in the environment. One line per field."""

    broker: Literal["local", "sqs", "memory"] = _setting(
        "local", "local (SQLite file, the default), sqs (AWS or LocalStack), memory (tests)"
    )
    endpoint_url: str | None = _setting(None, "SQS endpoint, e.g. http://127.0.0.1:4566 for LocalStack")
    region: str | None = _setting(None, "AWS region; falls back to AWS_REGION / AWS_DEFAULT_REGION")
    queue_prefix: str = _setting("", "prepended to every logical queue name, e.g. 'shop-prod-'")
    default_queue: str = _setting("default", "queue of tasks that name none", non_empty=True)
    queue_urls: dict[str, str] = _setting(factory=dict, description="logical queue name -> queue URL, to skip GetQueueUrl")
    local_path: str = _setting(".cloudq/broker.db", "SQLite file of the local broker")

    visibility_timeout_s: int = _setting(30, "used when receiving messages", ge=0, le=43_200)
    wait_time_s: int = _setting(20, "long-poll wait per ReceiveMessage", ge=0, le=20)
    concurrency: int = _setting(10, "jobs run at once per worker process", ge=1, le=1000)
    max_retries: int = _setting(3, "default retries per task before dead-lettering", ge=0)
    retry_backoff_s: float = _setting(2.0, "first retry delay; doubles each attempt, with jitter", gt=0)
    retry_backoff_max_s: float = _setting(900.0, "cap of the retry delay", gt=0, le=43_200)
    shutdown_grace_s: float = _setting(30.0, "how long SIGTERM waits for running jobs", ge=0)
    delete_flush_s: float = _setting(0.05, "how long a finished job's delete may wait to batch", ge=0)
    log_format: Literal["auto", "json", "console"] = _setting("auto", "json, console, or auto (JSON unless a terminal)")
    log_level: LogLevel = _setting("INFO", "the lowest level logged", fold_case=True)
    heartbeat_path: str | None = _setting(None, "file the worker touches while healthy")
    job_store: Literal["none", "local", "dynamodb", "memory"] | None = _setting(
        None, "where job state lives: none, local (the local broker's SQLite file), dynamodb, memory; unset: local with the local broker, else none"
    )
    job_table: str | None = _setting(None, "DynamoDB table of job state; unset: <queue_prefix>cloudq-jobs")
    job_ttl_s: int = _setting(604_800, "how long a job's state is kept after its last change (7 days)", ge=60)
    job_store_endpoint_url: str | None = _setting(None, "DynamoDB endpoint when it is not SQS's (unset: endpoint_url)")
    job_track: Literal["running", "final"] = _setting(
        "running", "running: record running state (3 writes per job); final: only queued and final (2 writes, 1 read)"
    )
    job_cancel_check_s: float = _setting(5.0, "how often running jobs are checked for a cancel request", gt=0)
    scheduler_role_arn: str | None = _setting(
        None, "IAM role EventBridge Scheduler sends to SQS as (`cloudq schedules sync --engine scheduler`)"
    )
    payload_bucket: str | None = _setting(None, "S3 bucket for bodies over the threshold (AWS extended client format); unset: no offloading")
    payload_prefix: str = _setting("cloudq/", "key prefix of offloaded bodies in the payload bucket")
    payload_threshold_bytes: int = _setting(262_144, "bodies larger than this (body plus attributes, as SQS counts) go to S3", ge=0, le=1_048_576)
    signing_keys: str | None = _setting(None, "HMAC secrets, comma-separated: the first signs, all verify (rotation)", secret=True)
    accept_unsigned: bool = _setting(False, "with signing keys set, run unsigned jobs too (a migration; logged)")
    metrics: Literal["none", "emf", "prometheus"] = _setting(
        "none", "none, emf (CloudWatch Embedded Metric Format on stdout) or prometheus (`cloudq worker --metrics-port`)"
    )
    metrics_namespace: str = _setting("cloudq", "CloudWatch namespace of the EMF metrics (prefix of the Prometheus names)", non_empty=True)
    metrics_interval_s: float = _setting(60.0, "how often a worker flushes its EMF metrics (and at exit)", gt=0)
    tracing: Literal["auto", "otel", "none"] = _setting(
        "auto", "OpenTelemetry spans: auto (when a tracer provider is set before the App is built), otel, none"
    )


def _rows() -> Mapping[str, Setting]:
    rows = {}
    for f in dataclasses.fields(SettingsFields):
        factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
        default = None if f.default is dataclasses.MISSING else f.default
        rows[f.name] = Setting(f.name, f.type, default, factory, **f.metadata[_KEY])
    return MappingProxyType(rows)


SETTINGS: Mapping[str, Setting] = _rows()
"""Field name -> its row, in declaration order."""


def field_bounds(name: str) -> tuple[float | None, float | None]:
    """``(lowest, highest)`` valid value of a numeric setting, None where unbounded: ``(1, 1000)`` for concurrency.

    The lowest is exclusive when the field declares ``gt`` (``SETTINGS[name].gt``): the backoffs must be
    above 0. Raises KeyError for a name that is not a setting.
    """
    row = SETTINGS[name]
    return (row.ge if row.ge is not None else row.gt, row.le)


def rejection(source: str, value: Any, rule: str) -> str:
    """The one line both readers give for a rejected value: ``CLOUDQ_CONCURRENCY='5000': must be between 1 and 1000``."""
    return f"{source}={value!r}: {rule}"

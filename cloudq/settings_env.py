"""Settings read from ``CLOUDQ_*`` without importing pydantic: the cold-start path.

:class:`cloudq.Settings` (pydantic-settings) is the settings model users construct, and the one
source of the rules. But importing pydantic and building that model costs about 85 ms, more than
the whole cold-start budget of a Lambda function (issue 4: 50 ms over ``import boto3``), and an
app built with ``cloudq.App("shop")`` in a Lambda function, a worker container or a
``cloudq health`` check reads its settings from the environment only.

:class:`EnvSettings` reads the same variables by the same names, case-insensitively as
pydantic-settings does, with the same defaults and bounds (``tests/unit/test_settings_env.py``
derives them from :class:`cloudq.Settings` and compares). It parses only plain values itself
(digits, decimals, exact choices, a JSON object of strings); anything else, including every
value out of bounds, is handed to :class:`cloudq.Settings`, so odd input gets pydantic's own
judgement, never a second opinion: its value, or its error message inside a
:class:`cloudq.ConfigurationError` (the CLI prints it as a one-line error, exit 2).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import Field, dataclass, field, fields
from typing import Any

from cloudq.errors import ConfigurationError
from cloudq.naming import QueueNaming

__all__ = ["EnvSettings", "load_settings"]

ENV_PREFIX = "cloudq_"
_INT = re.compile(r"\d+\Z")
_FLOAT = re.compile(r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")
_REFUSED = object()


def _bounds(*, ge: float | None = None, gt: float | None = None, le: float | None = None) -> dict[str, float]:
    return {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}


@dataclass(frozen=True, kw_only=True)
class EnvSettings(QueueNaming):
    """The fields of :class:`cloudq.Settings`, with the same defaults; bounds and choices in field metadata."""

    broker: str = field(default="local", metadata={"choices": ("local", "sqs", "memory")})
    endpoint_url: str | None = None
    region: str | None = None
    queue_prefix: str = ""
    default_queue: str = field(default="default", metadata={"non_empty": True})
    queue_urls: dict[str, str] = field(default_factory=dict)
    local_path: str = ".cloudq/broker.db"
    visibility_timeout_s: int = field(default=30, metadata=_bounds(ge=0, le=43_200))
    wait_time_s: int = field(default=20, metadata=_bounds(ge=0, le=20))
    concurrency: int = field(default=10, metadata=_bounds(ge=1, le=1000))
    max_retries: int = field(default=3, metadata=_bounds(ge=0))
    retry_backoff_s: float = field(default=2.0, metadata=_bounds(gt=0))
    retry_backoff_max_s: float = field(default=900.0, metadata=_bounds(gt=0, le=43_200))
    shutdown_grace_s: float = field(default=30.0, metadata=_bounds(ge=0))
    delete_flush_s: float = field(default=0.05, metadata=_bounds(ge=0))
    log_format: str = field(default="auto", metadata={"choices": ("auto", "json", "console")})
    log_level: str = "INFO"
    heartbeat_path: str | None = None
    scheduler_role_arn: str | None = None

    @classmethod
    def from_environ(cls) -> EnvSettings:
        """Read ``CLOUDQ_*`` (any case); values this reader does not take go through :class:`cloudq.Settings`."""
        found = {key.lower()[len(ENV_PREFIX) :]: value for key, value in os.environ.items() if key.lower().startswith(ENV_PREFIX)}
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = found.get(spec.name)
            if raw is None:
                continue
            value = _parse(spec, raw)
            if value is _REFUSED:  # pydantic judges: it raises its own error, or its values are used
                return cls._through_pydantic()
            values[spec.name] = value
        return cls(**values)

    @classmethod
    def _through_pydantic(cls) -> EnvSettings:
        from pydantic import ValidationError
        from pydantic_settings import SettingsError

        from cloudq.settings import Settings

        try:
            return cls(**Settings().model_dump())
        except (ValidationError, SettingsError) as exc:
            cause = f"{exc}: {exc.__cause__}" if isinstance(exc, SettingsError) and exc.__cause__ else str(exc)
            raise ConfigurationError(f"invalid CLOUDQ_* environment variable: {cause}") from exc


def _parse(spec: Field[Any], raw: str) -> Any:
    """``raw`` as the field's type, or ``_REFUSED`` when pydantic should judge it."""
    kind = str(spec.type)
    meta = spec.metadata
    value: Any
    if kind == "int":
        value = int(raw) if _INT.match(raw) else _REFUSED
    elif kind == "float":
        value = float(raw) if _FLOAT.match(raw) else _REFUSED
    elif kind == "dict[str, str]":
        value = _json_map(raw)
    else:
        value = raw
    if value is _REFUSED:
        return value
    if "choices" in meta and value not in meta["choices"]:
        return _REFUSED
    if meta.get("non_empty") and not value:
        return _REFUSED
    if ("ge" in meta and value < meta["ge"]) or ("gt" in meta and value <= meta["gt"]) or ("le" in meta and value > meta["le"]):
        return _REFUSED
    return value


def _json_map(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return _REFUSED
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return _REFUSED


def load_settings() -> EnvSettings:
    """The settings of an app built without explicit ones: ``CLOUDQ_*`` from the environment."""
    return EnvSettings.from_environ()

"""Settings read from ``CLOUDQ_*`` without importing pydantic: the cold-start path.

:class:`cloudq.Settings` (pydantic-settings) is the settings model users construct. But importing
pydantic and building that model costs about 85 ms, more than the whole cold-start budget of a Lambda
function (issue 4: 50 ms over ``import boto3``), and an app built with ``cloudq.App("shop")`` in a
Lambda function, a worker container or a ``cloudq health`` check reads its settings from the
environment only.

:class:`EnvSettings` declares no field: it is the table :class:`cloudq.settings_fields.SettingsFields`
plus the queue naming, so it has the fields, defaults and rules :class:`cloudq.Settings` is built from.
It reads the same variables, case-insensitively as pydantic-settings does, but parses only plain
values itself (digits, decimals, a choice, a JSON object of strings) and checks them against the
table's rules, raising the one-line :class:`cloudq.ConfigurationError` that :class:`cloudq.Settings`
raises for the same value. Anything else is handed to :class:`cloudq.Settings`, so odd input
(``" 25 "``, ``"+4"``, ``"1_0"``) gets pydantic's own judgement, never a second opinion.

Import order, downwards only: this module -> :mod:`cloudq.settings` (only when a value is odd) ->
:mod:`cloudq.settings_fields` and :mod:`cloudq.naming`; nothing below imports this module back.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from cloudq.errors import ConfigurationError
from cloudq.naming import QueueNaming
from cloudq.settings_fields import ENV_PREFIX, SETTINGS, Setting, SettingsFields, rejection

__all__ = ["EnvSettings", "load_settings"]

# A pattern, not compiled at import: re compiles (and caches) it only if a float variable is set.
_FLOAT = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\Z"
_ODD = object()  # a value only pydantic can judge
_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


class EnvSettings(QueueNaming, SettingsFields):
    """The fields of :class:`cloudq.Settings`, read from the environment without pydantic.

    Not decorated again: the frozen dataclass :class:`SettingsFields` gives it its keyword-only
    ``__init__``, equality, repr and immutability, and a second ``@dataclass`` would cost the cold path
    about as much as the first one did.
    """

    @classmethod
    def from_environ(cls) -> EnvSettings:
        """Read ``CLOUDQ_*`` (any case); if one value is not plain, all of them go through :class:`cloudq.Settings`."""
        prefix = ENV_PREFIX.lower()
        found = {key.lower()[len(prefix) :]: (key, raw) for key, raw in os.environ.items() if key.lower().startswith(prefix)}
        values: dict[str, Any] = {}
        rejected: list[str] = []
        for name, row in SETTINGS.items():
            if name not in found:
                continue
            key, raw = found[name]
            value = _parse(row, raw)
            if value is _ODD:  # pydantic judges: its values are used, or its error raised (as one line)
                return cls._through_pydantic()
            problem = row.violation(value)
            if problem is not None:
                rejected.append(rejection(key, raw, problem))
            values[name] = value
        if rejected:
            raise ConfigurationError("; ".join(rejected))
        return cls(**values)

    @classmethod
    def _through_pydantic(cls) -> EnvSettings:
        from cloudq.settings import Settings  # the ~85 ms the plain path saves; Settings raises ConfigurationError

        return cls(**Settings().model_dump())


def _parse(row: Setting, raw: str) -> Any:
    """``raw`` as the field's type, or ``_ODD`` when it is not plain and pydantic should judge it."""
    if row.kind == "int":
        return int(raw) if raw.isascii() and raw.isdigit() else _ODD
    if row.kind == "float":
        return float(raw) if re.match(_FLOAT, raw) else _ODD
    if row.kind == "bool":
        return _BOOLS.get(raw.lower(), _ODD)
    if row.kind == "map":
        return _json_map(raw)
    return row.normalize(raw)


def _json_map(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return _ODD
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return _ODD


def load_settings() -> EnvSettings:
    """The settings of an app built without explicit ones: ``CLOUDQ_*`` from the environment."""
    return EnvSettings.from_environ()

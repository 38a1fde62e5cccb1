"""cloudq settings, read from ``CLOUDQ_*`` environment variables (pydantic-settings).

One object carries what producers, workers and the CLI need, so a container is
configured by its environment alone (12-factor), and tests pass ``Settings(...)``.

No field is declared here: :class:`Settings` is built from the table in :mod:`cloudq.settings_fields`,
which the pydantic-free reader (:mod:`cloudq.settings_env`) is derived from too, so the two cannot
drift apart. A rejected value raises :class:`cloudq.ConfigurationError` with one line per value that
names where it came from (``CLOUDQ_CONCURRENCY='5000'`` or ``Settings(concurrency=5000)``) and the
table's rule (``must be between 1 and 1000``), the line the lean reader gives for the same value;
pydantic's error stays reachable as ``__cause__``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from cloudq.errors import ConfigurationError
from cloudq.naming import QueueNaming
from cloudq.settings_fields import ENV_PREFIX, SETTINGS, Setting, SettingsFields, rejection

__all__ = ["Settings"]

# pydantic error types raised for a value of the right type that breaks a bound, a choice or non-emptiness;
# any other type means the value was not of the field's type at all.
_VALUE_ERRORS = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "literal_error", "string_too_short"}
)


class _SettingsModel(QueueNaming, BaseSettings):
    """What :class:`Settings` adds to its fields: where they are read from, and errors as ConfigurationError."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_explain(exc, values, type(self).__name__)) from exc
        except SettingsError as exc:  # pydantic-settings could not decode a variable (JSON) before validating
            raise ConfigurationError(_explain_decoding(exc)) from exc


def _field(row: Setting) -> tuple[Any, Any]:
    """The pydantic annotation and ``Field`` of one row: the same constraints the lean reader checks."""
    annotation = Annotated[row.type, BeforeValidator(row.normalize)] if row.fold_case else row.type
    constraints: dict[str, Any] = {"ge": row.ge, "gt": row.gt, "le": row.le, "min_length": 1 if row.non_empty else None, "repr": not row.secret}
    if row.default_factory is not None:
        return annotation, Field(default_factory=row.default_factory, description=row.description, **constraints)
    return annotation, Field(default=row.default, description=row.description, **constraints)


_DOC = """All of cloudq's knobs; each field is ``CLOUDQ_<FIELD>`` in the environment.

The fields, their defaults and rules are :class:`cloudq.settings_fields.SettingsFields`. An app built
without settings reads the same variables through :class:`cloudq.settings_env.EnvSettings`, which
skips importing pydantic (cold starts) and defers to this model for anything but plain values.
"""

if TYPE_CHECKING:

    # What type checkers see: the table's fields and types. mypy objects that the (non-frozen) pydantic
    # model inherits a frozen dataclass; the class that runs inherits only the fields, as pydantic fields.
    class Settings(QueueNaming, SettingsFields, BaseSettings):  # type: ignore[misc]
        def __init__(self, **values: Any) -> None: ...

else:
    Settings = create_model(
        "Settings",
        __base__=_SettingsModel,
        __module__=__name__,
        __doc__=_DOC,
        **{name: _field(row) for name, row in SETTINGS.items()},
    )


def _explain(exc: ValidationError, values: Mapping[str, Any], model: str) -> str:
    """pydantic's errors as one line: each names the keyword or variable, its value and the table's rule."""
    lines = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        row = SETTINGS.get(name)
        if row is None:  # extra="forbid": a keyword that is no setting
            lines.append(f"{model}({name}={error['input']!r}): not a setting; the settings are {', '.join(SETTINGS)}")
            continue
        rule = row.rule(type_ok=error["type"] in _VALUE_ERRORS)
        if name in values:
            lines.append(f"{model}({name}={values[name]!r}): {rule}")
        else:
            key, raw = _from_environ(row, error["input"])
            lines.append(rejection(key, raw, rule))
    return "; ".join(dict.fromkeys(lines))  # a map reports once, however many of its items are wrong


def _explain_decoding(exc: SettingsError) -> str:
    found = re.search(r'field "(\w+)"', str(exc))
    row = SETTINGS.get(found[1]) if found else None
    if row is None:
        return f"invalid {ENV_PREFIX}* environment variable: {exc}"
    return rejection(*_from_environ(row, None), row.rule(type_ok=False))


def _from_environ(row: Setting, parsed: Any) -> tuple[str, Any]:
    """The variable that holds ``row``'s value as the user spelled it, and its raw value."""
    for key, raw in os.environ.items():
        if key.upper() == row.env_name:
            return key, raw
    return row.env_name, parsed

"""cloudq.Settings and EnvSettings (the pydantic-free reader of CLOUDQ_*) are both the one table, and agree value by value."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import typing
from typing import Any

import annotated_types
import pydantic
import pydantic_settings
import pytest

import cloudq
from cloudq.settings_env import EnvSettings, load_settings
from cloudq.settings_fields import SETTINGS, SettingsFields

pytestmark = pytest.mark.unit


def table_spec() -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """name -> (type, default, constraints, choices and description) as the table declares them."""
    spec = {}
    for name, row in SETTINGS.items():
        meta = {k: getattr(row, k) for k in ("ge", "gt", "le") if getattr(row, k) is not None}
        if row.non_empty:
            meta["min_length"] = 1
        if row.choices:
            meta["choices"] = row.choices
        spec[name] = (row.type, row.default_value(), {**meta, "description": row.description})
    return spec


CONSTRAINTS = {"ge": annotated_types.Ge, "gt": annotated_types.Gt, "le": annotated_types.Le, "min_length": annotated_types.MinLen}


def pydantic_spec() -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """The same, read back from what pydantic made of cloudq.Settings."""
    spec = {}
    for name, info in cloudq.Settings.model_fields.items():
        meta: dict[str, Any] = {}
        for item in info.metadata:
            for bound, kind in CONSTRAINTS.items():
                if isinstance(item, kind):
                    meta[bound] = getattr(item, bound)
        if typing.get_origin(info.annotation) is typing.Literal:
            meta["choices"] = typing.get_args(info.annotation)
        default = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
        spec[name] = (info.annotation, default, {**meta, "description": info.description})
    return spec


def test_settings_is_built_from_the_table_with_its_types_defaults_bounds_choices_and_descriptions() -> None:
    assert pydantic_spec() == table_spec()


def test_envsettings_has_exactly_the_fields_and_defaults_of_the_table() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(EnvSettings)}
    assert fields == {name: row.type for name, row in SETTINGS.items()}
    assert dataclasses.asdict(EnvSettings()) == {name: row.default_value() for name, row in SETTINGS.items()}
    assert issubclass(EnvSettings, SettingsFields) and not vars(EnvSettings).get("__annotations__")


def test_settings_declares_no_validator_beyond_the_table() -> None:
    """Every rule is a row's constraint; case folding (log_level) is the one validator, taken from the row."""
    decorators = cloudq.Settings.__pydantic_decorators__
    assert not decorators.field_validators and not decorators.model_validators
    assert [name for name, row in SETTINGS.items() if row.fold_case] == ["log_level"]


def test_settings_reads_the_environment_as_cloudq_field() -> None:
    assert cloudq.Settings.model_config["env_prefix"] == "CLOUDQ_" and cloudq.Settings.model_config["extra"] == "forbid"
    assert {row.env_name for row in SETTINGS.values()} >= {"CLOUDQ_CONCURRENCY", "CLOUDQ_LOG_LEVEL", "CLOUDQ_QUEUE_URLS"}


# (variable, value): plain values EnvSettings parses itself, and odd ones it hands to pydantic.
CASES = [
    ("CLOUDQ_BROKER", "sqs"),
    ("CLOUDQ_BROKER", "SQS"),
    ("CLOUDQ_BROKER", "kafka"),
    ("cloudq_broker", "memory"),
    ("CLOUDQ_CONCURRENCY", "25"),
    ("CLOUDQ_CONCURRENCY", " 25 "),
    ("CLOUDQ_CONCURRENCY", "0"),
    ("CLOUDQ_CONCURRENCY", "1001"),
    ("CLOUDQ_CONCURRENCY", "5000"),
    ("CLOUDQ_CONCURRENCY", "-3"),
    ("CLOUDQ_CONCURRENCY", "2.0"),
    ("CLOUDQ_CONCURRENCY", "2.5"),
    ("CLOUDQ_CONCURRENCY", "ten"),
    ("CLOUDQ_CONCURRENCY", ""),
    ("CLOUDQ_CONCURRENCY", "٣"),
    ("CLOUDQ_WAIT_TIME_S", "20"),
    ("CLOUDQ_WAIT_TIME_S", "21"),
    ("CLOUDQ_MAX_RETRIES", "+4"),
    ("CLOUDQ_RETRY_BACKOFF_S", "0.5"),
    ("CLOUDQ_RETRY_BACKOFF_S", ".5"),
    ("CLOUDQ_RETRY_BACKOFF_S", "1e1"),
    ("CLOUDQ_RETRY_BACKOFF_S", "0"),
    ("CLOUDQ_RETRY_BACKOFF_S", "inf"),
    ("CLOUDQ_RETRY_BACKOFF_S", "nan"),
    ("CLOUDQ_RETRY_BACKOFF_MAX_S", "50000"),
    ("CLOUDQ_RETRY_BACKOFF_MAX_S", "1e400"),
    ("CLOUDQ_SHUTDOWN_GRACE_S", "1_0"),
    ("CLOUDQ_DELETE_FLUSH_S", "0"),
    ("CLOUDQ_QUEUE_URLS", '{"billing": "https://sqs.eu-west-1.amazonaws.com/1/billing"}'),
    ("CLOUDQ_QUEUE_URLS", '{"billing": 1}'),
    ("CLOUDQ_QUEUE_URLS", "billing=x"),
    ("CLOUDQ_QUEUE_URLS", "[]"),
    ("CLOUDQ_DEFAULT_QUEUE", ""),
    ("CLOUDQ_DEFAULT_QUEUE", "jobs"),
    ("CLOUDQ_ENDPOINT_URL", ""),
    ("CLOUDQ_ENDPOINT_URL", "http://127.0.0.1:4566"),
    ("CLOUDQ_LOG_FORMAT", "json"),
    ("CLOUDQ_LOG_FORMAT", "xml"),
    ("CLOUDQ_LOG_LEVEL", "debug"),
    ("CLOUDQ_LOG_LEVEL", "Warning"),
    ("CLOUDQ_LOG_LEVEL", "CRITICAL"),
    ("CLOUDQ_LOG_LEVEL", "LOUD"),
    ("CLOUDQ_LOG_LEVEL", "WARN"),
    ("CLOUDQ_LOG_LEVEL", ""),
    ("CLOUDQ_QUEUE_PREFIX", "shop-"),
    ("CLOUDQ_HEARTBEAT_PATH", "/tmp/hb"),
    ("CLOUDQ_NOT_A_SETTING", "x"),
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in [k for k in os.environ if k.lower().startswith("cloudq_")]:
        monkeypatch.delenv(key)
    return monkeypatch


@pytest.mark.parametrize(("name", "value"), CASES)
def test_envsettings_reads_what_settings_reads_and_refuses_what_it_refuses_with_the_same_line(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    try:
        expected: Any = cloudq.Settings().model_dump()
    except cloudq.ConfigurationError as exc:
        assert isinstance(exc.__cause__, (pydantic.ValidationError, pydantic_settings.SettingsError))
        with pytest.raises(cloudq.ConfigurationError) as raised:
            EnvSettings.from_environ()
        assert str(raised.value) == str(exc)
        assert str(exc).startswith(f"{name}={value!r}: must "), str(exc)
        return
    assert dataclasses.asdict(EnvSettings.from_environ()) == expected


def test_two_bad_variables_are_named_in_one_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLOUDQ_CONCURRENCY", "0")
    clean_env.setenv("CLOUDQ_WAIT_TIME_S", "30")
    expected = "CLOUDQ_WAIT_TIME_S='30': must be between 0 and 20; CLOUDQ_CONCURRENCY='0': must be between 1 and 1000"
    for read in (EnvSettings.from_environ, cloudq.Settings):
        with pytest.raises(cloudq.ConfigurationError) as raised:
            read()
        assert str(raised.value) == expected


def test_an_app_without_settings_reads_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLOUDQ_QUEUE_PREFIX", "shop-")
    clean_env.setenv("CLOUDQ_BROKER", "memory")
    clean_env.setenv("CLOUDQ_LOG_LEVEL", "warning")
    app = cloudq.App("shop")
    assert isinstance(app.settings, EnvSettings)
    assert app.settings.queue_name("billing") == "shop-billing"
    assert app.settings.dlq_name("orders.fifo") == "shop-orders-dlq.fifo"
    assert app.settings.log_level == "WARNING"
    assert load_settings() == app.settings


def test_a_bad_variable_fails_building_the_app_with_one_line_naming_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLOUDQ_CONCURRENCY", "5000")
    with pytest.raises(cloudq.ConfigurationError) as raised:
        cloudq.App("shop")
    assert str(raised.value) == "CLOUDQ_CONCURRENCY='5000': must be between 1 and 1000"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CLOUDQ_CONCURRENCY", "0", "CLOUDQ_CONCURRENCY='0': must be between 1 and 1000"),
        ("CLOUDQ_CONCURRENCY", "-1", "CLOUDQ_CONCURRENCY='-1': must be between 1 and 1000"),
        ("CLOUDQ_QUEUE_URLS", "x", "CLOUDQ_QUEUE_URLS='x': must map queue names to URL strings"),
        ("CLOUDQ_LOG_LEVEL", "LOUD", "CLOUDQ_LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)
def test_the_cli_reports_a_bad_variable_in_one_line_not_a_traceback(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, message: str
) -> None:
    from cloudq.cli import main

    clean_env.setenv(name, value)
    saved = sys.modules.pop("cloudq.examples.shop", None)  # imported again, under the bad variable
    try:
        assert main(["status", "cloudq.examples.shop:app"]) == 2
    finally:
        if saved is not None:
            sys.modules["cloudq.examples.shop"] = saved
    err = capsys.readouterr().err
    assert "Traceback" not in err and "pydantic" not in err and "http" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(re.escape(message), err), err

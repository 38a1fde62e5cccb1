"""EnvSettings (the pydantic-free reader of CLOUDQ_*) agrees with cloudq.Settings, field by field and value by value."""

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

pytestmark = pytest.mark.unit


def pydantic_spec() -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """name -> (type, default, constraints and choices) as cloudq.Settings declares them."""
    spec = {}
    for name, info in cloudq.Settings.model_fields.items():
        meta: dict[str, Any] = {}
        for item in info.metadata:
            for bound in ("ge", "gt", "le"):
                if isinstance(item, getattr(annotated_types, bound.capitalize())):
                    meta[bound] = getattr(item, bound)
        annotation = info.annotation
        if typing.get_origin(annotation) is typing.Literal:
            meta["choices"] = typing.get_args(annotation)
            annotation = str
        default = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
        spec[name] = (annotation, default, meta)
    return spec


def env_spec() -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    hints = typing.get_type_hints(EnvSettings)
    spec = {}
    for f in dataclasses.fields(EnvSettings):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        spec[f.name] = (hints[f.name], default, {k: v for k, v in f.metadata.items() if k != "non_empty"})
    return spec


def test_envsettings_declares_the_fields_defaults_bounds_and_choices_of_settings() -> None:
    assert env_spec() == pydantic_spec()


def test_only_non_empty_fields_have_validators_in_settings() -> None:
    """Settings' one field validator (non-empty default_queue) is the one non_empty mark in EnvSettings."""
    marked = {f.name for f in dataclasses.fields(EnvSettings) if f.metadata.get("non_empty")}
    validated = {field for d in cloudq.Settings.__pydantic_decorators__.field_validators.values() for field in d.info.fields}
    assert marked == validated == {"default_queue"}


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
    ("CLOUDQ_CONCURRENCY", "-3"),
    ("CLOUDQ_CONCURRENCY", "2.0"),
    ("CLOUDQ_CONCURRENCY", "ten"),
    ("CLOUDQ_CONCURRENCY", ""),
    ("CLOUDQ_WAIT_TIME_S", "20"),
    ("CLOUDQ_WAIT_TIME_S", "21"),
    ("CLOUDQ_MAX_RETRIES", "+4"),
    ("CLOUDQ_RETRY_BACKOFF_S", "0.5"),
    ("CLOUDQ_RETRY_BACKOFF_S", ".5"),
    ("CLOUDQ_RETRY_BACKOFF_S", "1e1"),
    ("CLOUDQ_RETRY_BACKOFF_S", "0"),
    ("CLOUDQ_RETRY_BACKOFF_S", "inf"),
    ("CLOUDQ_RETRY_BACKOFF_MAX_S", "50000"),
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
    ("CLOUDQ_QUEUE_PREFIX", "shop-"),
    ("CLOUDQ_HEARTBEAT_PATH", "/tmp/hb"),
    ("CLOUDQ_NOT_A_SETTING", "x"),
]


@pytest.mark.parametrize(("name", "value"), CASES)
def test_envsettings_reads_what_settings_reads_and_refuses_what_it_refuses(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    for key in [k for k in os.environ if k.lower().startswith("cloudq_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv(name, value)
    try:
        expected: Any = cloudq.Settings().model_dump()
    except (pydantic.ValidationError, pydantic_settings.SettingsError) as exc:
        with pytest.raises(cloudq.ConfigurationError, match="invalid CLOUDQ_") as raised:
            EnvSettings.from_environ()
        assert str(exc) in str(raised.value)
        assert raised.value.__cause__ is not None and type(raised.value.__cause__) is type(exc)
        return
    assert dataclasses.asdict(EnvSettings.from_environ()) == expected


def test_an_app_without_settings_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_QUEUE_PREFIX", "shop-")
    monkeypatch.setenv("CLOUDQ_BROKER", "memory")
    app = cloudq.App("shop")
    assert isinstance(app.settings, EnvSettings)
    assert app.settings.queue_name("billing") == "shop-billing"
    assert app.settings.dlq_name("orders.fifo") == "shop-orders-dlq.fifo"
    assert load_settings() == app.settings


def test_a_bad_variable_fails_building_the_app_with_pydantics_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_CONCURRENCY", "0")
    with pytest.raises(cloudq.ConfigurationError, match=r"concurrency\n  Input should be greater than or equal to 1"):
        cloudq.App("shop")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("CLOUDQ_CONCURRENCY", "0", "greater than or equal to 1"), ("CLOUDQ_QUEUE_URLS", "x", "queue_urls.*Expecting value")],
)
def test_the_cli_reports_a_bad_variable_in_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, message: str
) -> None:
    from cloudq.cli import main

    monkeypatch.setenv(name, value)
    saved = sys.modules.pop("cloudq.examples.shop", None)  # imported again, under the bad variable
    try:
        assert main(["status", "cloudq.examples.shop:app"]) == 2
    finally:
        if saved is not None:
            sys.modules["cloudq.examples.shop"] = saved
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err, re.DOTALL), err

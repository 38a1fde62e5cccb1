"""The settings table (cloudq.settings_fields): its bounds for other code, its one-line rejections, and the
settings modules importing downwards only."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

import cloudq
from cloudq.settings_env import EnvSettings
from cloudq.settings_fields import SETTINGS, field_bounds

pytestmark = pytest.mark.unit

PACKAGE = Path(cloudq.__file__).parent
SETTINGS_MODULES = ("cloudq.settings", "cloudq.settings_env", "cloudq.settings_fields", "cloudq.naming")


def test_field_bounds_gives_the_range_other_code_checks_against() -> None:
    """The CLI checks ``-c`` against the concurrency bound: the numbers come from the table."""
    assert field_bounds("concurrency") == (1, 1000)
    assert field_bounds("wait_time_s") == (0, 20)
    assert field_bounds("max_retries") == (0, None)
    assert field_bounds("retry_backoff_s") == (0, None) and SETTINGS["retry_backoff_s"].gt == 0
    with pytest.raises(KeyError):
        field_bounds("no_such_setting")


@pytest.mark.parametrize("name", [name for name, row in SETTINGS.items() if row.kind in ("int", "float")])
def test_each_bound_admits_its_edge_and_refuses_one_step_beyond(name: str) -> None:
    row = SETTINGS[name]
    low, high = field_bounds(name)
    step = 1 if row.kind == "int" else 0.001
    if low is not None:
        assert (row.violation(low) is None) == (row.gt is None)
        assert row.violation(low - step) is not None
    if high is not None:
        assert row.violation(high) is None and row.violation(high + step) is not None
    assert row.violation(row.default_value()) is None


def test_a_bad_keyword_raises_a_configuration_error_in_one_line_with_pydantics_error_as_cause() -> None:
    with pytest.raises(cloudq.ConfigurationError) as raised:
        cloudq.Settings(broker="memory", concurrency=5000)
    assert str(raised.value) == "Settings(concurrency=5000): must be between 1 and 1000"
    assert isinstance(raised.value.__cause__, pydantic.ValidationError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": "ten"}, "Settings(concurrency='ten'): must be an integer between 1 and 1000"),
        ({"log_level": "LOUD"}, "Settings(log_level='LOUD'): must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)"),
        ({"default_queue": ""}, "Settings(default_queue=''): must not be empty"),
        ({"queue_urls": {"billing": 1}}, "Settings(queue_urls={'billing': 1}): must map queue names to URL strings"),
        ({"queu_prefix": "x-"}, "Settings(queu_prefix='x-'): not a setting; the settings are broker, "),
        ({"wait_time_s": 21, "concurrency": 0}, "Settings(wait_time_s=21): must be between 0 and 20; Settings(concurrency=0)"),
    ],
)
def test_each_rejected_keyword_is_named_with_its_value_and_rule(options: dict[str, object], message: str) -> None:
    with pytest.raises(cloudq.ConfigurationError) as raised:
        cloudq.Settings(**options)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_log_level_is_a_choice_in_any_case_stored_as_declared() -> None:
    assert cloudq.Settings(log_level="debug").log_level == "DEBUG"
    assert cloudq.Settings(broker="memory", queue_prefix="x-").log_level == "INFO"
    assert SETTINGS["log_level"].choices == ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def test_constructor_keywords_and_queue_naming_keep_working() -> None:
    settings = cloudq.Settings(broker="memory", queue_prefix="x-")
    assert (settings.broker, settings.queue_name("q"), settings.dlq_name("q.fifo")) == ("memory", "x-q", "x-q-dlq.fifo")
    assert EnvSettings(queue_prefix="x-").dlq_name("q") == "x-q-dlq"
    assert type(settings).__name__ == "Settings" and type(settings).__module__ == "cloudq.settings"


def fresh_interpreter(code: str, **env: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter (CLOUDQ_* from ``env`` only); it prints one JSON line."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("CLOUDQ_")}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True
    )
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_a_plain_bad_variable_is_refused_without_importing_pydantic() -> None:
    """The lean reader judges plain values itself, so a Lambda with a typo'd setting fails fast, in one line."""
    code = """
import json, sys
from cloudq.errors import ConfigurationError
from cloudq.settings_env import load_settings
try:
    load_settings()
except ConfigurationError as exc:
    print(json.dumps({"error": str(exc), "pydantic": "pydantic" in sys.modules}))
"""
    report = fresh_interpreter(code, CLOUDQ_CONCURRENCY="5000")
    assert report == {"error": "CLOUDQ_CONCURRENCY='5000': must be between 1 and 1000", "pydantic": False}


def test_the_table_module_imports_the_standard_library_only() -> None:
    code = """
import json, sys
before = set(sys.modules)
import cloudq.settings_fields
added = {name.partition(".")[0] for name in set(sys.modules) - before}
print(json.dumps(sorted(added - set(sys.stdlib_module_names))))
"""
    assert fresh_interpreter(code) == ["cloudq"]  # type: ignore[comparison-overlap]


def module_path(name: str) -> Path | None:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def cloudq_imports(name: str) -> set[str]:
    """Every cloudq module ``name`` imports: at the top, under TYPE_CHECKING, inside functions.

    Importing ``cloudq.a.b`` runs ``cloudq/a/__init__.py`` too, so enclosing packages count; the root
    ``cloudq`` does not: it is the public facade (PEP 562 lazy names) above everything.
    """
    path = module_path(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.update([base, *(f"{base}.{alias.name}" for alias in node.names)])
    modules = {m for m in found if m.startswith("cloudq.") and module_path(m) is not None}
    parents = {".".join(m.split(".")[:i]) for m in modules for i in range(2, m.count(".") + 1)}
    return modules | parents


@pytest.mark.parametrize("start", SETTINGS_MODULES)
def test_the_settings_modules_import_downwards_only(start: str) -> None:
    """No import circle through a settings module, counting TYPE_CHECKING and function-level imports."""
    seen: dict[str, str] = {}
    stack = [(m, start) for m in cloudq_imports(start)]
    while stack:
        module, via = stack.pop()
        assert module != start, f"{start} is imported back by {via}"
        if module not in seen:
            seen[module] = via
            stack.extend((m, module) for m in cloudq_imports(module))

"""The shape of :mod:`cloudq.cli`: no import circles among its modules, and a cheap start-up.

``cloudq health`` is a Docker HEALTHCHECK run every few seconds and ``cloudq worker`` the ECS entry
point, so building the parser must not load what only some command runs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cloudq.cli

pytestmark = pytest.mark.unit

CLI_DIR = Path(cloudq.cli.__file__).parent
# Each costs tens of milliseconds; only the commands that use them may import them.
HEAVY = {"asyncio", "structlog", "rich", "pydantic", "pydantic_settings", "boto3", "botocore", "aioboto3", "tenacity"}


def module_name(path: Path) -> str:
    return "cloudq.cli" if path.stem == "__init__" else f"cloudq.cli.{path.stem}"


def cli_imports(path: Path) -> set[str]:
    """The cloudq.cli modules ``path`` imports anywhere: top level, in functions, under TYPE_CHECKING,
    and by ``importlib.import_module("...")`` with a literal name."""
    submodules = {module_name(p) for p in CLI_DIR.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= (names & submodules) or {node.module}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
            found |= {arg.value for arg in node.args[:1] if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    return {name for name in found if name == "cloudq.cli" or name.startswith("cloudq.cli.")}


def test_no_command_module_imports_the_cli_package_back() -> None:
    """Only ``__init__`` and ``__main__`` may import the package; the groups import ``cloudq.cli.loading``."""
    importers = {module_name(p) for p in CLI_DIR.glob("*.py") if "cloudq.cli" in cli_imports(p)}
    assert importers <= {"cloudq.cli.__main__"}, importers


def test_the_cli_modules_import_each_other_without_a_circle() -> None:
    """Following every import among cloudq/cli's modules never leads back to where it started."""
    graph = {module_name(p): cli_imports(p) for p in CLI_DIR.glob("*.py")}

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        for imported in graph.get(name, ()):
            visit(imported, (*path, name))

    for name in graph:
        visit(name, ())


def loaded_by(statement: str, cwd: Path) -> set[str]:
    """The top-level packages loaded in a fresh interpreter by ``statement``."""
    probe = f"import sys\n{statement}\nimport json\nprint(json.dumps(sorted({{m.partition('.')[0] for m in sys.modules}})))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_building_the_parser_loads_nothing_heavy(tmp_path: Path) -> None:
    """``cloudq --help`` (every command group's parser) loads no AWS SDK, pydantic, structlog, rich or asyncio."""
    loaded = loaded_by("from cloudq.cli import build_parser\nbuild_parser()", tmp_path)
    assert loaded.isdisjoint(HEAVY), loaded & HEAVY


def test_the_health_check_loads_nothing_heavy(tmp_path: Path) -> None:
    """``cloudq health`` reads a file's age: it never logs, so it skips structlog as well."""
    (tmp_path / "heartbeat").touch()
    loaded = loaded_by("from cloudq.cli import main\nassert main(['health', '--path', 'heartbeat']) == 0", tmp_path)
    assert loaded.isdisjoint(HEAVY), loaded & HEAVY


def test_python_m_cloudq_cli_is_the_cloudq_command(tmp_path: Path) -> None:
    """``python -m cloudq.cli`` works as it did when the CLI was a single module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    out = subprocess.run([sys.executable, "-m", "cloudq.cli", "schema"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["required"] == ["task"]

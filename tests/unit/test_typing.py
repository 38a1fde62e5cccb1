"""Typed tasks: ``@app.task`` and its siblings keep the function's signature for mypy and pyright.

A user module that uses tasks correctly must pass ``mypy --strict`` (and pyright's strict mode); one with
wrong calls must fail with exactly the errors its lines announce in a trailing ``# expect:`` comment
(mypy error codes, then ``|``, then pyright rules). Each checker runs once, in a fresh process, on both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cloudq

pytestmark = pytest.mark.unit

REPO = Path(cloudq.__file__).resolve().parents[1]  # the checkout under test, not an installed copy

TYPED_APP = '''
from __future__ import annotations

from datetime import timedelta

import cloudq

app = cloudq.App("shop")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(queue="billing", max_retries=5)
async def charge(customer_id: str, cents: int) -> dict[str, int]:
    return {customer_id: cents}


@app.periodic("rate(5 minutes)", args=("daily",))
def report(kind: str) -> None: ...


@app.on_event("aws.s3", "Object Created")
def on_upload(event: dict[str, object]) -> str:
    return str(event)


def produce() -> list[cloudq.JobRef]:
    total: int = add(1, 2)
    refs = [add.delay(total, y=2), report.delay("weekly"), on_upload.delay({"source": "aws.s3"})]
    refs.append(add.with_options(delay=timedelta(seconds=30), queue="slow").delay(3, 4))
    return refs + add.map([(1, 2), (3, 4)])


async def aproduce() -> cloudq.JobRef:
    result: dict[str, int] = await charge("c1", 100)
    await charge.with_options(delay=5).adelay("c2", cents=result["c1"])
    return await charge.adelay("c1", 100)
'''

WRONG_CALLS = '''
from __future__ import annotations

import cloudq

app = cloudq.App("shop")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(queue="billing")
async def charge(customer_id: str, cents: int) -> None: ...


@app.periodic("rate(5 minutes)")
def report(kind: str) -> None: ...


def produce() -> None:
    add.delay("a", 2)  # expect: arg-type | reportArgumentType
    add.delay(1)  # expect: call-arg | reportCallIssue
    add(1, 2, 3)  # expect: call-arg | reportCallIssue
    wrong: str = add(1, 2)  # expect: assignment | reportAssignmentType
    add.with_options(delay=30).delay(1, z=2)  # expect: call-arg | reportCallIssue reportCallIssue
    add.with_options(dely=30)  # expect: call-arg | reportCallIssue
    report.delay(1)  # expect: arg-type | reportArgumentType
    print(wrong)


async def aproduce() -> None:
    await charge.adelay("c1", "100")  # expect: arg-type | reportArgumentType
'''


def expected(source: str) -> dict[str, dict[int, list[str]]]:
    """line -> sorted codes, for each checker, from the ``# expect: mypy codes | pyright rules`` comments."""
    found: dict[str, dict[int, list[str]]] = {"mypy": {}, "pyright": {}}
    for number, line in enumerate(source.splitlines(), start=1):
        if "# expect:" in line:
            mypy_codes, pyright_rules = line.split("# expect:")[1].split("|")
            found["mypy"][number] = sorted(mypy_codes.split())
            found["pyright"][number] = sorted(pyright_rules.split())
    return found


def need(module: str) -> None:
    """The checkers come with the dev extra: skip on a laptop without them, fail on CI."""
    if importlib.util.find_spec(module) is not None:
        return
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{module} is not installed (the dev extra has it)")
    pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def user_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("typed")
    (root / "typed_app.py").write_text(TYPED_APP)
    (root / "wrong_calls.py").write_text(WRONG_CALLS)
    yield root


def checker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    env["MYPYPATH"] = str(REPO)  # mypy does not read PYTHONPATH; the checkout must win over an installed cloudq
    return env


@pytest.fixture(scope="module")
def mypy_errors(user_modules: Path) -> dict[str, dict[int, list[str]]]:
    """``mypy --strict`` on both modules: file -> line -> error codes. cloudq's own modules are followed
    for their types, silently: only the user's code is judged here."""
    need("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
         "--show-error-codes", "--no-error-summary", "--python-version=3.10", "typed_app.py", "wrong_calls.py"],
        cwd=user_modules, env=checker_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr + result.stdout
    errors: dict[str, dict[int, list[str]]] = {}
    for match in re.finditer(r"^(\w+\.py):(\d+): error: .*\[([\w-]+)\]$", result.stdout, re.MULTILINE):
        errors.setdefault(match[1], {}).setdefault(int(match[2]), []).append(match[3])
    assert errors or result.returncode == 0, result.stdout
    return {file: {line: sorted(codes) for line, codes in lines.items()} for file, lines in errors.items()}


@pytest.fixture(scope="module")
def pyright_errors(user_modules: Path) -> dict[str, dict[int, list[str]]]:
    """pyright in strict mode on both modules: file -> line -> rules."""
    need("pyright")
    config = {"typeCheckingMode": "strict", "extraPaths": [str(REPO)], "pythonVersion": "3.10"}
    (user_modules / "pyrightconfig.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "typed_app.py", "wrong_calls.py"],
        cwd=user_modules, env=checker_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    errors: dict[str, dict[int, list[str]]] = {}
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic["severity"] == "error":
            file = Path(diagnostic["file"]).name
            errors.setdefault(file, {}).setdefault(diagnostic["range"]["start"]["line"] + 1, []).append(diagnostic.get("rule", "?"))
    return {file: {line: sorted(rules) for line, rules in lines.items()} for file, lines in errors.items()}


def test_mypy_strict_accepts_correct_use_of_tasks(mypy_errors: dict[str, dict[int, list[str]]]) -> None:
    """Plain calls return the function's type; delay/adelay/map/with_options/periodic/on_event type-check."""
    assert "typed_app.py" not in mypy_errors, mypy_errors["typed_app.py"]


def test_mypy_strict_rejects_calls_that_do_not_fit_the_signature(mypy_errors: dict[str, dict[int, list[str]]]) -> None:
    """Wrong argument types and counts, unknown keywords and send options, a wrong result type: each an error."""
    assert mypy_errors.get("wrong_calls.py") == expected(WRONG_CALLS)["mypy"]


def test_pyright_strict_accepts_correct_use_of_tasks(pyright_errors: dict[str, dict[int, list[str]]]) -> None:
    """The same typed module passes pyright's strict mode: no Unknown leaks out of the decorators."""
    assert "typed_app.py" not in pyright_errors, pyright_errors["typed_app.py"]


def test_pyright_rejects_calls_that_do_not_fit_the_signature(pyright_errors: dict[str, dict[int, list[str]]]) -> None:
    """pyright finds the same wrong calls as mypy, line for line."""
    assert pyright_errors.get("wrong_calls.py") == expected(WRONG_CALLS)["pyright"]

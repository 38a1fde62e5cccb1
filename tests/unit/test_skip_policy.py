"""The suite's skip policy: integration tests skip on a laptop without LocalStack, and fail instead when the
test command started one (CLOUDQ_LOCALSTACK_STARTED, set by scripts/with_localstack.sh) or on CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SKIPPING = """
import pytest

@pytest.mark.integration
def test_skips_inside() -> None:
    pytest.skip("no service here")

@pytest.mark.integration
@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure() -> None:
    raise AssertionError

def test_unit_skip() -> None:
    pytest.skip("a unit test may skip")
"""


def pytest_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "CLOUDQ_LOCALSTACK_STARTED", "CLOUDQ_TEST_ENDPOINT")}
    environment |= {"PYTHONPATH": str(ROOT), **env}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("env", "outcome"), [({}, "1 skipped"), ({"CLOUDQ_LOCALSTACK_STARTED": "1"}, "1 error")])
def test_no_localstack_skips_on_a_laptop_and_fails_under_the_test_command(env: dict[str, str], outcome: str) -> None:
    """With CLOUDQ_TEST_ENDPOINT on a closed port: skipped by plain pytest, an error under make test (as on CI)."""
    result = pytest_run("tests/integration/test_harness_smoke.py", CLOUDQ_TEST_ENDPOINT="http://127.0.0.1:9", **env)
    assert outcome in result.stdout, result.stdout[-2000:]
    assert result.returncode == (0 if outcome == "1 skipped" else 1)


@pytest.mark.parametrize("started", [False, True])
def test_any_integration_skip_fails_when_the_test_command_started_localstack(tmp_path: Path, started: bool) -> None:
    """A pytest.skip inside an integration test fails the run under make test; an xfail and a unit skip do not."""
    (tmp_path / "test_policy.py").write_text(SKIPPING)
    env = {"CLOUDQ_LOCALSTACK_STARTED": "1"} if started else {}
    result = pytest_run("-c", str(ROOT / "pyproject.toml"), "-p", "tests.conftest", str(tmp_path / "test_policy.py"), **env)
    expected = "1 failed, 1 skipped, 1 xfailed" if started else "2 skipped, 1 xfailed"
    assert expected in result.stdout, result.stdout[-2000:]
    assert result.returncode == (1 if started else 0)
    if started:
        assert "integration test skipped although the test command started LocalStack: Skipped: no service here" in result.stdout

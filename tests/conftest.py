"""Shared test plumbing: the LocalStack endpoint, unique resource names, markers by directory.

cloudq-specific fixtures belong in tests/<kind>/conftest.py, not here.
"""

from __future__ import annotations

import faulthandler
import http.client
import logging
import os
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

# boto3 needs credentials and a region even for LocalStack (which accepts anything); set them before any
# test module creates a client, without overriding what `make test` or the developer chose.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

TESTS_DIR = Path(__file__).resolve().parent
_SKIP_REASON = "LocalStack not running; run make test or set CLOUDQ_TEST_ENDPOINT"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _in_ci() -> bool:
    return _flag("CI")


def _localstack_started() -> bool:
    """scripts/with_localstack.sh (``make test``) started or reused a LocalStack for this run."""
    return _flag("CLOUDQ_LOCALSTACK_STARTED")


def _answers(url: str) -> bool:
    """The service at ``url`` answers 200 (its health page)."""
    # No proxy: an http_proxy in the environment must not intercept requests to 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, ValueError, http.client.HTTPException):
        return False


def _service(variable: str, health_path: str, reason: str, *, must_run: bool) -> str:
    """The healthy endpoint in ``$variable``; else a failure when ``must_run`` (CI), a skip otherwise."""
    endpoint = os.environ.get(variable, "").strip().rstrip("/")
    if endpoint and _answers(f"{endpoint}{health_path}"):
        return endpoint
    if must_run:
        pytest.fail(f"{reason} ({variable}={endpoint or '<unset>'})", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def localstack_endpoint() -> str:
    """Base URL of a healthy LocalStack, from CLOUDQ_TEST_ENDPOINT (`make test` sets it).

    Skips the test when there is none, except on CI, where a missing LocalStack is a failure rather than
    a silently green run.
    """
    return _service("CLOUDQ_TEST_ENDPOINT", "/_localstack/health", _SKIP_REASON, must_run=_in_ci() or _localstack_started())


_MOTO_SKIP_REASON = "moto_server (DynamoDB) not running; run make test or set CLOUDQ_TEST_DYNAMODB"


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> str:
    """Base URL of moto's standalone server for DynamoDB, from CLOUDQ_TEST_DYNAMODB (`make test` starts one).

    Skips without one, except on CI, where it fails (as LocalStack's fixture does)."""
    return _service("CLOUDQ_TEST_DYNAMODB", "/moto-api/", _MOTO_SKIP_REASON, must_run=_in_ci())


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """Factory for fresh resource names (`t-1a2b3c4d5e`), so that no two tests share a queue.

    Sharing is not safe on LocalStack: a consumer killed mid long-poll can still take later messages.
    """

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


def pytest_configure(config: pytest.Config) -> None:
    """A watchdog for the whole run: past CLOUDQ_TEST_WATCHDOG_S (default 30 min; the suite takes about 9)
    every thread's stack is printed and the process exits 1.

    pytest-timeout's 120 s per test cannot end every hang: a test's thread that never returns blocks the
    event loop's executor shutdown, or the interpreter's exit, outside any test (a CI run once sat in one
    until the CI's own limit, 90 minutes later, with nothing printed). The timer is never cancelled: it
    covers the interpreter's exit too, and ends with the process."""
    seconds = float(os.environ.get("CLOUDQ_TEST_WATCHDOG_S", "1800"))
    if seconds > 0:
        faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
    _refuse_os_exit()


def _refuse_os_exit() -> None:
    """``os._exit`` in the pytest process ends the run at once, with status 0 if that is what it was given
    and nothing reported: a CI run once stopped at 32% "green" (an in-process `cloudq worker` took other
    pools' threads for its own lingering tasks). Here it raises instead; forked children exit as ever."""
    main, real_exit = os.getpid(), os._exit

    def refuse(code: int) -> None:
        if os.getpid() != main:
            real_exit(code)
        raise RuntimeError(f"os._exit({code}) called in the pytest process (it would end the run unreported)")

    os._exit = refuse  # type: ignore[assignment]


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by `-m`
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by directory: tests/integration -> integration; tests/unit and tests/contract -> unit.

    A contract test (or parameter) that marks itself integration, because it runs against LocalStack,
    keeps that marker and does not get `unit`.
    """
    for item in items:
        try:
            kind = item.path.resolve().relative_to(TESTS_DIR).parts[0]
        except ValueError:
            continue
        is_integration = item.get_closest_marker("integration") is not None
        if kind == "integration" and not is_integration:
            item.add_marker(pytest.mark.integration)
        elif kind in ("unit", "contract") and not is_integration:
            item.add_marker(pytest.mark.unit)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """When the test command started LocalStack, an integration test that skips (for whatever reason: a
    fixture, a marker, a pytest.skip inside) is a failure: a green run must mean it ran. On a laptop
    running pytest without LocalStack they still skip."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and _localstack_started() and item.get_closest_marker("integration"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"integration test skipped although the test command started LocalStack: {reason}"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """CLI entry points configure structlog and the root logger globally; give every test a clean
    configuration (a root handler left behind would write to a finished test's stream)."""
    root = logging.getLogger()
    level = root.level
    yield
    structlog.reset_defaults()
    from cloudq import logs

    logs._pending, logs._gate = None, 0  # a configuration left pending (see cloudq.logs)
    for handler in list(root.handlers):
        if type(handler).__name__ == "_StructlogHandler":  # cloudq.logs's; pytest manages its own
            root.removeHandler(handler)
    root.setLevel(level)
    for name in ("botocore", "boto3", "aiobotocore", "aioboto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.NOTSET)

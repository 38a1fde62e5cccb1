"""A bad ``CLOUDQ_*`` value stops every command the same way: the table's one line naming the variable, exit 2.

The settings table (:mod:`cloudq.settings_fields`) words the rejection; this checks that no command lets it
out as a traceback or a pydantic dump with its link, and that none runs on with a default instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.cli_env import APP, run_cli

pytestmark = pytest.mark.unit

COMMANDS = [
    ["worker", APP, "--burst"],
    ["enqueue", APP, "cloudq.examples.shop.send_welcome_email", "--args", '["a@b.c"]'],
    ["queues", "ensure", APP],
    ["lambda-local", APP, "--burst"],
    ["health"],  # with --path it reads no settings at all
    ["demo", "-n", "3"],
    ["status", APP],
    ["dlq", "peek", APP, "default"],
    ["dlq", "redrive", APP, "default"],
    ["purge", APP, "default", "--yes"],
    ["schedules", "list", APP],
    ["schedules", "sync", APP, "--dry-run"],
    ["infra", "render", APP],
]
LOUD = "cloudq: error: CLOUDQ_LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)\n"


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_every_command_refuses_a_bad_log_level_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    """``CLOUDQ_LOG_LEVEL=LOUD`` meant INFO once; now each command exits 2 with the one line and no output."""
    out = run_cli(*argv, cwd=tmp_path, CLOUDQ_LOG_LEVEL="LOUD", CLOUDQ_LOCAL_PATH=str(tmp_path / "q.db"))
    assert (out.returncode, out.stderr, out.stdout) == (2, LOUD, "")


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("CLOUDQ_CONCURRENCY", "5000", "CLOUDQ_CONCURRENCY='5000': must be between 1 and 1000"),
        ("CLOUDQ_WAIT_TIME_S", "abc", "CLOUDQ_WAIT_TIME_S='abc': must be an integer between 0 and 20"),
        ("CLOUDQ_QUEUE_URLS", "{bad", 'CLOUDQ_QUEUE_URLS=\'{bad\': must map queue names to URL strings, as JSON in the environment: {"billing": "<queue URL>"}'),
        ("CLOUDQ_BROKER", "redis", "CLOUDQ_BROKER='redis': must be one of local, sqs, memory"),
    ],
)
def test_other_bad_values_are_the_same_one_line(tmp_path: Path, variable: str, value: str, line: str) -> None:
    """Plain and JSON values alike: no pydantic error text reaches the user."""
    out = run_cli("status", APP, cwd=tmp_path, **{variable: value, "CLOUDQ_LOCAL_PATH": str(tmp_path / "q.db")})
    assert (out.returncode, out.stderr, out.stdout) == (2, f"cloudq: error: {line}\n", "")
    assert "pydantic" not in out.stderr


def test_schema_reads_no_settings(tmp_path: Path) -> None:
    """``cloudq schema`` prints a file shipped in the package: a bad setting does not concern it."""
    out = run_cli("schema", cwd=tmp_path, CLOUDQ_LOG_LEVEL="LOUD")
    assert out.returncode == 0 and out.stdout.startswith("{")

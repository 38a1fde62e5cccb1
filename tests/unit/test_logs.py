"""Entry-point logging: JSON or console, and never the locals of a failing task."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from cloudq.logs import configure_logging

pytestmark = pytest.mark.unit


def fail_with_secret(password: str) -> None:
    raise ValueError("card declined")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_never_show_frame_locals(fmt: str) -> None:
    """A failed job's traceback is logged without its frames' locals (arguments may be secrets)."""
    out = io.StringIO()
    configure_logging(fmt, "INFO", stream=out)  # type: ignore[arg-type]
    secret = "hun" + "ter2"  # built at run time, so the source line shown in the traceback does not hold it
    try:
        fail_with_secret(secret)
    except ValueError as exc:
        structlog.get_logger().warning("job.failed", exc_info=exc)
    text = out.getvalue()
    assert "card declined" in text and "hunter2" not in text


def test_json_lines_have_event_level_and_utc_timestamp() -> None:
    """JSON output: one object per line with event, level and an ISO UTC timestamp."""
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)  # type: ignore[arg-type]
    structlog.get_logger().info("job.succeeded", duration_ms=1.5)
    structlog.get_logger().debug("job.received")
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "job.succeeded" and line["level"] == "info" and line["timestamp"].endswith("Z")

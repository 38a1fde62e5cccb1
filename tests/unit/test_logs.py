"""Entry-point logging: JSON or console, and never the locals of a failing task."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from typing import Any

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


# -- stdlib logging from task code and libraries ------------------------------------------------
def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_stdlib_records_come_out_as_json_with_the_bound_context_at_the_configured_level() -> None:
    """logging.info is kept at DEBUG (it was dropped), in the structlog format, with the contextvars."""
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    log = logging.getLogger("shop.billing")
    with structlog.contextvars.bound_contextvars(job_id="j-1", task="shop.charge"):
        log.debug("looking up %s", "c1")
        log.info("charged", extra={"cents": 100})

    debug, info = json_lines(out.getvalue())
    assert debug["event"] == "looking up c1" and debug["level"] == "debug" and debug["logger"] == "shop.billing"
    assert info["event"] == "charged" and info["level"] == "info" and info["cents"] == 100
    assert info["job_id"] == "j-1" and info["task"] == "shop.charge" and info["timestamp"].endswith("Z")


def test_stdlib_records_below_the_level_are_dropped_and_the_aws_sdk_stays_at_warning() -> None:
    """At WARNING a task's info is dropped; at DEBUG botocore's debug and info still are, its warnings not."""
    out = io.StringIO()
    configure_logging("json", "WARNING", stream=out)
    logging.getLogger("shop").info("dropped")
    logging.getLogger("shop").warning("kept")
    configure_logging("json", "DEBUG", stream=out)
    logging.getLogger("botocore.endpoint").debug("Sending http request")
    logging.getLogger("urllib3.connectionpool").info("Starting new HTTP connection")
    logging.getLogger("botocore.credentials").warning("Refreshing credentials")

    assert [(line["logger"], line["event"]) for line in json_lines(out.getvalue())] == [
        ("shop", "kept"),
        ("botocore.credentials", "Refreshing credentials"),
    ]


def test_console_format_renders_stdlib_records_like_structlog_events() -> None:
    """On a terminal a task's logging.warning reads like cloudq's own lines, not ``WARNING shop: ...``."""
    out = io.StringIO()
    configure_logging("console", "INFO", stream=out)
    with structlog.contextvars.bound_contextvars(job_id="j-2"):
        logging.getLogger("shop").warning("card %s declined", "c1")
        structlog.get_logger().info("job.succeeded")

    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colours off
    stdlib_line, structlog_line = text.splitlines()
    assert re.search(r"Z \[warning\s*\] card c1 declined\s+\[shop\] job_id=j-2$", stdlib_line), stdlib_line
    assert re.search(r"Z \[info\s*\] job.succeeded\s+job_id=j-2$", structlog_line), structlog_line


def test_stdlib_exceptions_are_structured_without_locals() -> None:
    """log.exception in JSON: the traceback as data, never a frame's locals."""
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    secret = "hun" + "ter2"
    try:
        fail_with_secret(secret)
    except ValueError:
        logging.getLogger("shop").exception("charge failed")

    [line] = json_lines(out.getvalue())
    assert line["event"] == "charge failed" and line["exception"][0]["exc_value"] == "card declined"
    assert "hunter2" not in out.getvalue()


def test_configuring_again_replaces_the_handlers_that_would_write_plain_text() -> None:
    """A second configure_logging, a basicConfig console handler and the Lambda runtime's handler leave
    one root handler: each record is written once, in the structlog format."""

    class LambdaLoggerHandler(logging.StreamHandler):  # type: ignore[type-arg]  # the runtime's class name
        pass

    plain = io.StringIO()
    root = logging.getLogger()
    console, lambda_runtime, kept = logging.StreamHandler(sys.stderr), LambdaLoggerHandler(plain), logging.NullHandler()
    for handler in (console, lambda_runtime, kept):
        root.addHandler(handler)
    try:
        out = io.StringIO()
        configure_logging("json", "INFO", stream=io.StringIO())
        configure_logging("json", "INFO", stream=out)
        logging.getLogger("shop").warning("once")
    finally:
        root.removeHandler(kept)

    assert [line["event"] for line in json_lines(out.getvalue())] == ["once"] and plain.getvalue() == ""
    assert console not in root.handlers and lambda_runtime not in root.handlers


def test_a_task_logging_through_stdlib_carries_the_job_context(tmp_path: Any) -> None:
    """Sync (in its thread) and async tasks: their logging lines have job_id, task, queue and attempt."""
    import cloudq
    from cloudq import testing

    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory"))
    log = logging.getLogger("shop.tasks")

    @app.task(name="shop.sync_job")
    def sync_job(n: int) -> None:
        log.info("sync %d", n)

    @app.task(name="shop.async_job", queue="fast")
    async def async_job(n: int) -> None:
        log.info("async %d", n)

    sync_job.delay(1)
    async_job.delay(2)
    assert testing.drain(app).succeeded == 2

    lines = {line["event"]: line for line in json_lines(out.getvalue()) if line.get("logger") == "shop.tasks"}
    for event, task, queue in (("sync 1", "shop.sync_job", "default"), ("async 2", "shop.async_job", "fast")):
        line = lines[event]
        assert (line["task"], line["queue"], line["attempt"], line["level"]) == (task, queue, 1, "info")
        assert line["job_id"] and line["message_id"]


def test_the_lambda_handler_writes_stdlib_lines_with_the_request_and_job(capsys: pytest.CaptureFixture[str]) -> None:
    """In Lambda (JSON, CLOUDQ_LOG_LEVEL=DEBUG): a task's logging.info is on stdout with aws_request_id and job_id."""
    import asyncio

    import cloudq
    from cloudq.runtimes.aws_lambda import LambdaHandler
    from cloudq.runtimes.lambda_local import sqs_event

    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory", log_level="DEBUG", log_format="json"))

    @app.task(name="shop.notify")
    def notify(email: str) -> None:
        logging.getLogger("shop").info("notifying")

    notify.delay("a@b.c")
    deliveries = asyncio.run(app.broker.receive("default", max_messages=10, wait_s=0))

    class Context:
        aws_request_id, function_name = "req-7", "f"

        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    handler = LambdaHandler(app)
    try:
        assert handler(sqs_event(deliveries, region="us-east-1"), Context()) == {"batchItemFailures": []}
    finally:
        handler.close()
    [line] = [line for line in json_lines(capsys.readouterr().out) if line.get("logger") == "shop"]
    assert line["event"] == "notifying" and line["aws_request_id"] == "req-7" and line["task"] == "shop.notify"


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_job_arguments_never_reach_the_logs_at_info(fmt: str) -> None:
    """A worker at INFO runs jobs whose arguments hold a secret through every fate (success, retry then dead
    letter, Reject, bad arguments, an envelope that is not valid, an ETA re-send), with the producer's and the
    worker's own lines and tracebacks: the secret is nowhere in what it writes."""
    import uuid
    from datetime import timedelta

    import cloudq
    from cloudq.brokers.base import OutgoingMessage
    from cloudq.brokers.memory import MemoryBroker
    from cloudq.envelope import Envelope, utcnow
    from cloudq.runtimes.worker import Worker

    out = io.StringIO()
    configure_logging(fmt, "INFO", stream=out)  # type: ignore[arg-type]
    secret = uuid.uuid4().hex  # made at run time: no source line shown in a traceback holds it
    broker = MemoryBroker()
    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory", max_retries=1, retry_backoff_s=1), broker=broker)

    @app.task(name="ok")
    def ok(card: str, *, note: str = "") -> None:
        logging.getLogger("shop").info("charging")  # task code's own stdlib line, at INFO

    @app.task(name="flaky")
    def flaky(card: str) -> None:
        raise RuntimeError("upstream 503")

    @app.task(name="refuse")
    async def refuse(card: str) -> None:
        raise cloudq.Reject("refund window closed")

    ok.delay(secret, note=secret)
    ok.map([(secret,), {"card": secret}])
    await ok.adelay(secret)
    flaky.delay(secret)
    refuse.delay(secret)
    bodies = [
        json.dumps({"task": "ok", "args": [secret, secret, secret]}),  # arguments that do not bind
        json.dumps({"task": "ok", "args": {"card": secret}}),  # args not a list: not an envelope
        json.dumps({"task": "ok", "args": [secret], "kwargs": [secret]}),
        '{"task": "ok", "args": ["' + secret + '"',  # not JSON
        Envelope("ok", (secret,), {}, eta=utcnow() + timedelta(hours=1)).encode(),
    ]
    broker.send("default", [OutgoingMessage(body) for body in bodies])
    worker = Worker(app, burst=True, burst_wait_s=0, burst_retry_wait_s=5)
    await worker.run()

    text = out.getvalue()
    assert worker.stats.succeeded == 4 and worker.stats.dead_lettered == 6 and worker.stats.rescheduled == 1, text[-3000:]
    assert all(word in text for word in ("job.succeeded", "job.retrying", "job.dead_lettered", "job.rescheduled", "charging", "RuntimeError"))
    assert secret not in text


# -- the lazy facade (issue 10's start-up: structlog is imported at the first line written) ----------
LAZY = r'''
import io, json, sys
from cloudq.logs import bind_context, configure_logging, get_logger

out = io.StringIO()
configure_logging("json", "WARNING", stream=out)
log = get_logger("cloudq.worker")
bind_context(job_id="j-9", task="shop.charge")
log.info("worker.started", queues=["default"])
log.bind().debug("job.received")
before = "structlog" in sys.modules
log.warning("worker.broker_unavailable", failures=1)
print(json.dumps({"before": before, "after": "structlog" in sys.modules, "lines": out.getvalue().splitlines()}))
'''


def test_a_worker_at_warning_imports_structlog_only_for_a_line_it_writes() -> None:
    """Below the level nothing loads structlog; the first warning does, in the configured JSON format and
    with the job context bound before structlog was loaded."""
    result = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(result.stdout.splitlines()[-1])

    assert report["before"] is False and report["after"] is True
    [line] = [json.loads(x) for x in report["lines"]]
    assert line["event"] == "worker.broker_unavailable" and line["level"] == "warning" and line["failures"] == 1
    assert line["job_id"] == "j-9" and line["task"] == "shop.charge" and line["timestamp"].endswith("Z")


def test_stdlib_warnings_load_structlog_and_come_out_in_the_configured_format() -> None:
    """The root handler builds its formatter at its first record: a task's logging.warning is a JSON line."""
    code = (
        "import io, json, logging, sys\nfrom cloudq.logs import configure_logging\nout = io.StringIO()\n"
        "configure_logging('json', 'WARNING', stream=out)\nlogging.getLogger('shop').info('dropped')\n"
        "loaded = 'structlog' in sys.modules\nlogging.getLogger('shop').warning('low stock %d', 3)\n"
        "print(json.dumps([loaded, out.getvalue()]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded, text = json.loads(result.stdout.splitlines()[-1])

    [line] = json_lines(text)
    assert loaded is False and line["event"] == "low stock 3" and line["logger"] == "shop" and line["level"] == "warning"


def test_a_configuration_made_after_configure_logging_stands() -> None:
    """An entry point that configures structlog itself after configure_logging (the demo does) keeps its
    own: the pending configuration does not override it at the first line."""
    from cloudq import logs

    out, mine = io.StringIO(), io.StringIO()
    structlog.reset_defaults()
    logs._pending, logs._gate = (True, logging.INFO, out), logging.INFO  # as configure_logging leaves it without structlog
    structlog.configure(processors=[structlog.processors.JSONRenderer()], logger_factory=structlog.PrintLoggerFactory(mine))
    logs.get_logger("cloudq.test").info("mine")

    assert out.getvalue() == "" and json.loads(mine.getvalue()) == {"event": "mine"}
    assert logs._pending is None and logs._gate == 0


def test_bind_context_goes_to_structlogs_contextvars_once_structlog_is_loaded() -> None:
    """Task code and tests read the job context with structlog's own API."""
    from cloudq.logs import bind_context, clear_context

    bind_context(job_id="j-3")
    try:
        assert structlog.contextvars.get_contextvars()["job_id"] == "j-3"
    finally:
        clear_context()
    assert "job_id" not in structlog.contextvars.get_contextvars()

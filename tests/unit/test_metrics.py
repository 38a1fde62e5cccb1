"""Metrics (CLOUDQ_METRICS): EMF lines parsed back and checked against the CloudWatch EMF specification and
the counts of a known run, in the worker and the Lambda handler; Prometheus /metrics scraped over HTTP while a
worker runs; a metrics port in use is one line and exit 2."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import cloudq
from cloudq.brokers.base import OutgoingMessage
from cloudq.envelope import Envelope
from cloudq.observability.emf import EmfSink, bucket
from cloudq.observability.metrics import METRICS
from cloudq.runtimes.aws_lambda import LambdaHandler
from cloudq.runtimes.worker import Worker

from .cli_env import APP, run_cli
from .test_lambda_handler import FakeContext, record

pytestmark = pytest.mark.unit

# The structure the CloudWatch EMF specification requires of a log event (its JSON schema, transcribed):
# _aws.Timestamp in epoch ms, CloudWatchMetrics a list of directives, each with a Namespace, Dimensions as
# lists of at most 30 dimension names and at most 100 metric definitions with a Name and a known Unit.
UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits", "Kilobits",
    "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
    "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
]  # fmt: skip
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r".*[^\s].*"},
                            "Dimensions": {
                                "type": "array",
                                "items": {"type": "array", "minItems": 1, "maxItems": 30, "items": {"type": "string", "minLength": 1, "maxLength": 250}},
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                        "Unit": {"enum": UNITS},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}
DISTRIBUTION = {
    "type": "object",
    "required": ["Values", "Counts"],
    "properties": {
        "Values": {"type": "array", "maxItems": 100, "items": {"type": "number"}},
        "Counts": {"type": "array", "maxItems": 100, "items": {"type": "number", "minimum": 0}},
    },
}


def check_emf(line: str) -> dict[str, Any]:
    """One EMF line, validated: the schema, then the references the schema cannot express."""
    doc = json.loads(line)
    jsonschema.validate(doc, EMF_SCHEMA)
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                assert isinstance(doc.get(name), str) and doc[name], f"dimension {name!r} needs a non-empty string value at the root"
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            if isinstance(value, dict):
                jsonschema.validate(value, DISTRIBUTION)
                assert len(value["Values"]) == len(value["Counts"])
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool), metric
    assert "job_id" not in doc and "message_id" not in doc
    return doc


def emf_lines(text: str) -> list[dict[str, Any]]:
    return [check_emf(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def totals(docs: list[dict[str, Any]]) -> Counter[tuple[str, ...]]:
    """(metric, task or queue[, reason]) -> the count, added up over lines: counters and distribution counts."""
    out: Counter[tuple[str, ...]] = Counter()
    for doc in docs:
        key = tuple(doc[d] for d in ("task", "reason") if d in doc) or (doc.get("queue", doc["app"]),)
        for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = doc[metric["Name"]]
            out[(metric["Name"], *key)] += sum(value["Counts"]) if isinstance(value, dict) else value
    return out


def known_app(**settings: Any) -> tuple[cloudq.App, Any]:
    app = cloudq.App("obs", settings=cloudq.Settings(broker="memory", retry_backoff_s=0.5, **settings))

    @app.task(name="obs.ok")
    def ok() -> None: ...

    @app.task(name="obs.flaky", max_retries=1)
    def flaky() -> None:
        raise ValueError("always")

    @app.task(name="obs.rejected")
    def rejected() -> None:
        raise cloudq.Reject("no")

    ok.map([()] * 5)
    flaky.delay()
    rejected.delay()
    app.broker.send("default", [OutgoingMessage(Envelope("obs.nobody").encode())])
    return app, ok


# (metric, task[, reason]) -> count of that known run: 5 ok; flaky fails twice (a retry, then dead-lettered);
# a Reject and an unknown task are dead letters without a failure.
KNOWN_RUN = {
    ("jobs_succeeded", "obs.ok"): 5,
    ("job_duration_ms", "obs.ok"): 5,
    ("jobs_failed", "obs.flaky"): 2,
    ("jobs_retried", "obs.flaky"): 1,
    ("jobs_dead_lettered", "obs.flaky", "max_retries_exceeded"): 1,
    ("jobs_dead_lettered", "obs.rejected", "rejected"): 1,
    ("jobs_dead_lettered", "(unregistered)", "unknown_task"): 1,
}


def test_worker_emf_lines_follow_the_spec_and_count_a_known_run(capsys: pytest.CaptureFixture[str]) -> None:
    """A burst worker with CLOUDQ_METRICS=emf writes, at exit, EMF lines whose counts are the run's."""
    app, _ = known_app(metrics="emf", metrics_namespace="shop-prod")

    async def run() -> None:
        await Worker(app, burst=True).run()

    asyncio.run(run())
    docs = emf_lines(capsys.readouterr().out)
    counts = totals(docs)

    assert {k: counts[k] for k in KNOWN_RUN} == KNOWN_RUN
    assert counts[("receives", "default")] >= 2 and counts[("messages_per_receive", "default")] == counts[("receives", "default")]
    assert counts[("deletes_per_call", "default")] >= 1
    assert {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in docs} == {"shop-prod"}
    assert all(d["app"] == "obs" for d in docs)
    job_doc = next(d for d in docs if d.get("task") == "obs.ok")
    assert job_doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["app", "queue", "task"], ["app", "queue"]]


def test_lambda_handler_flushes_emf_once_per_invocation_before_returning(capsys: pytest.CaptureFixture[str]) -> None:
    """Each invocation's metrics are written by the time the handler returns, and only that invocation's."""
    app = cloudq.App("obs", settings=cloudq.Settings(broker="memory", metrics="emf"))
    app.task(name="obs.ok")(lambda: None)
    handler = LambdaHandler(app, configure_logs=False)
    ok = Envelope("obs.ok").encode()
    try:
        handler({"Records": [record(ok, queue="default"), record(ok, queue="default")]}, FakeContext())
        first = totals(emf_lines(capsys.readouterr().out))
        handler({"Records": [record(ok, queue="default"), record(Envelope("obs.ok", args=(1,)).encode(), queue="default")]}, FakeContext())
        second = totals(emf_lines(capsys.readouterr().out))
    finally:
        handler.close()

    assert first[("jobs_succeeded", "obs.ok")] == 2 and first[("job_duration_ms", "obs.ok")] == 2
    assert second[("jobs_succeeded", "obs.ok")] == 1
    assert second[("jobs_dead_lettered", "obs.ok", "bad_arguments")] == 1


def test_emf_distributions_spill_past_100_values_into_lines_of_their_own() -> None:
    """More than 100 distinct durations: every line stays within EMF's 100 values, and no count is lost."""
    sink = EmfSink("ns")
    metric = METRICS["job_duration_ms"]
    for i in range(1, 400):
        sink.record(metric, ("a", "q", "t"), i * 7.3)
    docs = [check_emf(line) for line in sink.lines()]

    assert len(docs) > 1
    assert sum(sum(d["job_duration_ms"]["Counts"]) for d in docs) == 399
    assert sink.lines() == []  # a flush forgets what it wrote
    assert (bucket(0.01234), bucket(187.0), bucket(0.0)) == (0.012, 190.0, 0.0)


def scrape(port: int) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_prometheus_metrics_are_scraped_over_http_while_a_worker_runs() -> None:
    """/metrics answers during the run with the same metric names, counting what the worker did so far."""
    app, ok = known_app(metrics="prometheus", wait_time_s=0)
    assert app.metrics is not None
    app.metrics.sink.serve(0, addr="127.0.0.1")
    port = app.metrics.sink.port
    worker = Worker(app)
    running = asyncio.create_task(worker.run())
    try:
        samples = await asyncio.to_thread(scrape, port)  # answers before any job ran, too
        for _ in range(200):
            if (worker.stats.succeeded, worker.stats.dead_lettered) == (5, 3):
                break
            await asyncio.sleep(0.05)
        samples = await asyncio.to_thread(scrape, port)
    finally:
        worker.stop()
        await running
        await app.aclose()

    assert samples['cloudq_jobs_succeeded_total{app="obs",queue="default",task="obs.ok"}'] == 5
    assert samples['cloudq_jobs_failed_total{app="obs",queue="default",task="obs.flaky"}'] == 2
    assert samples['cloudq_jobs_dead_lettered_total{app="obs",queue="default",reason="unknown_task",task="(unregistered)"}'] == 1
    assert samples['cloudq_job_duration_ms_count{app="obs",queue="default",task="obs.ok"}'] == 5
    assert samples['cloudq_receives_total{app="obs",queue="default"}'] >= 2
    assert 'cloudq_slots_busy{app="obs"}' in samples


def test_a_metrics_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """`cloudq worker --metrics-port` on a taken port stops at start-up: one line on stderr, exit 2."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("worker", APP, "--burst", "--metrics-port", str(port), cwd=tmp_path, CLOUDQ_METRICS="prometheus", CLOUDQ_LOCAL_PATH=str(tmp_path / "q.db"))

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"cloudq: error: --metrics-port {port}: cannot listen on 0.0.0.0:{port}: Address already in use"]


def test_metrics_port_without_prometheus_metrics_is_bad_input(tmp_path: Path) -> None:
    result = run_cli("worker", APP, "--burst", "--metrics-port", "9999", cwd=tmp_path, CLOUDQ_LOCAL_PATH=str(tmp_path / "q.db"))

    assert result.returncode == 2
    assert result.stderr.splitlines() == ["cloudq: error: --metrics-port serves Prometheus metrics: set CLOUDQ_METRICS=prometheus (it is 'none')"]


def test_metrics_none_installs_nothing() -> None:
    """The default: no metrics object, no middleware, so the job path is what it was."""
    app = cloudq.App("plain", settings=cloudq.Settings(broker="memory", tracing="none"))

    assert app.metrics is None and len(app.middleware) == 0
    app.settings = cloudq.Settings(broker="memory", metrics="emf", tracing="none")
    assert app.metrics is not None and len(app.middleware) == 1
    app.settings = cloudq.Settings(broker="memory", tracing="none")
    assert app.metrics is None and len(app.middleware) == 0


def test_the_readme_metrics_table_is_the_metric_table() -> None:
    """README.md's one table of metric names and dimensions lists exactly cloudq's metrics, with their dimensions."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| metric | kind, unit | dimensions | what |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:4] for line in table.strip().splitlines()[1:]]
    documented = {name.strip().strip("`"): tuple(d.strip() for d in dims.split(",")) for name, _, dims in rows}

    assert documented == {m.name: m.dimensions for m in METRICS.values()}
    assert all(kind.split(",")[0].strip() == METRICS[name.strip().strip("`")].kind for name, kind, _ in rows)


def test_each_fate_bumps_its_counter_and_only_errors_count_as_failures() -> None:
    """The job store's fates (cancelled, duplicate: acked without running) have counters of their own; a
    run cancelled mid-way, a Reject or a poison message is no failure; an exhausted retry is."""
    from cloudq.observability.metrics import outcome_counters
    from cloudq.retry import Outcome, dead_letter_reason

    boom = ValueError("boom")
    assert outcome_counters(Outcome("ack")) == ["jobs_succeeded"]
    assert outcome_counters(Outcome("retry", delay_s=2, error=boom)) == ["jobs_retried", "jobs_failed"]
    assert outcome_counters(Outcome("retry", delay_s=2, error=cloudq.Retry())) == ["jobs_retried"]
    exhausted = Outcome("dead_letter", reason=dead_letter_reason("max_retries_exceeded", boom, 4, "q"), error=boom)
    assert outcome_counters(exhausted) == ["jobs_dead_lettered", "jobs_failed"]
    poison = Outcome("dead_letter", reason=dead_letter_reason("bad_arguments", boom, 1, "q"), error=boom)
    assert outcome_counters(poison) == ["jobs_dead_lettered"]
    assert outcome_counters(Outcome("cancelled", error=boom)) == ["jobs_cancelled"]
    assert outcome_counters(Outcome("duplicate")) == ["jobs_duplicate"]
    assert set(outcome_counters(Outcome("reschedule", delay_s=900))) <= set(METRICS)

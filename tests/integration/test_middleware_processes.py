"""Middleware across processes on LocalStack: a header added by a producer process reaches on_job in a
`cloudq worker` process and in the Lambda handler, with the hooks called in the same order on both."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.runtimes.lambda_local import EventSourceMapping

from .conftest import ensure_queues

APP_SOURCE = '''
import json, os
import cloudq


class Tenant(cloudq.Middleware):
    """Producer side: stamps the tenant of the process that enqueues."""

    def on_enqueue(self, envelope):
        return envelope.with_headers(tenant=os.environ.get("TENANT", "none"))


class Recorder(cloudq.Middleware):
    def __init__(self, name):
        self.name = name

    def _write(self, *parts):
        with open(os.environ["MW_LOG"], "a") as f:
            f.write(" ".join([self.name, *parts]) + "\\n")

    async def on_job(self, job, call_next):
        self._write("job-in", job.headers.get("tenant", "-"))
        try:
            return await call_next()
        finally:
            self._write("job-out")

    def on_outcome(self, job, outcome):
        self._write("outcome", outcome.kind)


app = cloudq.App("mw", middleware=[Tenant(), Recorder("a")])
app.add_middleware(Recorder("b"))


@app.task(name="mw.t")
def t():
    job = cloudq.current_job()
    with open(os.environ["MW_LOG"], "a") as f:
        f.write(f"task {job.headers['tenant']} attempt={job.attempt}\\n")
'''

EXPECTED = ["a job-in acme", "b job-in acme", "task acme attempt=1", "b job-out", "a job-out", "a outcome ack", "b outcome ack"]


@pytest.fixture
def mw_env(make_settings: Any, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "mw_app.py").write_text(APP_SOURCE)
    settings = make_settings()
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "CLOUDQ_BROKER": "sqs",
        "CLOUDQ_ENDPOINT_URL": str(settings.endpoint_url),
        "CLOUDQ_REGION": "us-east-1",
        "CLOUDQ_QUEUE_PREFIX": settings.queue_prefix,
        "CLOUDQ_WAIT_TIME_S": "1",
        "CLOUDQ_LOG_FORMAT": "json",
    }
    app = cloudq.App("mw", settings=settings)
    app.task(name="mw.t")(lambda: None)
    ensure_queues(app)
    return env


def produce(env: dict[str, str], cwd: Path) -> None:
    """Enqueue one job from a process of its own, whose Tenant middleware stamps 'acme'."""
    subprocess.run([sys.executable, "-c", "import mw_app; mw_app.t.delay()"], env={**env, "TENANT": "acme"}, cwd=cwd, check=True, timeout=60)


def test_header_from_a_producer_process_reaches_on_job_in_a_worker_process(mw_env: dict[str, str], tmp_path: Path) -> None:
    """on_enqueue in one process, on_job/on_outcome in a `cloudq worker --burst` process, in the documented order."""
    log = tmp_path / "worker.log"
    produce(mw_env, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "cloudq", "worker", "mw_app:app", "--burst"],
        env={**mw_env, "MW_LOG": str(log)}, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().splitlines() == EXPECTED


def test_header_from_a_producer_process_reaches_on_job_in_the_lambda_handler(
    mw_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same app as a Lambda handler (fed real SQS records by lambda-local): the same hooks in the same order."""
    log = tmp_path / "lambda.log"
    produce(mw_env, tmp_path)
    for name, value in mw_env.items():
        if name.startswith("CLOUDQ_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("MW_LOG", str(log))
    spec = importlib.util.spec_from_file_location("mw_app_lambda", tmp_path / "mw_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: cloudq.App = module.app
    try:
        stats = EventSourceMapping(app, burst=True).run()
    finally:
        app.lambda_handler.close()
    assert (stats.records, stats.deleted) == (1, 1)
    assert log.read_text().splitlines() == EXPECTED

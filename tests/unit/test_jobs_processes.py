"""Job state shared by processes on one local broker file: unique jobs and the SIGKILL duplicate.

* Two producer processes enqueue the same unique job at the same instant: both get one JobRef, and one
  message is sent.
* A worker is SIGKILLed after its job succeeded (state recorded) but before its batched delete: the message
  comes back, and the next worker acks it without running the task again. That order (recorded, then
  deleted) is the consumer's own, on every broker but one: the local broker with the local store writes the
  end state inside the delete's transaction (tests/unit/test_jobs_ledger.py), where recorded-not-deleted
  cannot happen. This test signs its jobs, which keeps the consumer's order on the local broker too.

The DynamoDB twins of both (moto_server, LocalStack) are in tests/integration/test_jobs_aws.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cloudq
from cloudq import testing

pytestmark = pytest.mark.unit

APP_MODULE = '''
import os
import cloudq

app = cloudq.App("jobprocs")
RAN = {ran!r}

@app.task(name="rebuild", unique=True)
def rebuild(index: str) -> str:
    fd = os.open(RAN, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{{index}},{{os.getpid()}}\\n".encode())
    os.close(fd)
    return index.upper()
'''

ENQUEUE_AT = '''
import sys, time
sys.path.insert(0, {dir!r})
from jobapp import rebuild
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
print(rebuild.delay("products").id, flush=True)
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobapp.py").write_text(APP_MODULE.format(ran=str(tmp_path / "ran.txt")))
    return tmp_path


def env(project: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    return {**base, "PYTHONPATH": str(project), "CLOUDQ_LOCAL_PATH": str(project / "q.db"), "CLOUDQ_WAIT_TIME_S": "1", **extra}


SIGNING_KEY = "test-signing-key-0123456789abcdef"


def local_app(project: Path, **settings: str) -> cloudq.App:
    """The module's app (its tasks registered), on this test's broker file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"jobapp_{project.name}", project / "jobapp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: cloudq.App = module.app
    app.settings = cloudq.Settings(broker="local", local_path=str(project / "q.db"), **settings)
    return app


def test_two_processes_enqueueing_one_unique_job_at_once_get_the_same_ref(project: Path) -> None:
    script = project / "enqueue_at.py"
    script.write_text(ENQUEUE_AT.format(dir=str(project)))
    for round_ in range(3):
        start = time.time() + 1.5  # both interpreters are up by then, and enqueue in the same instant
        procs = [subprocess.Popen([sys.executable, str(script), str(start)], env=env(project), stdout=subprocess.PIPE, text=True) for _ in range(2)]
        ids = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert all(p.returncode == 0 for p in procs)
        assert ids[0] == ids[1] and ids[0], ids
        app = local_app(project)
        assert len(testing.enqueued(app, "rebuild")) == 1, f"round {round_}"
        testing.drain(app)  # the job ends and releases its key for the next round
        assert app.job(ids[0]).status().status == "succeeded"
        app.close()


def test_the_duplicate_a_sigkill_leaves_is_not_run_twice(project: Path) -> None:
    app = local_app(project, signing_keys=SIGNING_KEY)
    ref = app.enqueue("rebuild", "orders")
    # Deletes wait up to 30 s to batch: the SIGKILL lands after the success is recorded, before the delete.
    worker_env = env(project, CLOUDQ_DELETE_FLUSH_S="30", CLOUDQ_VISIBILITY_TIMEOUT_S="2", CLOUDQ_SIGNING_KEYS=SIGNING_KEY)
    worker = subprocess.Popen([sys.executable, "-m", "cloudq", "worker", "jobapp:app"], env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while app.job(ref.id).status().status != "succeeded":
            assert time.monotonic() < deadline, "the job did not succeed"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert len(testing.enqueued(app, "rebuild")) == 1  # still there: its delete never happened
    physical = app.settings.queue_name("default")
    while app.broker.stats(physical).visible != 1:  # type: ignore[attr-defined]  # back after its 2 s visibility
        assert time.monotonic() < deadline + 30
        time.sleep(0.1)
    again = subprocess.run([sys.executable, "-m", "cloudq", "worker", "jobapp:app", "--burst"], env=env(project, CLOUDQ_WAIT_TIME_S="3", CLOUDQ_SIGNING_KEYS=SIGNING_KEY),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr
    runs = (project / "ran.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in runs] == ["orders"]  # ran once, by the killed worker
    assert testing.enqueued(app, "rebuild") == [], again.stdout  # the duplicate was acked
    assert ref.result(timeout=1) == "ORDERS"
    stopped = [json.loads(line) for line in again.stdout.splitlines() if '"worker.stopped"' in line]
    assert stopped and stopped[0]["received"] == 1 and stopped[0]["succeeded"] == 0
    app.close()

"""``cloudq worker`` processes sharing one local broker file: no job runs twice, none is lost.

The broker-level twins live in test_local_broker_processes.py; these run the real CLI worker.
Each worker is a subprocess of ``python -m cloudq worker`` on a tiny app module written into
tmp_path, whose tasks append ``job,pid`` lines to a file opened with O_APPEND (one write per
line, so lines from several processes never interleave).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cloudq

pytestmark = pytest.mark.unit

APP_MODULE = '''
import os
import time

import cloudq

app = cloudq.App("procs")
RAN = {ran!r}
HOLD = {hold!r}


def note(line: str) -> None:
    fd = os.open(RAN, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{{line}},{{os.getpid()}}\\n".encode())
    finally:
        os.close(fd)


@app.task(name="record")
def record(job: int) -> None:
    time.sleep(0.01)
    note(str(job))


@app.task(name="hold")
def hold(job: int) -> None:
    note(f"start-{{job}}")
    while os.path.exists(HOLD):
        time.sleep(0.05)
    note(f"done-{{job}}")
'''


class Procs:
    """The app module, its broker file, and the worker processes started for one test."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.db = tmp_path / "broker.db"
        self.ran = tmp_path / "ran.txt"
        self.hold_file = tmp_path / "hold"
        (tmp_path / "procapp.py").write_text(APP_MODULE.format(ran=str(self.ran), hold=str(self.hold_file)))
        self.started: list[subprocess.Popen[bytes]] = []
        self.app = cloudq.App("procs", settings=cloudq.Settings(broker="local", local_path=str(self.db)))
        self.record = self.app.task(name="record")(lambda job: None)
        self.hold = self.app.task(name="hold")(lambda job: None)

    def worker(self, *args: str, visibility_timeout_s: int = 30) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
        env.update(
            CLOUDQ_BROKER="local",
            CLOUDQ_LOCAL_PATH=str(self.db),
            CLOUDQ_VISIBILITY_TIMEOUT_S=str(visibility_timeout_s),
            CLOUDQ_LOG_FORMAT="json",
        )
        log = open(self.dir / f"worker-{len(self.started)}.log", "wb")  # noqa: SIM115 - the child owns it
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "cloudq", "worker", "procapp:app", *args],
                cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started.append(process)
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return (self.dir / f"worker-{self.started.index(process)}.log").read_text()

    def wait_started(self, process: subprocess.Popen[bytes]) -> None:
        try:
            wait_for(lambda: "worker.started" in self.log(process), f"worker {process.pid} to start")
        except pytest.fail.Exception:
            pytest.fail(f"worker {process.pid} did not start (exit code {process.poll()}); its log:\n{self.log(process)[-3000:]}")

    def lines(self) -> list[tuple[str, int]]:
        if not self.ran.exists():
            return []
        return [(job, int(pid)) for job, pid in (line.split(",") for line in self.ran.read_text().splitlines())]

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        self.app.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    procs = Procs(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_two_worker_processes_run_each_job_exactly_once(procs: Procs) -> None:
    """Two workers consuming while a third process produces 200 jobs run every job once, and both take part."""
    workers = [procs.worker(), procs.worker()]
    for process in workers:
        procs.wait_started(process)

    procs.record.map(range(200))
    wait_for(lambda: len(procs.lines()) >= 200, "200 jobs to run")
    time.sleep(0.3)  # room for a (wrong) second run of some job to show up
    for process in workers:
        process.send_signal(signal.SIGTERM)
    exit_codes = [process.wait(timeout=10) for process in workers]

    runs = Counter(job for job, _ in procs.lines())
    logs = [procs.log(p)[-3000:] for p in workers]  # shown if an assertion fails
    assert {job: n for job, n in runs.items() if n != 1} == {}, logs
    assert set(runs) == {str(i) for i in range(200)}, logs
    assert {pid for _, pid in procs.lines()} == {p.pid for p in workers}, logs
    assert exit_codes == [0, 0], logs


def test_a_job_survives_its_worker_being_killed(procs: Procs) -> None:
    """SIGKILL mid-job loses nothing: after the 1 s visibility timeout a new worker runs that job and the pending ones."""
    procs.hold_file.touch()
    procs.hold.delay(0)
    procs.record.map(range(1, 6))
    first = procs.worker("--concurrency", "1", visibility_timeout_s=1)
    wait_for(lambda: ("start-0", first.pid) in procs.lines(), "the first worker to start job 0")
    time.sleep(1.5)  # past the 1 s visibility timeout: the heartbeat keeps the running job invisible
    stats = procs.app.broker.stats("default")
    assert (stats.in_flight, stats.visible) == (1, 5)

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=5)
    procs.hold_file.unlink()
    second = procs.worker("--max-tasks", "6", visibility_timeout_s=1)
    assert second.wait(timeout=15) == 0, procs.log(second)[-2000:]

    lines = procs.lines()
    assert lines[0] == ("start-0", first.pid)
    assert ("done-0", first.pid) not in lines
    assert sorted(job for job, pid in lines if pid == second.pid) == ["1", "2", "3", "4", "5", "done-0", "start-0"]
    stats = procs.app.broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)

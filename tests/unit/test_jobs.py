"""Job state through the consumer core, on the memory broker with the memory job store.

What the issue promises, one behaviour per test: status through every state, results of sync and async
tasks, JobFailed with the DLQ reason, cancel before start / while waiting for a retry / while running
(async and sync), unique jobs, idempotency, progress, results that cannot be stored, track=False, and a
store that fails without losing or repeating a run. The same stores' own semantics are the contract
suite's (tests/contract/test_job_store_contract.py); processes sharing a local store are in
test_jobs_processes.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq import testing
from cloudq.brokers.base import OutgoingMessage
from cloudq.errors import BrokerUnavailable
from cloudq.jobs.sqlite import SqliteJobStore


@pytest.fixture
def app() -> Iterator[cloudq.App]:
    built = cloudq.App("jobs", settings=cloudq.Settings(broker="memory", job_store="memory", job_cancel_check_s=0.02, retry_backoff_s=1))
    yield built
    built.close()


def test_default_store_is_local_with_the_local_broker_and_none_on_sqs(tmp_path: Any) -> None:
    local = cloudq.App("a", settings=cloudq.Settings(broker="local", local_path=str(tmp_path / "b.db")))
    assert local.job_store is not None and local.job_store.kind == "local"
    assert cloudq.App("b", settings=cloudq.Settings(broker="sqs")).job_store is None
    assert cloudq.App("c", settings=cloudq.Settings(broker="sqs", job_store="memory")).job_store.kind == "memory"  # type: ignore[union-attr]


def test_status_goes_queued_running_succeeded_with_the_result(app: cloudq.App) -> None:
    seen: list[str] = []

    @app.task
    def charge(customer: str, cents: int) -> dict[str, Any]:
        seen.append(app.job(cloudq.current_job().id).status().status)  # type: ignore[union-attr]
        return {"customer": customer, "cents": cents}

    ref = charge.delay("c1", 100)
    queued = ref.status()
    assert (queued.status, queued.task, queued.queue, queued.attempts) == ("queued", charge.name, "default", 0)
    testing.drain(app)
    assert seen == ["running"]
    state = ref.status()
    assert (state.status, state.attempts, state.result) == ("succeeded", 1, {"customer": "c1", "cents": 100})
    assert state.enqueued_at <= state.started_at <= state.finished_at  # type: ignore[operator]
    assert ref.result(timeout=1) == {"customer": "c1", "cents": 100}


async def test_an_async_task_result_is_awaited(app: cloudq.App) -> None:
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    ref = await double.adelay(21)
    await testing.adrain(app)
    assert await ref.aresult(timeout=1) == 42
    assert (await ref.astatus()).status == "succeeded"


def test_a_retry_shows_retrying_then_the_dead_letter_raises_job_failed(app: cloudq.App) -> None:
    states: list[str] = []

    @app.task(max_retries=1)
    def flaky() -> None:
        job = cloudq.current_job()
        assert job is not None
        if job.attempt > 1:
            states.append(app.job(job.id).status().status)
        raise ValueError("card declined")

    ref = flaky.delay()
    stats = testing.drain(app)
    assert (stats.retried, stats.dead_lettered) == (1, 1)
    assert states == ["running"]  # attempt 2 runs after "retrying" was recorded and claimed again
    state = ref.status()
    assert (state.status, state.attempts) == ("dead_lettered", 2)
    with pytest.raises(cloudq.JobFailed, match="max_retries_exceeded.*ValueError: card declined") as failed:
        ref.result(timeout=1)
    assert (failed.value.reason, failed.value.error_type, failed.value.error_message) == ("max_retries_exceeded", "ValueError", "card declined")


def test_poison_dead_letters_with_its_reason(app: cloudq.App) -> None:
    @app.task
    def picky(x: int) -> None:
        raise cloudq.Reject("not today")

    ref = picky.delay(1)
    testing.drain(app)
    with pytest.raises(cloudq.JobFailed) as failed:
        ref.result(timeout=1)
    assert failed.value.reason == "rejected" and failed.value.status == "dead_lettered"


def test_result_of_an_unknown_job_raises_job_not_found_at_once(app: cloudq.App, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the store's first answer, not after polling out the 30 s timeout: one read, no pause."""
    store = app.job_store
    assert store is not None
    reads: list[str] = []
    get = store.get
    monkeypatch.setattr(store, "get", lambda job_id: reads.append(job_id) or get(job_id))
    monkeypatch.setattr("cloudq.jobs.ref.time.sleep", lambda s: reads.append(f"slept {s}"))
    with pytest.raises(cloudq.JobNotFound):
        app.job("never-enqueued").result(timeout=30)
    assert reads == ["never-enqueued"]
    with pytest.raises(cloudq.JobNotFound):
        app.job("never-enqueued").cancel()


def test_result_times_out_while_the_job_waits(app: cloudq.App) -> None:
    @app.task
    def slow() -> None: ...

    with pytest.raises(TimeoutError, match="did not finish within 0.2s"):
        slow.delay().result(timeout=0.2)


def test_without_a_store_the_api_says_how_to_get_one() -> None:
    app = cloudq.App("none", settings=cloudq.Settings(broker="memory"))

    @app.task
    def noop() -> None: ...

    with pytest.raises(cloudq.ConfigurationError, match="CLOUDQ_JOB_STORE"):
        noop.delay().status()


def test_cancel_before_start_means_it_never_runs(app: cloudq.App) -> None:
    ran: list[int] = []

    @app.task
    def work(n: int) -> None:
        ran.append(n)

    keep, drop = work.delay(1), work.delay(2)
    assert drop.cancel() is True
    assert drop.status().status == "cancelled"
    stats = testing.drain(app)
    assert ran == [1] and stats.cancelled == 1
    assert keep.status().status == "succeeded"
    with pytest.raises(cloudq.JobCancelled):
        drop.result(timeout=1)
    assert drop.cancel() is False  # it has ended


def test_cancel_of_a_delayed_job(app: cloudq.App) -> None:
    ran: list[int] = []

    @app.task
    def later() -> None:
        ran.append(1)

    ref = later.with_options(delay=600).delay()
    assert ref.cancel() is True
    testing.drain(app)  # the memory broker's clock jumps past the delay
    assert ran == [] and ref.status().status == "cancelled"


async def test_cancel_while_waiting_for_a_retry(app: cloudq.App) -> None:
    ran: list[int] = []

    @app.task
    def flaky() -> None:
        ran.append(1)
        raise ValueError("boom")

    ref = flaky.delay()
    broker = app.broker
    queue = app.settings.queue_name("default")
    (delivery,) = await broker.receive(queue, max_messages=1, wait_s=0)
    settled = await app.consumer.process(delivery, "default")
    assert settled.outcome.kind == "retry" and ref.status().status == "retrying"
    assert ref.cancel() is True
    await broker.change_visibility(queue, [delivery], 0)
    (again,) = await broker.receive(queue, max_messages=1, wait_s=0)
    settled = await app.consumer.process(again, "default")
    assert settled.outcome.kind == "cancelled" and settled.done
    assert ran == [1] and ref.status().status == "cancelled"


def test_cancel_of_a_running_async_task_cancels_it_at_the_next_check(app: cloudq.App) -> None:
    finished: list[bool] = []

    @app.task
    async def long_one() -> None:
        job = cloudq.current_job()
        assert job is not None
        threading.Thread(target=app.job(job.id).cancel).start()
        await asyncio.sleep(30)
        finished.append(True)

    ref = long_one.delay()
    stats = testing.drain(app, timeout=10)
    assert stats.cancelled == 1 and finished == []
    state = ref.status()
    assert state.status == "cancelled" and not state.cancel_requested


def test_cancel_of_a_running_sync_task_is_seen_by_the_task(app: cloudq.App) -> None:
    polls: list[int] = []

    @app.task
    def cooperative() -> str:
        job = cloudq.current_job()
        assert job is not None and not job.cancelled
        assert app.job(job.id).cancel() is True
        for _ in range(1000):  # 10 s at most: a thread that never ends would hang the run at its exit
            if job.cancelled:
                break
            polls.append(1)
            time.sleep(0.01)
        return "stopped early"

    ref = cooperative.delay()
    stats = testing.drain(app, timeout=10)
    assert stats.cancelled == 1 and polls
    assert ref.status().status == "cancelled"


def test_progress_is_stored_and_shown(app: cloudq.App) -> None:
    progress: list[Any] = []

    @app.task
    def resize(n: int) -> None:
        job = cloudq.current_job()
        assert job is not None
        job.progress(0.4, "resized 4 of 10")
        state = app.job(job.id).status()
        progress.append((state.progress, state.progress_message))

    @app.task
    async def aresize() -> None:
        job = cloudq.current_job()
        assert job is not None
        job.progress(0.5, "half")
        await asyncio.sleep(0.05)

    ref, aref = resize.delay(10), aresize.delay()
    testing.drain(app)
    assert progress == [(0.4, "resized 4 of 10")]
    assert (aref.status().progress, aref.status().progress_message) == (0.5, "half")
    assert ref.status().progress == 0.4


def test_progress_out_of_range_fails_the_run_with_a_clear_error(app: cloudq.App) -> None:
    @app.task(max_retries=0)
    def bad() -> None:
        cloudq.current_job().progress(4, "oops")  # type: ignore[union-attr]

    ref = bad.delay()
    testing.drain(app)
    with pytest.raises(cloudq.JobFailed, match="progress must be a number from 0 to 1"):
        ref.result(timeout=1)


def test_unique_jobs_share_one_ref_until_the_job_ends(app: cloudq.App) -> None:
    runs: list[str] = []

    @app.task(unique=True)
    def rebuild(index: str) -> None:
        runs.append(index)

    @app.task(unique_key=lambda user, **_: f"user-{user}")
    def sync_user(user: int, full: bool = False) -> None: ...

    first = rebuild.delay("products")
    again = rebuild.delay("products")
    other = rebuild.delay("orders")
    assert again.id == first.id and again.message_id == "" and other.id != first.id
    assert sync_user.delay(7).id == sync_user.delay(7, full=True).id
    assert rebuild.with_options(unique_key="x").delay("a").id == rebuild.with_options(unique_key="x").delay("b").id
    assert len(testing.enqueued(app, rebuild)) == 3  # products, orders, x
    testing.drain(app)
    assert sorted(runs) == ["a", "orders", "products"]
    assert rebuild.delay("products").id != first.id  # the key was released when the job ended


def test_a_delivery_of_a_job_that_already_succeeded_is_acked_without_running(app: cloudq.App) -> None:
    runs: list[int] = []

    @app.task
    def once() -> int:
        runs.append(1)
        return 7

    ref = once.delay()
    (envelope,) = testing.enqueued(app, once)
    testing.drain(app)
    app.broker.send(app.settings.queue_name("default"), [OutgoingMessage(envelope.encode())])
    stats = testing.drain(app)  # the duplicate a SIGKILL after the run (before the delete) leaves
    assert runs == [1] and stats.skipped == 1 and stats.succeeded == 0
    assert ref.result(timeout=1) == 7


def test_results_that_cannot_be_stored_say_so(app: cloudq.App, monkeypatch: pytest.MonkeyPatch) -> None:
    @app.task
    def weird() -> object:
        return object()

    @app.task
    def huge() -> str:
        return "x" * 2_000_000

    refs = weird.delay(), huge.delay()
    with capture_logs() as logs:
        testing.drain(app)
    for ref, why in zip(refs, ("not JSON-serializable", "over the job store's limit")):
        state = ref.status()
        assert state.status == "succeeded" and state.result is None and why in (state.result_error or "")
        with pytest.raises(cloudq.ResultUnavailable, match=why):
            ref.result(timeout=1)
    assert [e["event"] for e in logs].count("job.result_not_stored") == 2


def test_untracked_tasks_never_touch_the_store(app: cloudq.App) -> None:
    @app.task(track=False)
    def hot() -> None: ...

    ref = hot.delay()
    testing.drain(app)
    assert app.job_store.list() == []  # type: ignore[union-attr]
    with pytest.raises(cloudq.JobNotFound):
        ref.status()


class _FailingStore(SqliteJobStore):
    """A job store whose every call fails as an unreachable DynamoDB would."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("put_queued", "claim", "finish", "apply", "set_progress", "cancel_requested"):
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise BrokerUnavailable("dynamodb endpoint unreachable")

            return fail
        return super().__getattribute__(name)


def test_an_unreachable_store_never_loses_or_repeats_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cloudq.jobs.tracker._RETRY_S", 0.3)
    monkeypatch.setattr("cloudq.jobs.enqueue._QUEUED_RETRY_S", 0.3)
    app = cloudq.App("down", settings=cloudq.Settings(broker="memory", job_store="memory"))
    app.use_job_store(_FailingStore(":memory:", ttl_s=60, kind="memory"))
    runs: list[int] = []

    @app.task
    def work() -> None:
        runs.append(1)

    with capture_logs() as logs:
        work.delay()
        stats = testing.drain(app)
    assert runs == [1] and stats.succeeded == 1 and not stats.errors
    dropped = [e for e in logs if e["event"] == "job.state_dropped"]
    assert {e["call"] for e in dropped} == {"queued", "claim", "finish"}
    assert all(e["log_level"] == "warning" for e in dropped)


def test_the_lambda_handler_uses_the_same_store(app: cloudq.App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    ref = add.delay(2, 3)
    (envelope,) = testing.enqueued(app, add)
    record = {"messageId": "m-1", "receiptHandle": "r-1", "body": envelope.encode(), "attributes": {"ApproximateReceiveCount": "1"},
              "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:default"}  # fmt: skip
    answer = app.lambda_handler({"Records": [record]}, None)
    assert answer == {"batchItemFailures": []}
    assert ref.result(timeout=1) == 5
    assert app.lambda_handler({"Records": [{**record, "messageId": "m-2"}]}, None) == {"batchItemFailures": []}
    assert ref.status().attempts == 1  # the second delivery was a duplicate: acked, not run


def test_job_state_round_trips_to_json(app: cloudq.App) -> None:
    import json

    @app.task
    def noop() -> int:
        return 1

    ref = noop.delay()
    testing.drain(app)
    data = json.loads(json.dumps(ref.status().to_dict()))
    assert data["status"] == "succeeded" and data["result"] == 1 and data["finished_at"].endswith("+00:00")


def test_a_bad_job_id_is_a_clear_error(app: cloudq.App) -> None:
    with pytest.raises(cloudq.ConfigurationError, match="job id"):
        app.job("")


def test_job_is_unchanged_for_untracked_runs() -> None:
    job = cloudq.Job("id", "t", "q", 1, "m")
    job.progress(0.5, "ignored")
    assert job.cancelled is False


def test_an_eventbridge_direct_invocation_records_its_job(app: cloudq.App) -> None:
    """No queue: a job that fails for good is `failed` (not dead-lettered), one that succeeds keeps its result."""
    import json
    from pathlib import Path

    event = json.loads((Path(__file__).parent.parent / "events" / "eventbridge_s3_object_created.json").read_text())

    @app.on_event("aws.s3", "Object Created")
    def on_upload(event: dict[str, Any]) -> str:
        return str(event["detail"]["object"]["key"])

    @app.on_event("aws.s3")
    def refuse(event: dict[str, Any]) -> None:
        raise cloudq.Reject("not this bucket")

    answer = app.lambda_handler(event, None)
    assert answer["ok"] is False
    states = {s.task: s for s in app.job_store.list()}  # type: ignore[union-attr]
    assert states[on_upload.name].status == "succeeded" and states[on_upload.name].result == "example-key"
    failed = states[refuse.name]
    assert failed.status == "failed" and failed.error is not None and failed.error.reason == "rejected"


def test_lambda_local_runs_through_the_same_store(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    import textwrap

    (tmp_path / "llapp.py").write_text(textwrap.dedent('''
        import cloudq
        app = cloudq.App("ll")

        @app.task(name="square")
        def square(x: int) -> int:
            return x * x
    '''))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}, "PYTHONPATH": str(tmp_path),
           "CLOUDQ_LOCAL_PATH": str(tmp_path / "q.db"), "CLOUDQ_WAIT_TIME_S": "1"}  # fmt: skip
    sent = subprocess.run([sys.executable, "-m", "cloudq", "enqueue", "llapp:app", "square", "--args", "[7]"], env=env, capture_output=True, text=True, timeout=60)
    job_id = json.loads(sent.stdout)["id"]
    done = subprocess.run([sys.executable, "-m", "cloudq", "lambda-local", "llapp:app", "--burst"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = subprocess.run([sys.executable, "-m", "cloudq", "job", "llapp:app", job_id, "--json"], env=env, capture_output=True, text=True, timeout=60)
    state = json.loads(shown.stdout)
    assert (state["status"], state["result"], state["attempts"]) == ("succeeded", 49, 1)

"""The job store contract: one suite, run against every store (memory, local SQLite, DynamoDB on moto_server).

Each call's meaning is the table in cloudq/jobs/store.py. The DynamoDB case is marked integration: it
talks to moto's standalone server over HTTP (`make test` starts one), with a fresh table per test.
Every store follows the fixture's fake clock, so expiry is tested without waiting.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudq.errors import ConfigurationError
from cloudq.jobs.dynamodb import DynamoJobStore
from cloudq.jobs.sqlite import SqliteJobStore
from cloudq.jobs.state import Finish, JobError, NewJob
from cloudq.jobs.store import JobStore

TTL_S = 3600


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _dynamodb(request: pytest.FixtureRequest, clock: Clock, tmp_path: Path) -> JobStore:
    endpoint = request.getfixturevalue("dynamodb_endpoint")
    from cloudq.aws.clients import client
    from cloudq.jobs.dynamodb import _Endpoint

    store = DynamoJobStore(f"jobs-{uuid.uuid4().hex[:10]}", lambda: client("dynamodb", _Endpoint("us-east-1", endpoint)), ttl_s=TTL_S, clock=clock)
    store.ensure()
    return store


STORES: dict[str, Callable[[pytest.FixtureRequest, Clock, Path], JobStore]] = {
    "memory": lambda request, clock, tmp: SqliteJobStore(":memory:", ttl_s=TTL_S, kind="memory", clock=clock),
    "local": lambda request, clock, tmp: SqliteJobStore(str(tmp / "broker.db"), ttl_s=TTL_S, clock=clock),
    "dynamodb": _dynamodb,
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=[
    "memory", "local", pytest.param("dynamodb", marks=pytest.mark.integration),
])  # fmt: skip
def store(request: pytest.FixtureRequest, clock: Clock, tmp_path: Path) -> Iterator[JobStore]:
    built = STORES[request.param](request, clock, tmp_path)
    yield built
    built.close()


def new_job(clock: Clock, task: str = "shop.charge", key: str | None = None) -> NewJob:
    return NewJob(uuid.uuid4().hex, task, "billing", clock.now, key)


def claim(store: JobStore, job: NewJob, attempt: int = 1, *, record: bool = True) -> Any:
    return store.claim(job.id, task=job.task, queue=job.queue, attempt=attempt, enqueued_at=job.enqueued_at, record=record)


def end(status: Any, job: NewJob, **fields: Any) -> Finish:
    return Finish(status, job.task, job.queue, fields.pop("attempts", 1), job.enqueued_at, unique_key=job.unique_key, **fields)


def test_queued_records_are_read_back(store: JobStore, clock: Clock) -> None:
    jobs = [new_job(clock) for _ in range(30)]  # over DynamoDB's 25 per BatchWriteItem
    store.put_queued(jobs)
    state = store.get(jobs[0].id)
    assert state is not None
    assert (state.status, state.task, state.queue, state.attempts) == ("queued", "shop.charge", "billing", 0)
    assert state.enqueued_at is not None and state.enqueued_at.timestamp() == pytest.approx(clock.now)
    assert all(store.get(j.id) is not None for j in jobs)
    assert store.get("no-such-job") is None


def test_claim_makes_a_job_running_and_reports_what_it_was(store: JobStore, clock: Clock) -> None:
    job = new_job(clock)
    store.put_queued([job])
    assert claim(store, job).previous == "queued"
    state = store.get(job.id)
    assert state is not None and (state.status, state.attempts) == ("running", 1) and state.started_at is not None
    assert claim(store, job, attempt=2).previous == "running"  # a redelivery after a crash runs again
    assert store.get(job.id).attempts == 2  # type: ignore[union-attr]


def test_claim_of_a_job_no_producer_recorded_creates_it(store: JobStore, clock: Clock) -> None:
    job = new_job(clock)  # a job sent by a plain boto3 program: no queued record
    assert claim(store, job).previous is None
    state = store.get(job.id)
    assert state is not None and (state.status, state.task, state.queue) == ("running", "shop.charge", "billing")


@pytest.mark.parametrize("final", ["succeeded", "cancelled"])
def test_claim_leaves_a_succeeded_or_cancelled_job_alone(store: JobStore, clock: Clock, final: str) -> None:
    job = new_job(clock)
    store.put_queued([job])
    if final == "succeeded":
        claim(store, job)
        store.finish(job.id, end("succeeded", job, result_json="42"))
    else:
        assert store.request_cancel(job.id) is True
    assert claim(store, job, attempt=2).previous == final
    state = store.get(job.id)
    assert state is not None and state.status == final and state.attempts in (0, 1)


def test_claim_without_recording_only_reads(store: JobStore, clock: Clock) -> None:
    job = new_job(clock)
    store.put_queued([job])
    assert claim(store, job, record=False).previous == "queued"
    assert store.get(job.id).status == "queued"  # type: ignore[union-attr]
    assert claim(store, new_job(clock), record=False).previous is None


def test_an_end_state_of_an_earlier_attempt_never_overwrites_a_later_one(store: JobStore, clock: Clock) -> None:
    """Attempt 1's ``retrying`` written late (its write retried while attempt 2 ran and succeeded) is
    dropped: the job stays succeeded, and its next delivery is not run again."""
    job = new_job(clock)
    store.put_queued([job])
    claim(store, job, attempt=1)
    claim(store, job, attempt=2)
    store.finish(job.id, end("succeeded", job, attempts=2, result_json="42"))
    store.finish(job.id, end("retrying", job, attempts=1, error=JobError("ValueError", "late")))
    state = store.get(job.id)
    assert state is not None and (state.status, state.attempts, state.result, state.error) == ("succeeded", 2, 42, None)
    assert claim(store, job, attempt=3).previous == "succeeded"


def test_finish_records_result_and_error(store: JobStore, clock: Clock) -> None:
    ok, bad = new_job(clock), new_job(clock)
    store.put_queued([ok, bad])
    claim(store, ok)
    claim(store, bad)
    store.finish(ok.id, end("succeeded", ok, result_json='{"total": 1.5, "items": ["a"]}'))
    store.finish(bad.id, end("retrying", bad, error=JobError("ValueError", "card declined")))
    retrying = store.get(bad.id)
    assert retrying is not None and retrying.status == "retrying" and retrying.finished_at is None
    assert retrying.error == JobError("ValueError", "card declined")
    claim(store, bad, attempt=4)
    store.finish(bad.id, end("dead_lettered", bad, attempts=4, error=JobError("ValueError", "card declined", "max_retries_exceeded")))
    state = store.get(ok.id)
    assert state is not None and state.status == "succeeded" and state.result == {"total": 1.5, "items": ["a"]}
    assert state.finished_at is not None and state.error is None
    dead = store.get(bad.id)
    assert dead is not None and (dead.status, dead.attempts) == ("dead_lettered", 4)
    assert dead.error is not None and dead.error.reason == "max_retries_exceeded"


def test_finish_keeps_a_result_error(store: JobStore, clock: Clock) -> None:
    job = new_job(clock)
    claim(store, job)
    store.finish(job.id, end("succeeded", job, result_error="result is not JSON-serializable"))
    state = store.get(job.id)
    assert state is not None and state.status == "succeeded" and state.result is None
    assert state.result_error == "result is not JSON-serializable"


def test_cancel_of_a_waiting_job_ends_it(store: JobStore, clock: Clock) -> None:
    queued, retrying = new_job(clock), new_job(clock)
    store.put_queued([queued, retrying])
    claim(store, retrying)
    store.finish(retrying.id, end("retrying", retrying, error=JobError("E", "m")))
    assert store.request_cancel(queued.id) is True
    assert store.request_cancel(retrying.id) is True
    assert [store.get(j.id).status for j in (queued, retrying)] == ["cancelled", "cancelled"]  # type: ignore[union-attr]
    assert store.request_cancel(queued.id) is False  # already ended


def test_cancel_of_a_running_job_is_a_request(store: JobStore, clock: Clock) -> None:
    running, other = new_job(clock), new_job(clock)
    store.put_queued([running, other])
    claim(store, running)
    claim(store, other)
    assert store.request_cancel(running.id) is True
    state = store.get(running.id)
    assert state is not None and state.status == "running" and state.cancel_requested
    assert store.cancel_requested([running.id, other.id, "unknown"]) == {running.id}
    assert claim(store, running, attempt=2).cancel_requested  # a redelivery learns of it too
    store.finish(running.id, end("cancelled", running, attempts=2))  # the attempt that runs now ends it
    assert store.cancel_requested([running.id]) == set()


def test_cancel_of_an_ended_or_unknown_job(store: JobStore, clock: Clock) -> None:
    job = new_job(clock)
    claim(store, job)
    store.finish(job.id, end("succeeded", job))
    assert store.request_cancel(job.id) is False
    assert store.request_cancel("no-such-job") is None


def test_progress_is_stored_only_while_running(store: JobStore, clock: Clock) -> None:
    job = new_job(clock)
    store.put_queued([job])
    store.set_progress(job.id, 0.1, "too early")
    assert store.get(job.id).progress is None  # type: ignore[union-attr]
    claim(store, job)
    store.set_progress(job.id, 0.4, "resized 4 of 10")
    state = store.get(job.id)
    assert state is not None and (state.progress, state.progress_message) == (0.4, "resized 4 of 10")
    store.finish(job.id, end("succeeded", job))
    store.set_progress(job.id, 0.5, "late")
    assert store.get(job.id).progress_message == "resized 4 of 10"  # type: ignore[union-attr]


def test_a_unique_key_is_held_until_its_job_ends(store: JobStore, clock: Clock) -> None:
    first, second, third = (new_job(clock, key="shop.charge:c1") for _ in range(3))
    assert store.reserve_unique("shop.charge:c1", first) is None
    assert store.get(first.id).status == "queued"  # type: ignore[union-attr]
    assert store.reserve_unique("shop.charge:c1", second) == first.id
    assert store.get(second.id) is None  # nothing written for the one that was not sent
    claim(store, first)
    assert store.reserve_unique("shop.charge:c1", second) == first.id  # running holds it too
    store.finish(first.id, end("succeeded", first))
    assert store.reserve_unique("shop.charge:c1", third) is None


def test_a_cancelled_job_releases_its_key(store: JobStore, clock: Clock) -> None:
    first, second = new_job(clock, key="k"), new_job(clock, key="k")
    assert store.reserve_unique("k", first) is None
    assert store.request_cancel(first.id) is True
    assert store.reserve_unique("k", second) is None


def test_a_key_whose_job_ended_without_releasing_it_is_taken_over(store: JobStore, clock: Clock) -> None:
    first, second = new_job(clock, key="k"), new_job(clock, key="k")
    assert store.reserve_unique("k", first) is None
    claim(store, first)
    store.finish(first.id, Finish("failed", first.task, first.queue, 1, first.enqueued_at))  # no unique_key: not released
    assert store.reserve_unique("k", second) is None


def test_forget_removes_what_a_failed_send_wrote(store: JobStore, clock: Clock) -> None:
    plain, unique = new_job(clock), new_job(clock, key="k")
    store.put_queued([plain])
    store.reserve_unique("k", unique)
    store.forget([plain, unique])
    assert store.get(plain.id) is None and store.get(unique.id) is None
    assert store.reserve_unique("k", new_job(clock, key="k")) is None


def test_records_expire_after_the_ttl(store: JobStore, clock: Clock) -> None:
    job, keyed = new_job(clock), new_job(clock, key="k")
    store.put_queued([job])
    store.reserve_unique("k", keyed)
    clock.now += TTL_S + 5
    assert store.get(job.id) is None
    assert store.request_cancel(job.id) is None
    assert store.reserve_unique("k", new_job(clock, key="k")) is None  # an expired key is free
    assert claim(store, job).previous is None  # an expired record is no record


def test_list_filters_by_status_and_task_newest_first(store: JobStore, clock: Clock) -> None:
    made = []
    for i in range(6):
        clock.now += 1
        made.append(new_job(clock, task="a" if i % 2 else "b"))
    store.put_queued(made)
    claim(store, made[0])
    store.finish(made[0].id, end("succeeded", made[0]))
    listed = store.list()
    assert [s.id for s in listed] == [j.id for j in reversed(made)]
    assert [s.id for s in store.list(limit=2)] == [made[5].id, made[4].id]
    assert [s.id for s in store.list(task="a")] == [made[5].id, made[3].id, made[1].id]
    assert [s.id for s in store.list(status="succeeded")] == [made[0].id]
    assert store.list(status="failed") == []


@pytest.mark.integration
def test_a_missing_dynamodb_table_is_one_clear_error(dynamodb_endpoint: str) -> None:
    endpoint = dynamodb_endpoint
    from cloudq.aws.clients import client
    from cloudq.jobs.dynamodb import _Endpoint

    store = DynamoJobStore("no-such-table", lambda: client("dynamodb", _Endpoint("us-east-1", endpoint)), ttl_s=TTL_S)
    with pytest.raises(ConfigurationError, match=r"job table 'no-such-table' does not exist .*cloudq queues ensure"):
        store.check()
    with pytest.raises(ConfigurationError, match="no-such-table"):
        store.get("x")

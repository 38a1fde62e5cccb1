"""cloudq.testing: enqueued() shows what waits, drain() runs it in-process without sleeping, eager() runs at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq import testing
from cloudq.brokers.memory import MemoryBroker

pytestmark = pytest.mark.unit


def make_app(broker: Any = None, **settings: Any) -> cloudq.App:
    # A minute of backoff: a drain that waited for it would hit its timeout.
    values: dict[str, Any] = {"broker": "memory", "max_retries": 2, "retry_backoff_s": 60, "queue_prefix": "t-"}
    values.update(settings)
    return cloudq.App("shop", settings=cloudq.Settings(**values), broker=broker or MemoryBroker())


@pytest.fixture
def app() -> cloudq.App:
    return make_app()


@pytest.fixture
def shop(app: cloudq.App) -> Iterator[dict[str, Any]]:
    """The app with a few tasks; ``runs`` records each run, ``fail`` says how many runs of ``flaky`` fail."""
    runs: list[tuple[str, Any]] = []
    state = {"fail": 2}

    @app.task(name="shop.welcome")
    def welcome(email: str) -> None:
        runs.append(("welcome", email))

    @app.task(name="shop.signup")
    async def signup(email: str) -> str:
        runs.append(("signup", email))
        await welcome.adelay(email)
        return email

    @app.task(name="shop.flaky", queue="billing")
    def flaky(n: int) -> None:
        runs.append(("flaky", cloudq.current_job().attempt))  # type: ignore[union-attr]
        if state["fail"] > 0:
            state["fail"] -= 1
            raise ValueError(f"declined {n}")

    yield {"app": app, "runs": runs, "state": state, "welcome": welcome, "signup": signup, "flaky": flaky}


# -- enqueued -------------------------------------------------------------------------------------
def test_enqueued_lists_waiting_envelopes_by_task_without_consuming_them(shop: dict[str, Any]) -> None:
    """enqueued() returns the envelopes in the app's queues, filtered by name or Task, and changes nothing."""
    app = shop["app"]
    shop["welcome"].delay("a@b.c")
    shop["flaky"].delay(1)
    app.enqueue("shop.welcome", "d@e.f")

    everything = testing.enqueued(app)
    by_name = testing.enqueued(app, task="shop.welcome")
    by_task = testing.enqueued(app, task=shop["flaky"])

    assert sorted(e.task for e in everything) == ["shop.flaky", "shop.welcome", "shop.welcome"]
    assert [e.args for e in by_name] == [("a@b.c",), ("d@e.f",)] and all(isinstance(e, cloudq.Envelope) for e in by_name)
    assert [e.args for e in by_task] == [(1,)]
    assert testing.drain(app).succeeded == 3


def test_enqueued_leaves_out_dead_letters(shop: dict[str, Any]) -> None:
    """A job that exhausted its retries sits in the DLQ: it no longer waits to run."""
    shop["state"]["fail"] = 99
    shop["flaky"].delay(1)

    stats = testing.drain(shop["app"])

    assert stats.dead_lettered == 1 and testing.enqueued(shop["app"]) == []
    assert shop["app"].broker.messages("t-billing-dlq")


def test_testing_refuses_a_broker_it_cannot_look_into() -> None:
    """On SQS (or a user's own broker) enqueued and drain say which brokers they need, in one line."""

    class OwnBroker:
        pass

    app = make_app(broker=OwnBroker())
    for helper in (testing.enqueued, testing.drain):
        with pytest.raises(cloudq.ConfigurationError, match="memory or local broker, not OwnBroker"):
            helper(app)


# -- drain ----------------------------------------------------------------------------------------
def test_drain_runs_jobs_and_the_jobs_they_enqueue_until_the_queues_are_empty(shop: dict[str, Any]) -> None:
    """A job that enqueues another: both run within one drain, and the stats count them."""
    shop["signup"].map(["a@b.c", "d@e.f"])

    stats = testing.drain(shop["app"])

    assert stats == testing.DrainStats(succeeded=4)
    assert sorted(shop["runs"]) == [("signup", "a@b.c"), ("signup", "d@e.f"), ("welcome", "a@b.c"), ("welcome", "d@e.f")]
    assert testing.enqueued(shop["app"]) == []


def test_drain_runs_due_retries_without_waiting_for_their_backoff(shop: dict[str, Any]) -> None:
    """Two failures then a success: three attempts within a 5 s timeout although the backoff is a minute."""
    shop["flaky"].delay(7)

    stats = testing.drain(shop["app"], timeout=5)

    assert (stats.succeeded, stats.retried, stats.processed) == (1, 2, 3)
    assert [str(e) for e in stats.errors] == ["declined 7", "declined 7"]
    assert shop["runs"] == [("flaky", 1), ("flaky", 2), ("flaky", 3)]


def test_drain_dead_letters_a_job_that_keeps_failing(shop: dict[str, Any]) -> None:
    """max_retries=2: three attempts, then the DLQ with the reason, as a worker would."""
    shop["state"]["fail"] = 99
    shop["flaky"].delay(1)

    stats = testing.drain(shop["app"])

    assert (stats.retried, stats.dead_lettered) == (2, 1)
    [attributes] = shop["app"].broker.attributes("t-billing-dlq")
    assert attributes["cloudq-reason"] == "max_retries_exceeded" and attributes["cloudq-attempts"] == "3"


def test_drain_skips_send_delays_on_the_memory_broker(shop: dict[str, Any]) -> None:
    """A job sent with a 10-minute delay runs: the memory broker's clock jumps when only delayed jobs are left."""
    shop["welcome"].with_options(delay=600).delay("later@b.c")

    assert testing.drain(shop["app"], timeout=5).succeeded == 1
    assert shop["runs"] == [("welcome", "later@b.c")]


def test_drain_leaves_jobs_with_an_eta_waiting(shop: dict[str, Any]) -> None:
    """A job due in an hour (an ETA, past SQS's 15-minute delay) is not due: drain returns, the job still waits."""
    shop["welcome"].with_options(delay=3600).delay("much-later@b.c")
    shop["welcome"].delay("now@b.c")

    stats = testing.drain(shop["app"], timeout=5)

    assert stats.succeeded == 1 and shop["runs"] == [("welcome", "now@b.c")]
    assert [e.args for e in testing.enqueued(shop["app"])] == [("much-later@b.c",)]


def test_drain_covers_queues_outside_the_registry_and_can_be_limited(shop: dict[str, Any]) -> None:
    """queues=None drains every queue of the app's prefix that holds jobs; queues=[...] only those."""
    shop["welcome"].with_options(queue="elsewhere").delay("x@y.z")
    shop["flaky"].delay(1)
    shop["state"]["fail"] = 0

    only_default = testing.drain(shop["app"], queues=["default"])
    everything = testing.drain(shop["app"])

    assert only_default.processed == 0
    assert everything.succeeded == 2


def test_drain_times_out_on_a_task_that_keeps_enqueuing_itself(app: cloudq.App) -> None:
    """DrainTimeout (a TimeoutError) after ``timeout`` seconds, with the stats of what ran."""

    @app.task(name="shop.forever")
    async def forever() -> None:
        await forever.adelay()

    forever.delay()
    with pytest.raises(testing.DrainTimeout) as raised:
        testing.drain(app, timeout=0.2)

    assert isinstance(raised.value, TimeoutError) and raised.value.stats.succeeded > 0


def test_drain_on_the_local_broker_runs_retries_too(tmp_path: Path) -> None:
    """The SQLite broker: jobs and their retries run in one drain (its clock is never moved)."""
    settings = cloudq.Settings(broker="local", local_path=str(tmp_path / "q.db"), max_retries=2, retry_backoff_s=60)
    app = cloudq.App("shop", settings=settings)
    failures = [ValueError("once")]

    @app.task(name="shop.job")
    def job(n: int) -> None:
        if failures:
            raise failures.pop()

    job.map([1, 2])
    assert len(testing.enqueued(app, task=job)) == 2

    stats = testing.drain(app, timeout=5)

    assert (stats.succeeded, stats.retried) == (2, 1) and testing.enqueued(app) == []
    app.close()


async def test_drain_from_async_tests(shop: dict[str, Any]) -> None:
    """``await testing.adrain(app)`` runs on the test's loop; the sync drain works there too (on a thread)."""
    await shop["welcome"].adelay("a@b.c")
    first = await testing.adrain(shop["app"])
    await shop["welcome"].adelay("d@e.f")
    second = testing.drain(shop["app"])

    assert first.succeeded == second.succeeded == 1


# -- eager ----------------------------------------------------------------------------------------
def test_eager_runs_jobs_at_once_and_enqueues_nothing(shop: dict[str, Any]) -> None:
    """.delay, .map and app.enqueue run inside the block (nested enqueues too) and return JobRefs."""
    app = shop["app"]
    with testing.eager(app):
        ref = shop["signup"].delay("a@b.c")
        shop["welcome"].map(["b@c.d"])
        app.enqueue("shop.welcome", "c@d.e")
        assert testing.enqueued(app) == []

    assert isinstance(ref, cloudq.JobRef) and ref.task == "shop.signup"
    assert shop["runs"] == [("signup", "a@b.c"), ("welcome", "a@b.c"), ("welcome", "b@c.d"), ("welcome", "c@d.e")]
    shop["welcome"].delay("after@b.c")
    assert [e.args for e in testing.enqueued(app)] == [("after@b.c",)]


def test_eager_raises_what_the_task_raised(shop: dict[str, Any], app: cloudq.App) -> None:
    """Errors raise at the call (no retry); so do unknown task names and arguments that do not fit."""

    @app.task(name="shop.retrying")
    def retrying() -> None:
        raise cloudq.Retry(delay=5)

    with testing.eager(app):
        with pytest.raises(ValueError, match="declined 3"):
            shop["flaky"].delay(3)
        with pytest.raises(cloudq.Retry):
            retrying.delay()
        with pytest.raises(cloudq.TaskNotFound):
            app.enqueue("no.such.task")
    assert shop["runs"] == [("flaky", 1)]


def test_eager_ignores_delays_and_runs_the_middleware(app: cloudq.App) -> None:
    """A delayed job (even past 15 minutes) runs now, through on_enqueue, on_job and on_outcome."""
    seen: list[str] = []

    class Recorder(cloudq.Middleware):
        def on_enqueue(self, envelope: cloudq.Envelope) -> cloudq.Envelope:
            seen.append("enqueue")
            return envelope.with_headers(tenant="t1")

        async def on_job(self, job: cloudq.Job, call_next: Any) -> Any:
            seen.append(f"job:{job.headers['tenant']}")
            return await call_next()

        def on_outcome(self, job: cloudq.Job, outcome: cloudq.Outcome) -> None:
            seen.append(f"outcome:{outcome.kind}")

    app.add_middleware(Recorder())

    @app.task(name="shop.report")
    def report(kind: str) -> None:
        seen.append(kind)

    with testing.eager(app):
        report.with_options(delay=3600).delay("daily")

    assert seen == ["enqueue", "job:t1", "daily", "outcome:ack"]


async def test_eager_adelay_runs_on_the_callers_loop_in_a_task_of_its_own(shop: dict[str, Any]) -> None:
    """await .adelay() runs the job on the running loop; the caller's current_job and context are untouched."""
    with testing.eager(shop["app"]):
        await shop["signup"].adelay("a@b.c")
        shop["welcome"].delay("sync-from-async@b.c")

    assert cloudq.current_job() is None
    assert shop["runs"] == [("signup", "a@b.c"), ("welcome", "a@b.c"), ("welcome", "sync-from-async@b.c")]


def test_testing_is_importable_from_the_package() -> None:
    """``from cloudq import testing`` is the public spelling."""
    import cloudq.testing as module

    assert testing is module and set(module.__all__) >= {"DrainStats", "drain", "eager", "enqueued"}


README_SHOP = '''
import cloudq

app = cloudq.App("shop", settings=cloudq.Settings(broker="sqs"))  # never used: the fixture swaps in memory
sent = []

@app.task(name="shop.send_welcome_email")
def send_welcome_email(email: str) -> None:
    sent.append(email)

def signup(email: str) -> None:
    send_welcome_email.delay(email)
'''


def test_the_readme_pytest_example_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's "Testing your own tasks" example runs as written against a small shop module."""
    import re
    import sys
    import types

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Testing your own tasks", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]  # type: ignore[index]
    shop = types.ModuleType("shop")
    exec(compile(README_SHOP, "shop.py", "exec"), shop.__dict__)  # noqa: S102 - test code we wrote
    monkeypatch.setitem(sys.modules, "shop", shop)
    namespace: dict[str, Any] = {"__name__": "test_signup"}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102

    for test in ("test_signup_sends_the_welcome_email", "test_signup_eagerly"):
        fixture = namespace["queues"].__wrapped__()
        next(fixture)
        namespace[test]()
        next(fixture, None)
    assert shop.sent == ["ada@example.com", "ada@example.com"]

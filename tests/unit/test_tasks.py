"""Task registration and producing on the memory broker."""

from __future__ import annotations

import inspect
import json
from datetime import timedelta
from typing import Any

import pytest

import cloudq
from cloudq.brokers.memory import MemoryBroker
from cloudq.envelope import parse_time

pytestmark = pytest.mark.unit


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def app(broker: MemoryBroker) -> cloudq.App:
    return cloudq.App("shop", settings=cloudq.Settings(broker="memory", queue_prefix="p-"), broker=broker)


PUBLIC_API = {
    "App", "ArgumentsError", "BrokerError", "BrokerUnavailable", "CloudQError", "ConfigurationError", "Envelope",
    "EnvelopeError", "Job", "JobCancelled", "JobError", "JobFailed", "JobNotFound", "JobRef", "JobState", "JobStore",
    "Middleware", "Outcome", "QueueNotFound", "Reject", "ResultUnavailable", "Retry", "ScheduleError",
    "SendOptions", "Settings", "Task", "TaskNotFound", "TaskSignal", "__version__", "current_job",
}  # fmt: skip


def test_public_api_is_exactly_all() -> None:
    """cloudq.__all__ is exactly the public API (no name more, none less), each name exists, and the package
    exposes no other public name."""
    assert set(cloudq.__all__) == PUBLIC_API and len(cloudq.__all__) == len(PUBLIC_API)
    for name in cloudq.__all__:
        assert hasattr(cloudq, name), name
    modules_and_typing = {"annotations", "TYPE_CHECKING", "Any"}
    exposed = {n for n in dir(cloudq) if not n.startswith("_") and not inspect.ismodule(getattr(cloudq, n))} - modules_and_typing
    assert exposed == PUBLIC_API - {"__version__"}


def test_task_name_defaults_to_module_and_function(app: cloudq.App) -> None:
    """@app.task names the task <module>.<function> and a plain call runs inline."""

    @app.task
    def send_welcome_email(user_email: str) -> str:
        return user_email.upper()

    assert send_welcome_email.name.endswith(".test_task_name_defaults_to_module_and_function.<locals>.send_welcome_email")
    assert send_welcome_email("a@b.c") == "A@B.C"
    assert send_welcome_email.queue == "default"


def test_delay_sends_an_envelope_to_the_prefixed_queue(app: cloudq.App, broker: MemoryBroker) -> None:
    """delay() posts envelope v1 to <prefix><queue> and returns a JobRef."""

    @app.task(name="billing.charge", queue="billing", max_retries=5, timeout=300)
    async def charge(customer_id: str, cents: int) -> dict:
        return {}

    ref = charge.delay("c1", 100)
    assert (ref.task, ref.queue) == ("billing.charge", "billing") and ref.message_id
    body = json.loads(broker.messages("p-billing")[0])
    assert body["task"] == "billing.charge" and body["args"] == ["c1", 100] and body["id"] == ref.id
    assert charge.max_retries == 5 and charge.timeout == 300


async def test_adelay_and_amap_use_the_async_path(app: cloudq.App, broker: MemoryBroker) -> None:
    """adelay/amap enqueue without blocking and return JobRefs."""

    @app.task(name="t")
    def t(x: int) -> None: ...

    await t.adelay(1)
    refs = await t.amap([(2,), (3,)])
    assert len(refs) == 2 and len(broker.messages("p-default")) == 3


def test_map_accepts_tuples_dicts_and_pairs(app: cloudq.App, broker: MemoryBroker) -> None:
    """map() items may be args tuples, kwargs dicts, (args, kwargs) pairs or single values."""

    @app.task(name="t")
    def t(a: int, b: int = 0) -> None: ...

    refs = t.map([(1,), {"a": 2, "b": 3}, ((4,), {"b": 5}), 6])
    assert len(refs) == 4
    bodies = [json.loads(b) for b in broker.messages("p-default")]
    assert [(b["args"], b["kwargs"]) for b in bodies] == [([1], {}), ([], {"a": 2, "b": 3}), ([4], {"b": 5}), ([6], {})]


def test_arguments_are_checked_at_the_producer(app: cloudq.App) -> None:
    """Arguments that do not bind raise ArgumentsError before anything is sent."""

    @app.task(name="t")
    def t(a: int) -> None: ...

    with pytest.raises(cloudq.ArgumentsError, match="do not fit task 't'"):
        t.delay(1, 2)


def test_with_options_delay_and_queue(app: cloudq.App, broker: MemoryBroker) -> None:
    """with_options(delay=timedelta, queue=...) changes only that send."""

    @app.task(name="t")
    def t() -> None: ...

    t.with_options(delay=timedelta(seconds=30), queue="other").delay()
    assert broker.stats("p-other").delayed == 1
    assert t.queue == "default"


def test_long_delays_become_an_eta(app: cloudq.App, broker: MemoryBroker) -> None:
    """Delays beyond SQS's 15 minutes are sent with the maximum delay and an envelope eta."""

    @app.task(name="t")
    def t() -> None: ...

    now = [1000.0]
    broker.clock = lambda: now[0]
    t.with_options(delay=3600).delay()
    body = json.loads(broker.messages("p-default")[0])
    eta, enqueued_at = (parse_time(body[k], field_name=k) for k in ("eta", "enqueued_at"))
    assert eta - enqueued_at == timedelta(hours=1)
    now[0] += 899.9  # sent with SQS's maximum delay, 900 s: not visible before
    assert (broker.stats("p-default").visible, broker.stats("p-default").delayed) == (0, 1)
    now[0] += 0.2
    assert broker.stats("p-default").visible == 1


def test_fifo_options_are_validated(app: cloudq.App) -> None:
    """group_id needs a FIFO queue; FIFO queues refuse per-job delays."""

    @app.task(name="t")
    def t() -> None: ...

    with pytest.raises(cloudq.ConfigurationError, match="FIFO"):
        t.with_options(group_id="g").delay()
    with pytest.raises(cloudq.ConfigurationError, match="FIFO"):
        t.with_options(queue="orders.fifo", delay=5).delay()
    assert t.with_options(queue="orders.fifo", group_id="g").delay().queue == "orders.fifo"


def test_enqueue_by_name_uses_the_registered_queue_or_the_default(app: cloudq.App, broker: MemoryBroker) -> None:
    """app.enqueue routes by task name without importing the function."""

    @app.task(name="billing.charge", queue="billing")
    def charge(customer_id: str, cents: int) -> None: ...

    assert app.enqueue("billing.charge", "c1", 100).queue == "billing"
    assert app.enqueue("somewhere.else", 1).queue == "default"


def test_duplicate_task_names_are_refused(app: cloudq.App) -> None:
    """Two functions cannot share a task name."""

    @app.task(name="t")
    def a() -> None: ...

    with pytest.raises(cloudq.ConfigurationError, match="already registered"):

        @app.task(name="t")
        def b() -> None: ...


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLOUDQ_* variables configure Settings; the default broker is the embedded local one."""
    monkeypatch.setenv("CLOUDQ_QUEUE_PREFIX", "shop-")
    monkeypatch.setenv("CLOUDQ_ENDPOINT_URL", "http://127.0.0.1:4566")
    settings = cloudq.Settings()
    assert settings.queue_name("billing") == "shop-billing"
    assert settings.dlq_name("billing") == "shop-billing-dlq"
    assert settings.dlq_name("orders.fifo") == "shop-orders-dlq.fifo"
    assert settings.endpoint_url == "http://127.0.0.1:4566"
    monkeypatch.delenv("CLOUDQ_BROKER", raising=False)
    assert cloudq.Settings().broker == "local"


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -1, 1e12, "10"])
def test_a_delay_that_cannot_work_is_refused_in_one_line(delay: Any) -> None:
    """with_options(delay=nan/inf/negative/huge/not a number) fails with one ConfigurationError line, nothing sent."""
    app = cloudq.App("shop", settings=cloudq.Settings(broker="memory"))

    @app.task(name="t")
    def t() -> None: ...

    with pytest.raises(cloudq.ConfigurationError, match=r"delay must be 0\.\.31622400 seconds"):
        t.with_options(delay=delay).delay()
    assert app.broker.stats("default").visible == 0  # type: ignore[attr-defined]

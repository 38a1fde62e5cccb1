"""The dashboard in a real browser (chromium via Playwright), on the local broker and on SQS (LocalStack).

Each test says what a person at the page sees or does; the server's answers alone are in
tests/unit/test_dashboard.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import cloudq
from cloudq.queues import plan_queues
from cloudq.runtimes.worker import Worker

from .conftest import Served, free_port

XSS = '<script>alert("x")</script>"onload=alert(1) x="'
BROKERS = ["local", pytest.param("sqs", marks=pytest.mark.integration)]


class Shop:
    """The app under the dashboard: a charge task that fails (and dead-letters) until told not to."""

    def __init__(self, settings: cloudq.Settings) -> None:
        self.fail = True
        self.done: list[tuple[Any, ...]] = []
        self.app = app = cloudq.App("dash", settings=settings)

        @app.task(name="billing.charge", queue="billing", max_retries=0)
        def charge(customer: str, cents: int) -> None:
            if self.fail:
                raise RuntimeError(f"card declined {XSS}")
            self.done.append((customer, cents))

        @app.periodic("cron(0 9 ? * MON-FRI *)", name="reports.daily", timezone="Europe/Berlin")
        def daily() -> None: ...

        self.charge = charge
        for plan in plan_queues(app):
            app.broker.ensure_queue(plan.physical, plan.config)  # type: ignore[attr-defined]

    def physical(self, queue: str) -> str:
        return self.app.settings.queue_name(queue)

    def run_worker(self) -> Any:
        """A burst worker over the app's queues, on a thread and loop of its own (Playwright's sync API keeps
        a loop running on this thread)."""

        async def burst() -> Any:
            try:
                return await Worker(self.app, burst=True).run()
            finally:
                await self.app.aclose()  # aioboto3 clients are bound to this loop

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, burst()).result(timeout=120)

    def dead_letter(self, n: int = 1) -> None:
        self.charge.map([(XSS, i) for i in range(n)])
        assert self.run_worker().dead_lettered == n

    def count(self, physical: str) -> int:
        s = self.app.broker.stats(physical)  # type: ignore[attr-defined]
        return int(s.visible + s.in_flight + s.delayed)


@pytest.fixture(params=BROKERS)
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shop]:
    if request.param == "local":
        settings = cloudq.Settings(broker="local", local_path=str(tmp_path / "q.db"))
    else:
        endpoint = request.getfixturevalue("localstack_endpoint")
        prefix = f"dash-{uuid.uuid4().hex[:8]}-"
        settings = cloudq.Settings(broker="sqs", endpoint_url=endpoint, region="us-east-1", queue_prefix=prefix, wait_time_s=1, visibility_timeout_s=10,
                                   scheduler_role_arn="arn:aws:iam::000000000000:role/cloudq-scheduler", job_store="memory")
    shop = Shop(settings)
    shop.name = request.param  # type: ignore[attr-defined]
    yield shop
    shop.app.close()


def sqs_counts(shop: Shop, queue: str) -> tuple[int, int, int]:
    """The counts as SQS (or the local broker) itself reports them, read apart from the dashboard."""
    if shop.app.settings.broker == "sqs":
        import boto3

        sqs = boto3.client("sqs", endpoint_url=shop.app.settings.endpoint_url, region_name="us-east-1")
        url = sqs.get_queue_url(QueueName=shop.physical(queue))["QueueUrl"]
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        sqs.close()
        return (int(attributes[names[0]]), int(attributes[names[1]]), int(attributes[names[2]]))
    s = shop.app.broker.stats(shop.physical(queue))  # type: ignore[attr-defined]
    return (s.visible, s.in_flight, s.delayed)


def cells(page: Any, queue: str) -> tuple[int, int, int]:
    row = page.locator(f'tr[data-queue="{queue}"]')
    return tuple(int(row.locator(f'[data-col="{col}"]').inner_text()) for col in ("visible", "in_flight", "delayed"))  # type: ignore[return-value]


def test_the_queues_page_shows_the_counts_the_broker_reports_and_refreshes_itself(
    shop: Shop, serve: Callable[..., Served], page: Any, screenshot: Callable[[str], Path]
) -> None:
    """Visible, in flight, delayed and DLQ depth as SQS reports them; new jobs appear without a reload."""
    from playwright.sync_api import expect

    shop.dead_letter(2)
    shop.charge.map([("a", 1), ("b", 2), ("c", 3)])
    shop.charge.with_options(delay=120).delay("later", 4)
    served = serve(shop.app, refresh_s=1)
    page.goto(f"{served.url}/queues")

    assert cells(page, "billing") == sqs_counts(shop, "billing") == (3, 0, 1)
    expect(page.locator('tr[data-queue="billing"] [data-col="dlq"]')).to_have_text("2")
    screenshot(f"queues-{shop.name}")  # type: ignore[attr-defined]

    shop.charge.map([("d", 5), ("e", 6)])
    expect(page.locator('tr[data-queue="billing"] [data-col="visible"]')).to_have_text("5", timeout=10_000)
    expect(page.locator("#refreshed")).to_contain_text("updated")


def test_a_dead_letters_reason_is_visible_and_redrive_moves_it_and_a_worker_then_runs_it(
    shop: Shop, serve: Callable[..., Served], page: Any, screenshot: Callable[[str], Path]
) -> None:
    from playwright.sync_api import expect

    shop.dead_letter(1)
    served = serve(shop.app)
    page.goto(f"{served.url}/queues")
    page.locator('tr[data-queue="billing"] [data-col="dlq"] a').click()

    letter = page.locator("article.letter")
    expect(letter.locator(".reason")).to_have_text("max_retries_exceeded")
    expect(letter.locator(".error")).to_contain_text("RuntimeError: card declined")
    assert shop.count(shop.physical("billing-dlq")) == 1  # looking consumed nothing
    screenshot(f"dead-letters-{shop.name}")  # type: ignore[attr-defined]
    letter.locator("h2 a").click()
    expect(page.locator("h1")).to_have_text(letter_id := page.locator("h1").inner_text())
    assert letter_id
    screenshot(f"dead-letter-{shop.name}")  # type: ignore[attr-defined]
    page.go_back()

    page.locator("#redrive").click()
    expect(page.locator("#result")).to_have_text(f"moved 1 dead letter back to queue billing ({shop.physical('billing')})")
    screenshot(f"redrive-result-{shop.name}")  # type: ignore[attr-defined]
    assert shop.count(shop.physical("billing-dlq")) == 0
    shop.fail = False
    assert shop.run_worker().succeeded == 1 and shop.done == [(XSS, 0)]


def test_purge_needs_its_typed_confirmation(shop: Shop, serve: Callable[..., Served], page: Any) -> None:
    """The purge button stays disabled until the DLQ's name is typed; then it purges and says how many."""
    from playwright.sync_api import expect

    shop.dead_letter(1)
    served = serve(shop.app)
    page.goto(f"{served.url}/queues/billing/dead-letters")

    button = page.locator("#purge")
    expect(button).to_be_disabled()
    page.locator("#purge-confirm").fill("billing")
    expect(button).to_be_disabled()
    assert shop.count(shop.physical("billing-dlq")) == 1
    page.locator("#purge-confirm").fill(shop.physical("billing-dlq"))
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator("#result")).to_have_text(f"purged 1 message from {shop.physical('billing-dlq')}")
    assert shop.count(shop.physical("billing-dlq")) == 0


def test_the_xss_payload_in_args_and_error_stays_text(shop: Shop, serve: Callable[..., Served], page: Any) -> None:
    """<script> and "onload= in a job's args and error message show as text: no script element, no alert."""
    from playwright.sync_api import expect

    shop.dead_letter(1)
    served = serve(shop.app)
    page.goto(f"{served.url}/queues/billing/dead-letters")
    expect(page.locator("article.letter .error")).to_contain_text(XSS)
    assert XSS.replace('"', '\\"') in page.locator("article.letter pre.args").inner_text()  # JSON-quoted in the args
    page.locator("article.letter h2 a").click()
    expect(page.locator("dd.error")).to_contain_text(XSS)

    page.wait_for_timeout(300)
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert page.locator("script").count() == 1 and page.locator("[onload]").count() == 0


def test_cancel_a_queued_job_from_its_page_and_it_never_runs(
    shop: Shop, serve: Callable[..., Served], page: Any, screenshot: Callable[[str], Path]
) -> None:
    """Find the job by id, open its page, cancel it: a worker then acks it without running it."""
    from playwright.sync_api import expect

    shop.fail = False
    ref = shop.charge.delay("ada", 100)
    served = serve(shop.app)
    page.goto(f"{served.url}/jobs")
    expect(page.locator(f'tr[data-job-id="{ref.id}"]')).to_contain_text("queued")
    screenshot(f"jobs-{shop.name}")  # type: ignore[attr-defined]
    page.locator("#job-id").fill(ref.id)
    page.locator("form.filters button").click()
    expect(page.locator("#job-status")).to_have_text("queued")
    screenshot(f"job-{shop.name}")  # type: ignore[attr-defined]
    page.locator("#cancel").click()
    expect(page.locator("#result")).to_have_text(f"job {ref.id} cancelled: it will not run")

    shop.run_worker()
    assert shop.done == [] and ref.status().status == "cancelled"
    assert shop.count(shop.physical("billing")) == 0  # acked, not left waiting
    page.goto(f"{served.url}/jobs/{ref.id}")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#cancel")).to_have_count(0)


def test_the_xss_payload_on_a_job_page_stays_text(shop: Shop, serve: Callable[..., Served], page: Any) -> None:
    from playwright.sync_api import expect

    ref = shop.charge.delay(XSS, 1)
    shop.run_worker()
    served = serve(shop.app)
    page.goto(f"{served.url}/jobs/{ref.id}")
    expect(page.locator("#job-error")).to_contain_text(XSS)
    page.wait_for_timeout(300)
    assert page.dialogs == [] and page.locator("script").count() == 1  # type: ignore[attr-defined]


def test_the_schedules_page_shows_next_fires_and_whether_eventbridge_is_in_sync(
    shop: Shop, serve: Callable[..., Served], page: Any, screenshot: Callable[[str], Path]
) -> None:
    """Expression, time zone and three next fire times; on SQS "not deployed" until a sync, then "in sync"."""
    from playwright.sync_api import expect

    served = serve(shop.app)
    page.goto(f"{served.url}/schedules")
    row = page.locator('tr[data-task="reports.daily"]')
    expect(row).to_contain_text("cron(0 9 ? * MON-FRI *)")
    expect(row).to_contain_text("Europe/Berlin")
    assert row.locator("td").nth(3).inner_text().count("T09:00+0") == 3
    if shop.app.settings.broker != "sqs":
        expect(row.locator('[data-col="sync"]')).to_have_text("local: workers fire it")
        screenshot("schedules-local")
        return
    # EventBridge rules evaluate cron in UTC only: the rules view says why it cannot compare this task
    expect(page.locator("main")).to_contain_text("EventBridge rules evaluate cron in UTC, not Europe/Berlin")
    page.goto(f"{served.url}/schedules?engine=scheduler")
    expect(row.locator('[data-col="sync"]')).to_have_text("not deployed: run cloudq schedules sync")
    from cloudq.schedules.deploy import AwsClients, sync
    from cloudq.schedules.scheduler import group_name

    clients = AwsClients.from_settings(shop.app.settings)
    try:
        sync(shop.app, clients, engine="scheduler")
        page.reload()
        expect(row.locator('[data-col="sync"]')).to_have_text("in sync")
        screenshot("schedules-sqs")
    finally:
        group = group_name(shop.app)
        for schedule in clients.scheduler.list_schedules(GroupName=group).get("Schedules", []):
            clients.scheduler.delete_schedule(Name=schedule["Name"], GroupName=group)
        clients.scheduler.delete_schedule_group(Name=group)
        clients.close()


# -- the real command: bind checks and the token ---------------------------------------------------
APP_MODULE = """
import cloudq
app = cloudq.App("dash")

@app.task(name="billing.charge", queue="billing")
def charge(customer: str, cents: int) -> None: ...
"""


@pytest.fixture
def app_module(tmp_path: Path) -> dict[str, str]:
    """An app module on the local broker and the environment `cloudq dashboard` runs it with."""
    (tmp_path / "dash_app.py").write_text(APP_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    env.update(CLOUDQ_BROKER="local", CLOUDQ_LOCAL_PATH=str(tmp_path / "q.db"), PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    return env


def test_a_non_loopback_bind_without_a_token_refuses_to_start(app_module: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloudq", "dashboard", "dash_app:app", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=tmp_path, env=app_module, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stderr == "cloudq: error: refusing to bind the dashboard to 0.0.0.0: a non-loopback host requires CLOUDQ_DASHBOARD_TOKEN\n"


def test_with_a_token_requests_without_it_get_401_and_the_login_form_lets_a_person_in(
    app_module: dict[str, str], tmp_path: Path, page: Any, screenshot: Callable[[str], Path]
) -> None:
    from playwright.sync_api import expect

    port = free_port()
    env = {**app_module, "CLOUDQ_DASHBOARD_TOKEN": "tok-" + uuid.uuid4().hex}
    server = subprocess.Popen(
        [sys.executable, "-m", "cloudq", "dashboard", "dash_app:app", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(port, server)
        assert status_of(f"{url}/queues") == 401
        assert status_of(f"{url}/queues", {"Authorization": "Bearer wrong"}) == 401
        assert status_of(f"{url}/queues", {"Authorization": f"Bearer {env['CLOUDQ_DASHBOARD_TOKEN']}"}) == 200

        response = page.goto(f"{url}/queues")
        assert response.status == 401
        screenshot("login")
        page.locator("#token").fill("wrong")
        page.locator("#login").click()
        expect(page.locator("#result")).to_have_text("wrong token")
        page.locator("#token").fill(env["CLOUDQ_DASHBOARD_TOKEN"])
        page.locator("#login").click()
        expect(page.locator("h1")).to_have_text("Queues")
        expect(page.locator('tr[data-queue="billing"]')).to_be_visible()
    finally:
        server.terminate()
        server.wait(10)


def wait_listening(port: int, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"cloudq dashboard exited {server.returncode}: {server.stderr.read() if server.stderr else ''}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/static/dashboard.css", timeout=1).close()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError("cloudq dashboard did not start listening in 20 s")


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)

"""The dashboard's pages and guards over HTTP (Starlette's TestClient), on the local broker.

What a browser adds (the refresh script, the purge button's confirmation, no alert for the XSS payload)
is in tests/integration/test_dashboard_browser.py; here is what the server answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import cloudq
from cloudq import testing
from cloudq.brokers.base import OutgoingMessage
from cloudq.brokers.memory import MemoryBroker
from cloudq.cli import main
from cloudq.dashboard import create_app, is_loopback
from cloudq.errors import BrokerUnavailable

pytestmark = pytest.mark.unit

XSS = '<script>alert("x")</script>"onload=alert(1) x="'
FAIL = {"on": True}
DONE: list[tuple[Any, ...]] = []


def make_app(path: Path) -> cloudq.App:
    app = cloudq.App("dash", settings=cloudq.Settings(broker="local", local_path=str(path / "q.db")))

    @app.task(name="billing.charge", queue="billing", max_retries=0)
    def charge(customer: str, cents: int) -> None:
        if FAIL["on"]:
            raise RuntimeError(f"card declined {XSS}")
        DONE.append((customer, cents))

    @app.periodic("cron(0 9 ? * MON-FRI *)", name="reports.daily", timezone="Europe/Berlin")
    def daily() -> None: ...

    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[cloudq.App]:
    FAIL["on"] = True
    DONE.clear()
    app = make_app(tmp_path)
    yield app
    app.close()


def client(app: cloudq.App, **options: Any) -> TestClient:
    return TestClient(create_app(app, **options), raise_server_exceptions=False)


def dead_letter(app: cloudq.App, n: int = 1) -> None:
    app.get_task("billing.charge").map([(XSS, i) for i in range(n)])
    assert testing.drain(app).dead_lettered == n


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def count(app: cloudq.App, queue: str) -> int:
    s = app.broker.stats(queue)  # type: ignore[attr-defined]
    return int(s.visible + s.in_flight + s.delayed)


def cell(page: str, queue: str, column: str) -> str:
    row = page.split(f'data-queue="{queue}"', 1)[1].split("</tr>", 1)[0]
    found = re.search(rf'data-col="{column}">(?:<a [^>]*>)?(\d+)', row)
    assert found, row
    return found.group(1)


# -- queues ----------------------------------------------------------------------------------------
def test_queues_page_shows_each_queue_counts_and_dead_letter_depth(app: cloudq.App) -> None:
    """Every registry queue has its row with the broker's counts; the DLQ depth links to its letters."""
    dead_letter(app, 2)
    app.get_task("billing.charge").map([("a", 1), ("b", 2), ("c", 3)])
    app.get_task("billing.charge").with_options(delay=60).delay("later", 4)
    page = client(app).get("/queues")

    assert page.status_code == 200
    assert (cell(page.text, "billing", "visible"), cell(page.text, "billing", "delayed"), cell(page.text, "billing", "dlq")) == ("3", "1", "2")
    assert cell(page.text, "default", "visible") == "0"
    assert 'href="/queues/billing/dead-letters"' in page.text and "data-refresh=" in page.text


def test_rates_come_from_the_counts_of_two_refreshes(app: cloudq.App) -> None:
    """Backlog and dead letters per second since the previous refresh: a dash first, then the change."""
    from cloudq.dashboard.views import Rates

    browser = client(app)
    first = browser.get("/queues?partial=1").text
    row = first.split('data-queue="billing"', 1)[1].split("</tr>", 1)[0]
    assert re.search(r'data-col="backlog_rate"><span class="muted"', row)
    app.get_task("billing.charge").map([("a", 1), ("b", 2), ("c", 3)])
    second = browser.get("/queues?partial=1").text
    rate = re.search(r'data-col="backlog_rate">([+-][0-9.]+)', second.split('data-queue="billing"', 1)[1])
    assert rate and float(rate.group(1)) > 0

    now = [100.0]
    rates = Rates(clock=lambda: now[0])
    from cloudq.brokers.base import QueueStats
    from cloudq.dashboard.views import QueueRow
    from cloudq.queues import plan_queues

    plan = plan_queues(app)[0]
    def row_of(backlog: int, dead: int) -> QueueRow:
        return QueueRow(plan, QueueStats(plan.physical, True, backlog, 0, 0), QueueStats(plan.dead_letter_queue, True, dead, 0, 0))

    assert rates.rows([row_of(10, 0)])[0].backlog_rate is None
    now[0] += 4
    (later,) = rates.rows([row_of(2, 2)])
    assert (later.backlog_rate, later.dlq_rate) == (-2.0, 0.5)


def test_the_oldest_message_age_shows_where_the_broker_tells_it(app: cloudq.App, tmp_path: Path) -> None:
    """The local broker reports how long ago the oldest message was sent; an empty queue shows a dash."""
    from cloudq.brokers.local import LocalBroker

    now = [1_000.0]
    app.use_broker(LocalBroker(str(tmp_path / "clocked.db"), clock=lambda: now[0]))
    app.broker.send("billing", [OutgoingMessage("{}")])
    now[0] += 150
    page = client(app).get("/queues?partial=1").text

    oldest = {q: page.split(f'data-queue="{q}"', 1)[1].split('data-col="oldest">', 1)[1].split("</td>", 1)[0] for q in ("billing", "default")}
    assert oldest["billing"] == "2 min" and "–" in oldest["default"]


def test_the_refresh_fragment_is_the_table_alone(app: cloudq.App) -> None:
    """``?partial=1`` answers the table only, what the page's script swaps in."""
    page = client(app).get("/queues?partial=1")

    assert page.text.lstrip().startswith('<table class="grid" id="queues-table">') and "<html" not in page.text


def test_a_broker_error_is_a_page_with_one_line_not_a_traceback(app: cloudq.App) -> None:
    """A broker that cannot be reached gives 503 and the error's line."""

    class Down(MemoryBroker):
        def stats(self, queue: str) -> Any:
            raise BrokerUnavailable("endpoint http://127.0.0.1:9 refused the connection")

    app.use_broker(Down())
    page = client(app).get("/queues")

    assert page.status_code == 503 and "BrokerUnavailable: endpoint http://127.0.0.1:9 refused the connection" in page.text
    assert "Traceback" not in page.text


def test_mounted_under_a_prefix_every_link_keeps_it(app: cloudq.App) -> None:
    """``create_app`` mounts in a user's Starlette app; links, the refresh URL and static files carry the prefix."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/ops/cloudq", app=create_app(app))])
    page = TestClient(outer).get("/ops/cloudq/queues")

    assert page.status_code == 200
    assert 'href="/ops/cloudq/queues/billing/dead-letters"' in page.text and 'src="/ops/cloudq/static/dashboard.js"' in page.text
    assert TestClient(outer).get("/ops/cloudq/static/dashboard.js").status_code == 200


# -- dead letters ----------------------------------------------------------------------------------
def test_dead_letters_show_reason_error_and_args_and_stay_in_the_queue(app: cloudq.App) -> None:
    """The page shows task, reason, error and args; looking consumes nothing."""
    dead_letter(app, 2)
    page = client(app).get("/queues/billing/dead-letters")

    assert page.status_code == 200
    assert page.text.count('class="reason">max_retries_exceeded<') == 2 and "billing.charge" in page.text
    assert "RuntimeError: card declined" in page.text and "Traceback" in page.text
    assert count(app, "billing-dlq") == 2 and app.broker.stats("billing-dlq").visible == 2  # type: ignore[attr-defined]


def test_producer_markup_is_escaped_everywhere(app: cloudq.App) -> None:
    """The args and the error message hold <script> and "onload=: the HTML has them only as escaped text."""
    dead_letter(app)
    c = client(app)
    list_page = c.get("/queues/billing/dead-letters").text
    message_id = re.search(r'data-message-id="([^"]+)"', list_page).group(1)  # type: ignore[union-attr]
    letter_page = c.get(f"/queues/billing/dead-letters/{message_id}").text

    for page in (list_page, letter_page):
        assert "<script>alert" not in page and '"onload=' not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_a_body_that_is_not_json_or_huge_renders_cut_with_a_way_to_see_all(app: cloudq.App) -> None:
    """Not an envelope, not JSON, 300 kB: the list shows 2,000 characters and links to the letter; the
    letter page and its raw view give the rest."""
    huge = "<b>not json</b> " + "x" * 300_000
    app.broker.send("billing-dlq", [OutgoingMessage("{broken json"), OutgoingMessage(huge)])
    c = client(app)
    page = c.get("/queues/billing/dead-letters")

    assert page.status_code == 200 and "not a cloudq job" in page.text and "{broken json" in page.text
    assert "cut at 2,000 of 300,016 characters" in page.text and "&lt;b&gt;not json" in page.text
    link = re.findall(r'href="([^"]+)" class="show-all"', page.text)
    assert len(link) == 1
    letter = c.get(link[0])
    assert letter.status_code == 200 and "cut at 65,536 characters" in letter.text
    raw = c.get(link[0] + "/raw")
    assert raw.text == huge and raw.headers["content-type"].startswith("text/plain")
    assert raw.headers["x-content-type-options"] == "nosniff"


def test_a_body_resolver_shows_the_real_payload_and_its_failure_beside_the_stored_body(app: cloudq.App) -> None:
    """``resolve_body`` (a payload kept elsewhere, e.g. S3) turns the stored body into the shown one; one
    that raises leaves the stored body shown with the error, never an error page."""
    from cloudq.dashboard.views import dead_letter as view

    app.broker.send("billing-dlq", [OutgoingMessage('{"pointer": "s3://bucket/key"}')])
    stored = app.broker.peek("billing-dlq", 1)[0]  # type: ignore[attr-defined]

    resolved = view(stored, lambda body: '{"v": 1, "task": "billing.charge", "args": ["from s3", 1]}')
    assert resolved.record["task"] == "billing.charge" and '"from s3"' in resolved.text

    def unreachable(body: str) -> str:
        raise OSError("bucket unreachable")

    failed = view(stored, unreachable)
    assert failed.resolve_error == "OSError: bucket unreachable" and "s3://bucket/key" in failed.text
    page = client(app, resolve_body=unreachable).get("/queues/billing/dead-letters")
    assert page.status_code == 200 and "could not resolve the stored body: OSError: bucket unreachable" in page.text


def test_a_letter_no_longer_there_is_404(app: cloudq.App) -> None:
    page = client(app).get("/queues/billing/dead-letters/nope")

    assert page.status_code == 404 and "no dead letter &#39;nope&#39;" in page.text


def test_an_unknown_queue_is_404(app: cloudq.App) -> None:
    page = client(app).get("/queues/nope/dead-letters")

    assert page.status_code == 404 and "queue &#39;nope&#39; is not used by app &#39;dash&#39;" in page.text


def test_redrive_needs_the_csrf_token_then_moves_n_or_all_and_a_worker_runs_them(app: cloudq.App) -> None:
    """A POST without the form's token is refused; with it, N then the rest move back and then run."""
    dead_letter(app, 3)
    c = client(app)
    token = csrf(c.get("/queues/billing/dead-letters").text)

    assert c.post("/queues/billing/dead-letters/redrive", data={"max": "2"}).status_code == 403
    assert c.post("/queues/billing/dead-letters/redrive", data={"max": "2", "csrf": "forged"}).status_code == 403
    assert count(app, "billing-dlq") == 3
    moved = c.post("/queues/billing/dead-letters/redrive", data={"max": "2", "csrf": token})
    assert moved.status_code == 200 and "moved 2 dead letters back to queue billing (billing)" in moved.text
    assert "moved 1 dead letter back" in c.post("/queues/billing/dead-letters/redrive", data={"max": "", "csrf": token}).text

    FAIL["on"] = False
    assert testing.drain(app).succeeded == 3 and len(DONE) == 3 and count(app, "billing-dlq") == 0


def test_purge_needs_the_queue_name_typed(app: cloudq.App) -> None:
    """Purge with a wrong or empty confirmation deletes nothing (400); with the DLQ's name it purges."""
    dead_letter(app, 2)
    c = client(app)
    token = csrf(c.get("/queues/billing/dead-letters").text)

    refused = c.post("/queues/billing/dead-letters/purge", data={"csrf": token, "confirm": "billing"})
    assert refused.status_code == 400 and "name, billing-dlq, to confirm" in refused.text
    assert count(app, "billing-dlq") == 2
    done = c.post("/queues/billing/dead-letters/purge", data={"csrf": token, "confirm": "billing-dlq"})
    assert done.status_code == 200 and "purged 2 messages from billing-dlq" in done.text and count(app, "billing-dlq") == 0


def test_read_only_hides_the_actions_and_refuses_them(app: cloudq.App) -> None:
    dead_letter(app)
    c = client(app, read_only=True)
    page = c.get("/queues/billing/dead-letters").text

    assert 'id="redrive-form"' not in page and 'id="purge-form"' not in page and "read-only" in page
    token = c.cookies["cloudq_csrf"]
    for action in ("redrive", "purge"):
        refused = c.post(f"/queues/billing/dead-letters/{action}", data={"csrf": token, "confirm": "billing-dlq"})
        assert refused.status_code == 403 and "read-only" in refused.text
    assert count(app, "billing-dlq") == 1


# -- security --------------------------------------------------------------------------------------
def test_with_a_token_requests_without_it_get_401(app: cloudq.App) -> None:
    """Every page: 401 without the token (a login form for a browser), 200 with the bearer header."""
    c = client(app, token="s3cret-token")
    for path in ("/queues", "/queues?partial=1", "/queues/billing/dead-letters", "/schedules", "/jobs"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
    browser = c.get("/queues", headers={"Accept": "text/html"})
    assert browser.status_code == 401 and 'name="token"' in browser.text
    assert c.get("/queues", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert c.post("/queues/billing/dead-letters/purge", data={"confirm": "billing-dlq"}).status_code == 401
    assert c.get("/static/dashboard.css").status_code == 200  # the login page's own style


def test_the_login_form_sets_a_session_cookie_that_is_not_the_token(app: cloudq.App) -> None:
    c = client(app, token="s3cret-token")
    token = csrf(c.get("/login").text)

    assert c.post("/login", data={"csrf": token, "token": "wrong"}).status_code == 401
    assert c.post("/login", data={"token": "s3cret-token"}).status_code == 403  # no CSRF token
    ok = c.post("/login", data={"csrf": token, "token": "s3cret-token", "next": "//evil.example/x"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/queues"
    session = c.cookies["cloudq_session"]
    assert session and "s3cret-token" not in session and "HttpOnly" in ok.headers["set-cookie"]
    assert c.get("/queues").status_code == 200
    c.post("/logout", data={"csrf": token})
    assert c.get("/queues").status_code == 401


def test_after_logging_in_a_person_lands_on_the_page_they_asked_for(app: cloudq.App) -> None:
    c = client(app, token="s3cret-token")
    page = c.get("/queues/billing/dead-letters", headers={"Accept": "text/html"}).text

    assert 'name="next" value="/queues/billing/dead-letters"' in page
    ok = c.post("/login", data={"csrf": csrf(page), "token": "s3cret-token", "next": "/queues/billing/dead-letters"}, follow_redirects=False)
    assert ok.headers["location"] == "/queues/billing/dead-letters"


def test_a_token_from_the_environment_is_required(app: cloudq.App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_DASHBOARD_TOKEN", "from-env")
    c = client(app)

    assert c.get("/queues").status_code == 401
    assert c.get("/queues", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_bound_to_loopback_it_answers_only_loopback_host_names(app: cloudq.App) -> None:
    """A DNS-rebinding page (Host: evil.example) gets 400; 127.0.0.1 and localhost are served."""
    c = client(app, allowed_hosts=["127.0.0.1", "localhost"])

    assert c.get("/queues", headers={"Host": "evil.example"}).status_code == 400
    assert c.get("/queues", headers={"Host": "127.0.0.1:8181"}).status_code == 200
    assert c.get("/queues", headers={"Host": "localhost:8181"}).status_code == 200


def test_every_response_forbids_inline_scripts_and_framing(app: cloudq.App) -> None:
    headers = client(app).get("/queues").headers

    assert "script-src 'self'" in headers["content-security-policy"] and "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and "SameSite=Strict" in headers["set-cookie"]


def test_a_non_loopback_bind_without_a_token_refuses_to_start(app: cloudq.App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """One line, exit 2, before the app is even imported."""
    monkeypatch.delenv("CLOUDQ_DASHBOARD_TOKEN", raising=False)

    assert main(["dashboard", "no_such_module:app", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err == "cloudq: error: refusing to bind the dashboard to 0.0.0.0: a non-loopback host requires CLOUDQ_DASHBOARD_TOKEN\n"


def test_the_command_serves_loopback_without_a_token_to_loopback_host_names_only(tmp_path: Path) -> None:
    """`cloudq dashboard APP` on 127.0.0.1 needs no token, and answers 400 to any other Host header."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    (tmp_path / "dash_cmd_app.py").write_text("import cloudq\napp = cloudq.App('cmd')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    env.update(CLOUDQ_BROKER="local", CLOUDQ_LOCAL_PATH=str(tmp_path / "q.db"), PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "cloudq", "dashboard", "dash_cmd_app:app", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def status(host: str) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/queues", headers={"Host": host})
        try:
            with opener.open(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    try:
        deadline = time.monotonic() + 20
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                assert status(f"127.0.0.1:{port}") == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "cloudq dashboard did not start listening in 20 s"
                time.sleep(0.1)
        assert status(f"localhost:{port}") == 200
        assert status(f"evil.example:{port}") == 400
    finally:
        server.terminate()
        server.wait(10)
    assert server.stderr is not None and f"cloudq dashboard for app 'cmd' on http://127.0.0.1:{port}/" in server.stderr.read()


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
                                                ("0.0.0.0", False), ("10.0.0.5", False), ("::", False), ("example.com", False)])  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- schedules -------------------------------------------------------------------------------------
def test_schedules_show_expression_timezone_and_next_fires_in_that_zone(app: cloudq.App) -> None:
    page = client(app).get("/schedules").text

    row = page.split('data-task="reports.daily"', 1)[1].split("</tr>", 1)[0]
    assert "cron(0 9 ? * MON-FRI *)" in row and "Europe/Berlin" in row
    fires = re.findall(r"\d{4}-\d\d-\d\dT09:00\+0[12]:00", row)
    assert len(fires) == 3 and "local: workers fire it" in row


# -- jobs (the local broker's job store: the default with the local broker) ---------------------------
def job_ids(page: str) -> list[str]:
    return re.findall(r'data-job-id="([^"]+)"', page)


def test_without_a_job_store_the_jobs_pages_say_so(tmp_path: Path) -> None:
    app = cloudq.App("nojobs", settings=cloudq.Settings(broker="local", local_path=str(tmp_path / "q.db"), job_store="none"))
    c = client(app)

    assert 'href="/jobs"' not in c.get("/queues").text
    page = c.get("/jobs")
    assert page.status_code == 404 and "has no job store" in page.text
    app.close()


def test_jobs_list_by_status_and_task_and_find_by_id(app: cloudq.App) -> None:
    """The list is the store's (newest first), filtered by status and task; an id goes to its page."""
    failed = app.get_task("billing.charge").delay(XSS, 1)
    assert testing.drain(app).dead_lettered == 1
    waiting = app.get_task("billing.charge").delay("b", 2)
    c = client(app)

    assert 'href="/jobs"' in c.get("/queues").text
    assert job_ids(c.get("/jobs").text) == [waiting.id, failed.id]
    assert job_ids(c.get("/jobs?status=queued").text) == [waiting.id]
    assert job_ids(c.get("/jobs?status=dead_lettered&task=billing.charge").text) == [failed.id]
    assert job_ids(c.get("/jobs?task=reports.daily").text) == []
    found = c.get(f"/jobs?id={failed.id}", follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/jobs/{failed.id}"
    assert c.get("/jobs?status=bogus").status_code == 400
    assert c.get("/jobs/nope").status_code == 404


def test_a_job_page_shows_its_error_escaped_and_an_ended_job_has_no_cancel(app: cloudq.App) -> None:
    ref = app.get_task("billing.charge").delay("a", 1)
    testing.drain(app)
    page = client(app).get(f"/jobs/{ref.id}").text

    assert 'id="job-status">dead_lettered<' in page and "RuntimeError: card declined" in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page and "<script>alert" not in page
    assert 'id="cancel-form"' not in page and 'class="reason">max_retries_exceeded<' in page


def test_a_succeeded_job_shows_its_attempts_and_result(app: cloudq.App) -> None:
    FAIL["on"] = False
    ref = app.get_task("billing.charge").delay("a", 1)
    testing.drain(app)
    page = client(app).get(f"/jobs/{ref.id}").text

    assert 'id="job-status">succeeded<' in page and "<dt>Attempts</dt><dd>1</dd>" in page and "Finished</dt><dd>20" in page


def test_cancel_a_queued_job_from_its_page_and_it_never_runs(app: cloudq.App) -> None:
    """The cancel button needs the CSRF token; once cancelled, a worker acks the job without running it."""
    ref = app.get_task("billing.charge").delay("a", 1)
    c = client(app)
    page = c.get(f"/jobs/{ref.id}").text
    assert 'id="cancel-form"' in page

    assert c.post(f"/jobs/{ref.id}/cancel", data={}).status_code == 403
    done = c.post(f"/jobs/{ref.id}/cancel", data={"csrf": csrf(page)})
    assert done.status_code == 200 and f"job {ref.id} cancelled: it will not run" in done.text
    FAIL["on"] = False
    testing.drain(app)
    assert DONE == [] and ref.status().status == "cancelled"
    assert "was not cancelled: it is cancelled" in c.post(f"/jobs/{ref.id}/cancel", data={"csrf": csrf(page)}).text


def test_read_only_has_no_cancel(app: cloudq.App) -> None:
    ref = app.get_task("billing.charge").delay("a", 1)
    c = client(app, read_only=True)

    assert 'id="cancel-form"' not in c.get(f"/jobs/{ref.id}").text
    assert c.post(f"/jobs/{ref.id}/cancel", data={"csrf": c.cookies["cloudq_csrf"]}).status_code == 403
    assert ref.status().status == "queued"

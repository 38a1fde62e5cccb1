"""The dashboard's ASGI app: Starlette routes over :mod:`cloudq.dashboard.views`, Jinja2 pages.

Server-rendered HTML (autoescaped: every value a producer wrote is text), one small script of its own for
the queues page's refresh and the purge confirmation (no Node build, nothing from a CDN: the app serves
its static files). Pages:

* ``/queues``: every registry queue and its DLQ, refreshed every few seconds (``?partial=1``: the table).
* ``/queues/{queue}/dead-letters``: peeked, never consumed; POST ``.../redrive`` (all or N) and
  ``.../purge`` (the DLQ's name typed as confirmation). ``.../{message_id}``: one letter in full;
  ``.../{message_id}/raw``: its body as text/plain.
* ``/jobs`` and ``/jobs/{job_id}`` (with a job store): find, list, cancel (:mod:`cloudq.dashboard.jobs`).
* ``/schedules``: periodic tasks, next fire times, and on SQS whether EventBridge is in sync.

A broker error renders as a page with the error's one line (status 503), never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from cloudq.admin import require_queue
from cloudq.brokers.base import admin_of
from cloudq.dashboard import jobs, security
from cloudq.dashboard.views import PAGE_CHARS, PREVIEW_CHARS, BodyResolver, Calls, Rates, dead_letter, queue_rows, schedule_rows
from cloudq.errors import CloudQError
from cloudq.queues import plan_queues

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.queues import QueuePlan

__all__ = ["Dashboard", "build"]

HERE = Path(__file__).resolve().parent
MAX_PEEK = 100


class Dashboard:
    """What every page needs: the app, its admin broker, the thread pool, the templates, the options."""

    def __init__(self, app: App, *, read_only: bool, token: str | None, resolve_body: BodyResolver | None, refresh_s: float) -> None:
        self.app = app
        self.read_only = read_only
        self.token = token
        self.resolve_body = resolve_body
        self.refresh_s = refresh_s
        self.calls = Calls()
        self.rates = Rates()  # backlog and dead letters per second, between this process's refreshes
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined)
        env.filters.update(duration=_duration, when=_when, pretty=_pretty)
        env.globals["PREVIEW_CHARS"] = PREVIEW_CHARS
        self.templates = Jinja2Templates(env=env)
        env.globals["url_for"] = _path_for  # paths, not absolute URLs: right behind any proxy or mount

    @property
    def admin(self) -> Any:
        return admin_of(self.app.broker)

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        base = {
            "app_name": self.app.name, "broker": self.app.settings.broker, "read_only": self.read_only,
            "csrf": getattr(request.state, "csrf", ""), "has_jobs": jobs.store_of(self.app) is not None, "logged_in": self.token is not None,
        }  # fmt: skip
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def plan(self, queue: str) -> QueuePlan:
        plans = {plan.queue: plan for plan in plan_queues(self.app)}
        if queue not in plans:
            raise HTTPException(404, f"queue {queue!r} is not used by app {self.app.name!r}")
        return plans[queue]

    async def action(self, request: Request) -> Any:
        """The form of a POST that changes something, once it passed the read-only and CSRF checks."""
        if self.read_only:
            raise HTTPException(403, "this dashboard is read-only (--read-only)")
        form = await request.form()
        if not security.csrf_ok(request.cookies.get(security.CSRF_COOKIE), form.get(security.CSRF_FIELD)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return form

    # -- queues ---------------------------------------------------------------------------------
    async def queues(self, request: Request) -> Response:
        rows = await queue_rows(self.app, self.admin, self.calls, self.rates)
        name = "_queues_table.html" if request.query_params.get("partial") else "queues.html"
        return self.page(request, name, rows=rows, refresh_ms=int(self.refresh_s * 1000))

    # -- dead letters ---------------------------------------------------------------------------
    async def dead_letters(self, request: Request) -> Response:
        plan = self.plan(request.path_params["queue"])
        n = _int(request.query_params.get("n"), 20, 1, MAX_PEEK)
        stats = await self.calls.run(require_queue, self.admin, plan.dead_letter_queue)
        letters = [dead_letter(d, self.resolve_body) for d in await self.calls.run(self.admin.peek, plan.dead_letter_queue, n)]
        total = stats.visible + stats.in_flight + stats.delayed
        return self.page(request, "dead_letters.html", plan=plan, letters=letters, total=total, n=n)

    async def find_letter(self, request: Request) -> Any:
        plan = self.plan(request.path_params["queue"])
        n = _int(request.query_params.get("n"), MAX_PEEK, 1, MAX_PEEK)
        message_id = request.path_params["message_id"]
        for delivery in await self.calls.run(self.admin.peek, plan.dead_letter_queue, n):
            if delivery.message_id == message_id:
                return plan, dead_letter(delivery, self.resolve_body)
        raise HTTPException(404, f"no dead letter {message_id!r} among the first {n} of {plan.dead_letter_queue} (redriven or purged?)")

    async def letter(self, request: Request) -> Response:
        plan, letter = await self.find_letter(request)
        return self.page(request, "dead_letter.html", plan=plan, letter=letter, limit=PAGE_CHARS)

    async def letter_raw(self, request: Request) -> Response:
        _, letter = await self.find_letter(request)
        return PlainTextResponse(letter.record["body"])

    async def redrive(self, request: Request) -> Response:
        form = await self.action(request)
        plan = self.plan(request.path_params["queue"])
        limit = _int(str(form.get("max") or ""), None, 1, None)
        await self.calls.run(require_queue, self.admin, plan.dead_letter_queue)
        await self.calls.run(require_queue, self.admin, plan.physical)
        moved = await self.calls.run(self.admin.move_messages, plan.dead_letter_queue, plan.physical, limit)
        message = f"moved {_plural(moved, 'dead letter')} back to queue {plan.queue} ({plan.physical})"
        return self.page(request, "result.html", title="Redrive", message=message, ok=True, back=_path(request, "dead_letters", queue=plan.queue))

    async def purge(self, request: Request) -> Response:
        form = await self.action(request)
        plan = self.plan(request.path_params["queue"])
        back = _path(request, "dead_letters", queue=plan.queue)
        if form.get("confirm") != plan.dead_letter_queue:
            message = f"not purged: type the queue's name, {plan.dead_letter_queue}, to confirm"
            return self.page(request, "result.html", 400, title="Purge", message=message, ok=False, back=back)
        await self.calls.run(require_queue, self.admin, plan.dead_letter_queue)
        purged = await self.calls.run(self.admin.purge, plan.dead_letter_queue)
        message = f"purged {_plural(purged, 'message')} from {plan.dead_letter_queue}"
        return self.page(request, "result.html", title="Purge", message=message, ok=True, back=back)

    # -- schedules ------------------------------------------------------------------------------
    async def schedules(self, request: Request) -> Response:
        engine = request.query_params.get("engine", "rules")
        if engine not in ("rules", "scheduler"):
            raise HTTPException(400, f"engine must be rules or scheduler, got {engine!r}")
        rows, notes = await self.calls.run(schedule_rows, self.app, engine)
        return self.page(request, "schedules.html", rows=rows, notes=notes, engine=engine)

    # -- login ----------------------------------------------------------------------------------
    def login_page(self, request: Request, status: int = 200, error: str | None = None) -> Response:
        target = _safe_next(request, request.query_params.get("next") or request.url.path)
        return self.page(request, "login.html", status, error=error, next=target, logged_in=False)

    async def login(self, request: Request) -> Response:
        if request.method == "GET" or self.token is None:
            return self.login_page(request)
        form = await request.form()
        if not security.csrf_ok(request.cookies.get(security.CSRF_COOKIE), form.get(security.CSRF_FIELD)):
            return self.login_page(request, 403, "missing or wrong CSRF token: reload the page and try again")
        given = form.get("token")
        if not security.token_ok(given if isinstance(given, str) else None, self.token):
            return self.login_page(request, 401, "wrong token")
        response = RedirectResponse(_safe_next(request, form.get("next")), status_code=303)
        response.headers.append("set-cookie", security.session_cookie(self.token, _root(request), secure=request.url.scheme == "https"))
        return response

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        if not security.csrf_ok(request.cookies.get(security.CSRF_COOKIE), form.get(security.CSRF_FIELD)):
            raise HTTPException(403, "missing or wrong CSRF token")
        response = RedirectResponse(_path(request, "login"), status_code=303)
        response.headers.append("set-cookie", security.cleared_session_cookie(_root(request)))
        return response

    def unauthorized(self, scope: Any) -> Any:
        """The 401 of a request without the token: the login form for a browser, one line for a script."""

        async def respond(scope: Any, receive: Any, send: Any) -> None:
            request = Request(scope, receive)
            if "text/html" in request.headers.get("accept", ""):
                response = self.login_page(request, 401, None)
            else:
                response = PlainTextResponse("401 unauthorized: send Authorization: Bearer $CLOUDQ_DASHBOARD_TOKEN", 401)
            response.headers["www-authenticate"] = 'Bearer realm="cloudq dashboard"'
            await response(scope, receive, send)

        return respond

    async def error(self, request: Request, exc: Exception) -> Response:
        """Every error as a page with one line: an HTTP error's detail, a broker's message, never a traceback."""
        if isinstance(exc, HTTPException):
            status, line = exc.status_code, str(exc.detail)
        elif isinstance(exc, CloudQError):
            status, line = 503, f"{type(exc).__name__}: {exc}"
        else:
            import structlog

            structlog.get_logger("cloudq.dashboard").exception("dashboard.error", path=request.url.path)
            status, line = 500, f"internal error: {type(exc).__name__} (logged)"
        return self.page(request, "result.html", status, title=f"Error {status}", message=line, ok=False, back=None)

    async def home(self, request: Request) -> Response:
        return RedirectResponse(_path(request, "queues"), status_code=303)


def build(
    app: App,
    *,
    read_only: bool = False,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    resolve_body: BodyResolver | None = None,
    refresh_s: float = 5.0,
) -> Starlette:
    """The ASGI app behind :func:`cloudq.dashboard.create_app` (see there)."""
    token = token if token is not None else (os.environ.get("CLOUDQ_DASHBOARD_TOKEN") or None)
    dash = Dashboard(app, read_only=read_only, token=token, resolve_body=resolve_body, refresh_s=refresh_s)
    routes = [
        Route("/", dash.home, name="home"),
        Route("/queues", dash.queues, name="queues"),
        Route("/queues/{queue}/dead-letters", dash.dead_letters, name="dead_letters"),
        Route("/queues/{queue}/dead-letters/redrive", dash.redrive, methods=["POST"], name="redrive"),
        Route("/queues/{queue}/dead-letters/purge", dash.purge, methods=["POST"], name="purge"),
        Route("/queues/{queue}/dead-letters/{message_id}", dash.letter, name="letter"),
        Route("/queues/{queue}/dead-letters/{message_id}/raw", dash.letter_raw, name="letter_raw"),
        *jobs.routes(dash),
        Route("/schedules", dash.schedules, name="schedules"),
        Route("/login", dash.login, methods=["GET", "POST"], name="login"),
        Route("/logout", dash.logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    guard = Middleware(security.Guard, token=token, allowed_hosts=allowed_hosts, unauthorized=dash.unauthorized)
    handlers = {HTTPException: dash.error, CloudQError: dash.error, Exception: dash.error}
    asgi = Starlette(routes=routes, middleware=[guard], exception_handlers=handlers)
    asgi.state.dashboard = dash
    return asgi


def _int(text: str | None, default: int | None, low: int, high: int | None) -> Any:
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPException(400, f"expected a whole number, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise HTTPException(400, f"expected {low}..{high}, got {value}" if high else f"expected at least {low}, got {value}")
    return value


@jinja2.pass_context
def _path_for(context: Any, name: str, /, **params: Any) -> str:
    return str(context["request"].url_for(name, **params).path)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _when(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "–"


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _root(request: Request) -> str:
    return request.scope.get("root_path") or "/"


def _safe_next(request: Request, target: object) -> str:
    """Where the login form returns to: a path of this dashboard, never another site (``//evil``)."""
    root = request.scope.get("root_path", "")
    ok = isinstance(target, str) and target.startswith(root + "/") and not target.startswith("//") and "\\" not in target
    if ok and target != _path(request, "login"):
        return str(target)
    return _path(request, "queues")


def _path(request: Request, name: str, **params: Any) -> str:
    return str(request.url_for(name, **params).path)

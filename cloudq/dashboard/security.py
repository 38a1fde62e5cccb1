"""Who may see the dashboard and who may act through it: token, session cookie, CSRF, headers.

The dashboard shows what producers wrote and it can purge queues, so:

* Bound to a loopback address it needs no token, but answers only requests whose Host is a loopback name
  (a page elsewhere that rebinds its DNS name to 127.0.0.1 gets 400, not the dashboard).
* With ``CLOUDQ_DASHBOARD_TOKEN`` set (required for any other bind), every request but the login form and
  the static files needs ``Authorization: Bearer <token>`` or the session cookie the login form sets; else
  401. Both compare in constant time (:func:`hmac.compare_digest`). The cookie holds an HMAC of the token,
  never the token, so changing the token ends every session.
* Every state-changing request is a POST with a CSRF token: a random value in a ``SameSite=Strict`` cookie
  that the form must repeat (double submit). A cross-site form carries neither.
* Every response forbids framing, inline scripts and sniffing (Content-Security-Policy and friends): even
  markup that escaped the templates' autoescaping could not run.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "SESSION_COOKIE", "Guard", "csrf_ok", "session_value", "token_ok"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "cloudq_session"
CSRF_COOKIE = "cloudq_csrf"
CSRF_FIELD = "csrf"
OPEN_PATHS = ("/login", "/static/")
HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]  # fmt: skip


def session_value(token: str) -> str:
    """What the session cookie holds: derived from the token, useless without it, changed with it."""
    return hmac.new(token.encode(), b"cloudq-dashboard-session-v1", hashlib.sha256).hexdigest()


def token_ok(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def csrf_ok(cookie: str | None, submitted: object) -> bool:
    return bool(cookie) and isinstance(submitted, str) and hmac.compare_digest(cookie.encode(), submitted.encode())  # type: ignore[union-attr]


class Guard:
    """ASGI middleware: host check, authentication, the CSRF cookie, and the security headers.

    ``unauthorized(scope)`` builds the 401 response (the login page for a browser); it is the web
    layer's, so this module knows nothing of templates."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Sequence[str] | None,
        unauthorized: Callable[[Scope], ASGIApp],
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None
        self.unauthorized = unauthorized

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        cookies = _cookies(headers.get("cookie", ""))
        csrf = cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf"] = csrf
        send = _with_headers(send, None if CSRF_COOKIE in cookies else _cookie(CSRF_COOKIE, csrf, _cookie_path(scope)))
        if self.allowed_hosts is not None and _hostname(headers.get("host", "")) not in self.allowed_hosts:
            await _plain(400, "400 bad request: this dashboard answers only to a loopback host name")(scope, receive, send)
        elif self.token is not None and not _relative(scope).startswith(OPEN_PATHS) and not self.authenticated(headers, cookies):
            await self.unauthorized(scope)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def authenticated(self, headers: dict[str, str], cookies: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token_ok(given.strip(), self.token):
            return True
        return token_ok(cookies.get(SESSION_COOKIE), session_value(self.token))


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";") if "=" in part)
    return {name: value for name, _, value in pairs}


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8181
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


def _relative(scope: Scope) -> str:
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def _cookie_path(scope: Scope) -> str:
    return str(scope.get("root_path") or "/")


def _cookie(name: str, value: str, path: str, *, max_age: int | None = None) -> bytes:
    age = f"; Max-Age={max_age}" if max_age is not None else ""
    return f"{name}={value}; Path={path}; HttpOnly; SameSite=Strict{age}".encode("latin-1")


def _with_headers(send: Send, set_cookie: bytes | None) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            extra = list(HEADERS) + ([(b"set-cookie", set_cookie)] if set_cookie else [])
            present = {k.lower() for k, _ in message.get("headers", [])}
            message["headers"] = list(message.get("headers", [])) + [(k, v) for k, v in extra if k not in present or k == b"set-cookie"]
        await send(message)

    return sending


def _plain(status: int, text: str) -> ASGIApp:
    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": text.encode()})

    return respond


def session_cookie(token: str, path: str, *, secure: bool = False) -> str:
    """The Set-Cookie value the login form answers with (a browser session: no Max-Age)."""
    return _cookie(SESSION_COOKIE, session_value(token), path).decode("latin-1") + ("; Secure" if secure else "")


def cleared_session_cookie(path: str) -> str:
    return _cookie(SESSION_COOKIE, "", path, max_age=0).decode("latin-1")

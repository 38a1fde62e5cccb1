"""``cloudq dashboard``: a web page for queues, dead letters, jobs and schedules (the ``dashboard`` extra).

Run it with ``cloudq dashboard APP`` (127.0.0.1:8181), or mount it in your own ASGI app::

    from cloudq.dashboard import create_app
    routes = [Mount("/cloudq", app=create_app(app, token=os.environ["CLOUDQ_DASHBOARD_TOKEN"]))]

It reads the broker through the same admin code as ``cloudq status`` and ``cloudq dlq``, so it works on
SQS and the local broker alike, and needs no server or database of its own. Nothing of Starlette, Jinja2
or uvicorn is imported until :func:`create_app` (or :func:`serve`) runs: the worker and the Lambda
handler never pay for them.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import TYPE_CHECKING, Any

from cloudq.errors import ConfigurationError

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.dashboard.views import BodyResolver

__all__ = ["check_bind", "create_app", "is_loopback", "serve"]

EXTRA_HINT = "the dashboard needs the dashboard extra: pip install 'cloudq[dashboard]'"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"]


def create_app(
    app: App,
    *,
    read_only: bool = False,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    resolve_body: BodyResolver | None = None,
    refresh_s: float = 5.0,
) -> Any:
    """The dashboard of ``app`` as an ASGI app (Starlette).

    ``token``: required on every request (bearer header or the login form's cookie); default
    ``$CLOUDQ_DASHBOARD_TOKEN``, none if unset. ``read_only``: no redrive, purge or cancel (hidden and
    refused). ``allowed_hosts``: Host names to answer to (``cloudq dashboard`` passes the loopback names
    when it runs without a token). ``resolve_body``: turns a stored body into the one to show (a payload
    kept in S3, say). ``refresh_s``: how often the queues page refreshes itself.
    """
    try:
        from cloudq.dashboard.web import build
    except ImportError as exc:
        raise ConfigurationError(f"{EXTRA_HINT} (missing: {exc.name})") from exc
    return build(app, read_only=read_only, token=token, allowed_hosts=allowed_hosts, resolve_body=resolve_body, refresh_s=refresh_s)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve producers' data and a purge button beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ConfigurationError(f"refusing to bind the dashboard to {host}: a non-loopback host requires CLOUDQ_DASHBOARD_TOKEN")


def serve(app: App, *, host: str = "127.0.0.1", port: int = 8181, read_only: bool = False, token: str | None = None) -> None:
    """Run the dashboard with uvicorn until interrupted (what ``cloudq dashboard`` calls)."""
    check_bind(host, token)
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigurationError(f"{EXTRA_HINT} (missing: {exc.name})") from exc
    hosts = None if token else LOOPBACK_NAMES + ([host] if host not in LOOPBACK_NAMES else [])
    asgi = create_app(app, read_only=read_only, token=token or None, allowed_hosts=hosts)
    mode = " (read-only)" if read_only else ""
    print(f"cloudq dashboard for app {app.name!r} on http://{host}:{port}/{mode}", file=sys.stderr, flush=True)
    uvicorn.run(asgi, host=host, port=port, log_level="warning", server_header=False, lifespan="off")

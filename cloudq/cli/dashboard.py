"""``cloudq dashboard [APP] [--host 127.0.0.1] [--port 8181] [--read-only]``: the web dashboard.

Registered like every command group; Starlette, Jinja2 and uvicorn are imported only when the command
runs (:mod:`cloudq.dashboard`). The bind is checked before the app is imported: a non-loopback host
without ``CLOUDQ_DASHBOARD_TOKEN`` is one line and exit 2, whatever the app would have done.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from cloudq.cli.flags import int_in
from cloudq.cli.loading import APP_HELP

__all__ = ["add_dashboard"]


def cmd_dashboard(ns: argparse.Namespace) -> int:
    from cloudq.cli.loading import load_app
    from cloudq.dashboard import check_bind, serve

    token = os.environ.get("CLOUDQ_DASHBOARD_TOKEN") or None
    check_bind(ns.host, token)
    app = load_app(ns.app)
    try:
        serve(app, host=ns.host, port=ns.port, read_only=ns.read_only, token=token)
    finally:
        app.close()
    return 0


def add_dashboard(commands: Any) -> None:
    dashboard = commands.add_parser(
        "dashboard", usage="cloudq dashboard [APP] [--host 127.0.0.1] [--port 8181] [--read-only]",
        help="a web page for queues, dead letters, jobs and schedules (the dashboard extra)",
    )  # fmt: skip
    dashboard.add_argument("app", nargs="?", help=APP_HELP)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs CLOUDQ_DASHBOARD_TOKEN)")
    dashboard.add_argument("--port", type=int_in(0, 65535), default=8181, help="port (default 8181)")
    dashboard.add_argument("--read-only", action="store_true", help="no redrive, purge or cancel: hidden and refused")
    dashboard.set_defaults(func=cmd_dashboard)

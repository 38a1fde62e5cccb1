"""``load_app``: the one place the CLI turns an APP argument into a :class:`cloudq.App`.

Every command group imports it from here, never from the package: ``cloudq/cli/__init__.py``
re-exports ``main``, which imports every command group, so an import back would be a circle.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from cloudq.errors import ConfigurationError

__all__ = ["APP_HELP", "load_app"]

APP_HELP = "module:attribute (default: $CLOUDQ_APP)"  # the APP argument of every command that loads one


def load_app(spec: str | None) -> Any:
    """Import ``module:attribute`` (cwd on sys.path, like gunicorn/uvicorn) and check it is an App."""
    from cloudq.app import App

    spec = spec or os.environ.get("CLOUDQ_APP")
    if not spec:
        raise ConfigurationError("no app given: pass APP as module:attribute or set CLOUDQ_APP")
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"APP must look like module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import app module {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigurationError(f"{spec!r} is not a cloudq.App (got {type(app).__name__})")
    return app

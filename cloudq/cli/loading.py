"""``load_app``: the one place the CLI turns an APP argument into a :class:`cloudq.App`.

Every command group imports it from here, never from the package: ``cloudq/cli/__init__.py``
re-exports ``main``, which imports every command group, so an import back would be a circle.

Whatever goes wrong while the app module is imported is the user's input, not cloudq's failure: it
becomes one line naming the file and line (a :class:`~cloudq.errors.ConfigurationError`, exit 2), with
the original exception chained so that ``cloudq --traceback`` can print all of it.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from cloudq.errors import CloudQError, ConfigurationError

__all__ = ["APP_HELP", "load_app", "warn_if_default_region"]

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
    module = _import(module_name)
    if not hasattr(module, attribute):
        raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}{_apps_hint(module, App)}")
    app = getattr(module, attribute)
    if not isinstance(app, App):
        raise ConfigurationError(f"{spec!r} is not a cloudq.App (got {type(app).__name__})")
    return app


def _import(module_name: str) -> Any:
    """The app module; a cloudq error raised by its code (a bad setting) passes through as it is."""
    try:
        return importlib.import_module(module_name)
    except CloudQError:
        raise
    except ImportError as exc:
        raise ConfigurationError(f"cannot import app module {module_name!r}: {exc}") from exc
    except SyntaxError as exc:  # the file and line are the error's own, not a frame's
        where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
        raise ConfigurationError(f"cannot import app module {module_name!r}: SyntaxError: {exc.msg}{where}") from exc
    except Exception as exc:  # noqa: BLE001 - any error at import is the app's, reported in one line
        raise ConfigurationError(f"cannot import app module {module_name!r}: {_one_line(exc)}{_raised_at(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _raised_at(exc: BaseException) -> str:
    """Where the exception was raised, skipping the import machinery's own frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen ")]
    return f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""


def _apps_hint(module: Any, app_class: type) -> str:
    """The module's attributes that are apps, so a typo in the attribute says what to type instead."""
    apps = sorted(name for name, value in vars(module).items() if isinstance(value, app_class))
    return f"; its cloudq.App: {', '.join(apps)}" if apps else ""


def warn_if_default_region(app: Any) -> None:
    """On real AWS with no region configured anywhere, say that us-east-1 is used: a queue in another
    region would otherwise look missing. LocalStack ignores the region, so it keeps the silent default."""
    settings = app.settings
    if settings.broker != "sqs":
        return
    from cloudq.aws.clients import DEFAULT_REGION, is_local_endpoint, region_is_default

    if region_is_default(settings) and not is_local_endpoint(settings.endpoint_url):
        from cloudq.logs import get_logger

        get_logger("cloudq.cli").warning(
            "aws.region_defaulted", region=DEFAULT_REGION,
            hint=f"no CLOUDQ_REGION, AWS_REGION or AWS_DEFAULT_REGION is set, so cloudq uses {DEFAULT_REGION}",
        )  # fmt: skip

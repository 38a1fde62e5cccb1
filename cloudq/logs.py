"""structlog configuration for cloudq's entry points (CLI, worker, Lambda handler).

Libraries never configure logging; only entry points call :func:`configure_logging`.
JSON lines with ISO UTC timestamps when stdout is not a terminal (containers, Lambda,
CI), a readable console renderer when it is.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
import structlog.tracebacks

__all__ = ["configure_logging"]


def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Route structlog (and stdlib logging, for botocore) to ``stream`` (stdout) in one format."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        # show_locals=False: frame locals hold job arguments and maybe secrets, which never go to logs
        tracebacks = structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        processors += [tracebacks, structlog.processors.JSONRenderer()]
    else:
        # plain tracebacks: rich's default shows locals, which may hold secrets
        processors += [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,  # True would pin module loggers to the first stream for good
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

"""structlog configuration for cloudq's entry points (CLI, worker, Lambda handler).

Libraries never configure logging; only entry points call :func:`configure_logging`.
JSON lines with ISO UTC timestamps when stdout is not a terminal (containers, Lambda,
CI), a readable console renderer when it is.

Task code often logs with the standard library (``logging.getLogger(__name__).info(...)``), and so
do the libraries it calls. Those records go through structlog's ``ProcessorFormatter`` on one root
handler, so that every line a worker or a Lambda function writes has the one format, the job's
bound context (``job_id``, ``task``, ``queue``, ``attempt``...: contextvars follow a sync task into
its thread) and the configured level. The AWS SDK's own loggers stay at WARNING or above: at DEBUG
botocore writes several lines per API call, and even the check costs on the hot path.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
import structlog.tracebacks

__all__ = ["configure_logging"]

# Loggers of the AWS SDK stack: below WARNING they are chatter (request dumps, retries, connection pools).
_CHATTY = ("botocore", "boto3", "aiobotocore", "aioboto3", "urllib3", "s3transfer")


def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stdout) in one format, at ``level``."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderers = _renderers(use_json)
    structlog.configure(
        processors=[*shared, *renderers],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,  # True would pin module loggers to the first stream for good
    )
    _route_stdlib(stream, numeric, shared, renderers)


def _renderers(use_json: bool) -> list[structlog.typing.Processor]:
    """The end of the chain, shared by structlog's own events and stdlib records."""
    if use_json:
        # show_locals=False: frame locals hold job arguments and maybe secrets, which never go to logs
        tracebacks = structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        return [tracebacks, structlog.processors.JSONRenderer()]
    # plain tracebacks: rich's default shows locals, which may hold secrets
    return [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]


class _StructlogHandler(logging.Handler):
    """Writes formatted stdlib records through a structlog PrintLogger on the same stream: it shares
    that stream's lock with structlog's own lines, so a line from a task's thread never lands in the
    middle of another."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._out = structlog.PrintLogger(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract: a failing handler reports, never raises
            self.handleError(record)


def _route_stdlib(stream: TextIO, level: int, shared: list[structlog.typing.Processor], renderers: list[structlog.typing.Processor]) -> None:
    """One root handler in the structlog format at ``level``; the AWS SDK at WARNING or above."""
    pre_chain: list[structlog.typing.Processor] = [*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(), _drop_formatter_fields]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if _replaced(handler):
            root.removeHandler(handler)
    root.addHandler(_StructlogHandler(stream, formatter))
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def _drop_formatter_fields(logger: object, method: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """``message`` and ``asctime`` are not extras: another handler's Formatter (pytest's, a file handler's)
    may have set them on the shared record. ``logging`` refuses both names in ``extra=``, so none is lost."""
    event_dict.pop("message", None)
    event_dict.pop("asctime", None)
    return event_dict


def _replaced(handler: logging.Handler) -> bool:
    """Handlers that would write plain text among the structlog lines: an earlier configure_logging's,
    a ``logging.basicConfig`` to the console, and the one the Lambda Python runtime installs before
    the handler module is imported (``LambdaLoggerHandler``). File and test-capture handlers stay."""
    if isinstance(handler, _StructlogHandler) or type(handler).__name__.startswith("LambdaLoggerHandler"):
        return True
    return type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)

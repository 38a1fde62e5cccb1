"""Logging for cloudq: a lazy logger facade, the job context, and the entry points' configuration.

Libraries never configure logging; only entry points call :func:`configure_logging`.
JSON lines with ISO UTC timestamps when stdout is not a terminal (containers, Lambda,
CI), a readable console renderer when it is.

Task code often logs with the standard library (``logging.getLogger(__name__).info(...)``), and so
do the libraries it calls. Those records go through structlog's ``ProcessorFormatter`` on one root
handler, so that every line a worker or a Lambda function writes has the one format, the job's
bound context (``job_id``, ``task``, ``queue``, ``attempt``...: contextvars follow a sync task into
its thread) and the configured level. The AWS SDK's own loggers stay at WARNING or above: at DEBUG
botocore writes several lines per API call, and even the check costs on the hot path.

**structlog is imported when a line is written, not before** (issue 10's start-up figure): importing it
costs 30-40 ms, and some 140 ms more where rich is installed (structlog imports rich whenever it can).
A worker at ``CLOUDQ_LOG_LEVEL=WARNING`` usually writes nothing, so cloudq's modules log through
:func:`get_logger`'s facade, which drops a record below the configured level without importing
structlog; :func:`configure_logging` keeps the configuration pending until the first line (or applies
it at once when structlog is loaded already: the app imported it). The job context goes the same way
(:func:`bind_context`): into structlog's contextvars once structlog is loaded, where task code and
tests read it (``structlog.contextvars.get_contextvars()``), else into a contextvar of cloudq's own
that the configured chain merges. Once structlog is loaded the facade only forwards to it.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from types import ModuleType

    from structlog.typing import EventDict, Processor

__all__ = ["Logger", "bind_context", "clear_context", "configure_logging", "get_logger"]

# Loggers of the AWS SDK stack: below WARNING they are chatter (request dumps, retries, connection pools).
_CHATTY = ("botocore", "boto3", "aiobotocore", "aioboto3", "urllib3", "s3transfer")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}

_structlog: ModuleType | None = None
# configure_logging's arguments while structlog is not loaded yet, and the level below which the facade
# drops a record meanwhile (0: nothing pending, every record goes to structlog).
_pending: tuple[bool, int, TextIO] | None = None
_gate = 0
# The job context bound while structlog was not loaded (see bind_context); merged by the configured chain.
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("cloudq_log_context", default={})


def _module() -> ModuleType | None:
    """structlog, if anything imported it (cloudq, the app, a test); None if not."""
    return _structlog or sys.modules.get("structlog")


def _loaded() -> ModuleType | None:
    """:func:`_module`, with a pending configuration applied."""
    global _structlog
    _structlog = _module()
    if _structlog is not None and _pending is not None:
        _apply()
    return _structlog


def _import() -> ModuleType:
    import structlog

    global _structlog
    _structlog = structlog
    return _loaded() or structlog


# -- the facade --------------------------------------------------------------------------------
class Logger:
    """structlog's logger API for cloudq's own events (``info(event, **fields)``, ``bind``...),
    importing structlog only for a record that will be written.

    A module's logger forwards to structlog's lazy proxy, which reads the configuration at each call
    (``configure_logging`` again, or a test's ``capture_logs``, takes effect at once). One from
    :meth:`bind` is for a short scope (a delivery): at its first written line it becomes one structlog
    bound logger, assembled once rather than at every call."""

    __slots__ = ("_name", "_fields", "_bound", "_proxy")

    def __init__(self, name: str, fields: dict[str, Any] | None = None, *, bound: bool = False) -> None:
        self._name = name
        self._fields = fields
        self._bound = bound
        self._proxy: Any = None

    def bind(self, **fields: Any) -> Logger:
        return Logger(self._name, {**self._fields, **fields} if self._fields else fields, bound=True)

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if _gate and _LEVELS.get(method, logging.ERROR) < _gate and _module() is None:
            return  # below the configured level, and structlog not loaded: not worth loading it for this
        proxy = self._proxy
        if proxy is None or _pending is not None:
            structlog = _loaded() or _import()
            proxy = structlog.get_logger(self._name)
            if self._bound:
                proxy = proxy.bind(**(self._fields or {}))
            self._proxy = proxy
        getattr(proxy, method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._emit("exception", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit("critical", event, fields)


def get_logger(name: str) -> Logger:
    """A logger for cloudq's own events under ``name`` (``cloudq.worker``...)."""
    return Logger(name)


def bind_context(**fields: Any) -> None:
    """Bind ``fields`` (job_id, task, queue...) to every line written in the current context: structlog's
    contextvars when it is loaded, else cloudq's own (the configured chain merges both)."""
    structlog = _module()
    if structlog is not None:
        structlog.contextvars.bind_contextvars(**fields)
    else:
        _context.set({**_context.get(), **fields})


def clear_context() -> None:
    """Forget what :func:`bind_context` (or structlog's ``bind_contextvars``) bound in this context."""
    _context.set({})
    structlog = _module()
    if structlog is not None:
        structlog.contextvars.clear_contextvars()


def _merge_context(logger: object, method: str, event_dict: EventDict) -> EventDict:
    for key, value in _context.get().items():
        event_dict.setdefault(key, value)
    return event_dict


# -- configuration (entry points) -----------------------------------------------------------------
def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stdout) in one format, at ``level``: now if
    structlog is loaded, else at the first line written (see the module's docstring)."""
    global _pending, _gate
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog = _module()
    if structlog is not None:  # loaded: configure now, over whatever was configured before
        structlog.reset_defaults()
    _pending, _gate = (use_json, numeric, stream), numeric
    root = logging.getLogger()
    for handler in list(root.handlers):
        if _replaced(handler):
            root.removeHandler(handler)
    root.addHandler(_StructlogHandler(stream, use_json))
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    _loaded()


def _apply() -> None:
    """structlog.configure with the pending configuration (structlog is loaded), unless structlog was
    configured since configure_logging ran (the demo's own set-up, say): the later one stands, as if
    configure_logging had applied at once."""
    global _pending, _gate
    assert _pending is not None and _structlog is not None
    (use_json, numeric, stream), _pending, _gate = _pending, None, 0
    structlog = _structlog
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[*_shared(), *_renderers(use_json)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,  # True would pin module loggers to the first stream for good
    )


def _shared() -> list[Processor]:
    assert _structlog is not None
    processors = _structlog.processors
    return [_merge_context, _structlog.contextvars.merge_contextvars, processors.add_log_level, processors.TimeStamper(fmt="iso", utc=True)]


def _renderers(use_json: bool) -> list[Processor]:
    """The end of the chain, shared by structlog's own events and stdlib records."""
    import structlog.tracebacks

    if use_json:
        # show_locals=False: frame locals hold job arguments and maybe secrets, which never go to logs
        tracebacks = structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        return [tracebacks, structlog.processors.JSONRenderer()]
    # plain tracebacks: rich's default shows locals, which may hold secrets
    return [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]


class _StructlogHandler(logging.Handler):
    """Writes stdlib records in the structlog format on the same stream, through a structlog PrintLogger:
    it shares that stream's lock with structlog's own lines, so a line from a task's thread never lands
    in the middle of another. Its formatter is built at the first record (structlog loaded then)."""

    def __init__(self, stream: TextIO, use_json: bool) -> None:
        super().__init__()
        self._stream = stream
        self._use_json = use_json
        self._out: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._out is None:
                structlog = _loaded() or _import()
                self.setFormatter(_formatter(self._use_json))
                self._out = structlog.PrintLogger(self._stream)
            self._out.msg(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract: a failing handler reports, never raises
            self.handleError(record)


def _formatter(use_json: bool) -> logging.Formatter:
    """stdlib records through the shared processors, the logger's name and their extras, then the renderers."""
    import structlog

    pre_chain: list[Processor] = [*_shared(), structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(), _drop_formatter_fields]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(use_json)],
    )


def _drop_formatter_fields(logger: object, method: str, event_dict: EventDict) -> EventDict:
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

"""cloudq: a cloud-native task queue for Python on Amazon SQS.

Public API only; everything else lives in private-by-convention modules::

    import cloudq
    app = cloudq.App("shop")

    @app.task
    def send_welcome_email(user_email: str) -> None: ...

    send_welcome_email.delay("a@b.c")

The exceptions are imported with the package; every other name loads its module on first access
(PEP 562), ``__version__`` included (the installed metadata's, via :mod:`importlib.metadata`), so
``import cloudq`` costs a Lambda cold start almost nothing. An app built without explicit settings
reads ``CLOUDQ_*`` without pydantic (:mod:`cloudq.settings_env`); pydantic-settings loads with
``cloudq.Settings``, and boto3/aioboto3 only when the SQS broker is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudq.errors import (
    ArgumentsError,
    BrokerError,
    BrokerUnavailable,
    CloudQError,
    ConfigurationError,
    EnvelopeError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    QueueNotFound,
    Reject,
    ResultUnavailable,
    Retry,
    ScheduleError,
    TaskNotFound,
    TaskSignal,
)

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.envelope import Envelope
    from cloudq.job import Job, current_job
    from cloudq.jobs.ref import JobRef
    from cloudq.jobs.state import JobError, JobState
    from cloudq.jobs.store import JobStore
    from cloudq.middleware import Middleware
    from cloudq.producer import SendOptions
    from cloudq.retry import Outcome
    from cloudq.settings import Settings
    from cloudq.tasks import Task

    __version__: str

__all__ = [
    "App",
    "ArgumentsError",
    "BrokerError",
    "BrokerUnavailable",
    "CloudQError",
    "ConfigurationError",
    "Envelope",
    "EnvelopeError",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobRef",
    "JobState",
    "JobStore",
    "Middleware",
    "Outcome",
    "QueueNotFound",
    "Reject",
    "ResultUnavailable",
    "Retry",
    "ScheduleError",
    "SendOptions",
    "Settings",
    "Task",
    "TaskNotFound",
    "TaskSignal",
    "__version__",
    "current_job",
]

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "App": "cloudq.app",
    "Envelope": "cloudq.envelope",
    "Job": "cloudq.job",
    "JobError": "cloudq.jobs.state",
    "JobRef": "cloudq.jobs.ref",
    "JobState": "cloudq.jobs.state",
    "JobStore": "cloudq.jobs.store",
    "Middleware": "cloudq.middleware",
    "Outcome": "cloudq.retry",
    "SendOptions": "cloudq.producer",
    "Settings": "cloudq.settings",
    "Task": "cloudq.tasks",
    "current_job": "cloudq.job",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    if name not in _LAZY:
        raise AttributeError(f"module 'cloudq' has no attribute {name!r}")
    # __import__, the import statement's own path: -X importtime does not see importlib.import_module
    value = getattr(__import__(_LAZY[name], fromlist=[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def _version() -> str:
    """The installed distribution's version: pyproject.toml is the one place it is written."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("cloudq")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        value = "0+unknown"
    globals()["__version__"] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

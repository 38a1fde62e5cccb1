"""cloudq: a cloud-native task queue for Python on Amazon SQS.

Public API only; everything else lives in private-by-convention modules::

    import cloudq
    app = cloudq.App("shop")

    @app.task
    def send_welcome_email(user_email: str) -> None: ...

    send_welcome_email.delay("a@b.c")
"""

from cloudq.app import App
from cloudq.envelope import Envelope
from cloudq.errors import (
    ArgumentsError,
    BrokerError,
    BrokerUnavailable,
    CloudQError,
    ConfigurationError,
    EnvelopeError,
    QueueNotFound,
    Reject,
    Retry,
    ScheduleError,
    TaskNotFound,
    TaskSignal,
)
from cloudq.settings import Settings
from cloudq.tasks import JobRef, SendOptions, Task

__version__ = "0.1.0"

__all__ = [
    "App",
    "ArgumentsError",
    "BrokerError",
    "BrokerUnavailable",
    "CloudQError",
    "ConfigurationError",
    "Envelope",
    "EnvelopeError",
    "JobRef",
    "QueueNotFound",
    "Reject",
    "Retry",
    "ScheduleError",
    "SendOptions",
    "Settings",
    "Task",
    "TaskNotFound",
    "TaskSignal",
    "__version__",
]

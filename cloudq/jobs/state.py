"""What a job store holds: :class:`JobState` (what ``ref.status()`` returns) and the records the stores write.

Every store keeps the same fields under the same names, as plain values (strings, numbers, epoch
seconds); :func:`state_from_record` turns one store row into a :class:`JobState`, so the three stores
differ only in how they read and write rows, never in what a row means. Results travel as JSON text:
DynamoDB would otherwise need Decimal for every float, and a result that is not JSON is caught here,
once, as a ``result_error`` instead of failing the job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Sequence
from typing import Any, Literal

from cloudq.errors import ConfigurationError

__all__ = [
    "ACTIVE",
    "CANCELLABLE",
    "FINAL",
    "Finish",
    "JobError",
    "JobState",
    "NewJob",
    "Status",
    "default_unique_key",
    "encode_result",
    "state_from_record",
]

Status = Literal["queued", "running", "retrying", "succeeded", "failed", "dead_lettered", "cancelled"]
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "dead_lettered", "cancelled"})
"""Terminal states: the job will not run again (a redrive of a dead letter is a new run)."""
ACTIVE: frozenset[str] = frozenset({"queued", "running", "retrying"})
"""States that hold a unique key."""
CANCELLABLE: frozenset[str] = frozenset({"queued", "retrying"})
"""States in which a cancel means the job never runs (again): it is waiting in its queue."""
SKIP_ON_DELIVERY: frozenset[str] = frozenset({"succeeded", "cancelled"})
"""A delivery of a job in these states is acked without running: idempotency and cancellation."""


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job did not succeed: the exception's ``type`` and ``message``, and the DLQ ``reason``."""

    type: str
    message: str
    reason: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(frozen=True, slots=True)
class JobState:
    """One job as its store last saw it. ``progress`` is 0..1 (``current_job().progress``) with its
    ``progress_message``; ``result_error`` says why a succeeded job's result is not stored."""

    id: str
    status: Status
    task: str = ""
    queue: str = ""
    attempts: int = 0
    result: Any = None
    error: JobError | None = None
    progress: float | None = None
    progress_message: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    result_error: str | None = None
    cancel_requested: bool = False

    @property
    def done(self) -> bool:
        return self.status in FINAL

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``cloudq job --json`` and the dashboard."""
        out: dict[str, Any] = {}
        for name in self.__slots__:  # type: ignore[attr-defined]
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, JobError):
                value = {"type": value.type, "message": value.message, "reason": value.reason}
            out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job the producer is about to send: its ``queued`` record."""

    id: str
    task: str
    queue: str
    enqueued_at: float
    unique_key: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """The state a run ends in (``retrying`` included), written once after its message is settled.

    ``task``/``queue``/``enqueued_at`` let a store create the record if it has none (a job a plain
    boto3 program sent, or one whose queued write was dropped)."""

    status: Status
    task: str
    queue: str
    attempts: int
    enqueued_at: float | None
    result_json: str | None = None
    error: JobError | None = None
    result_error: str | None = None
    unique_key: str | None = None


def encode_result(value: Any, limit_bytes: int) -> tuple[str | None, str | None]:
    """``(json_text, None)`` for a result the store can hold, else ``(None, result_error)``."""
    if value is None:
        return None, None
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        return None, f"result is not JSON-serializable ({type(exc).__name__}: {exc}); return JSON data, or store it elsewhere (S3) and return its key"
    size = len(text.encode())
    if size > limit_bytes:
        return None, f"result is {size:,} bytes of JSON, over the job store's limit of {limit_bytes:,}; store it elsewhere (S3) and return its key"
    return text, None


def default_unique_key(args: Sequence[object], kwargs: dict[str, object]) -> str:
    """``unique=True``: the same arguments make the same key (canonical JSON, hashed)."""
    try:
        text = json.dumps([list(args), kwargs], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"unique=True needs JSON arguments to build its key: {exc}") from exc
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), timezone.utc)


def state_from_record(record: dict[str, Any]) -> JobState:
    """A :class:`JobState` from a store row (column -> plain value); see each store for the columns."""
    error = None
    if record.get("error_type") or record.get("error_message"):
        error = JobError(record.get("error_type") or "", record.get("error_message") or "", record.get("error_reason"))
    result = record.get("result")
    progress = record.get("progress")
    return JobState(
        id=record["id"],
        status=record["status"],
        task=record.get("task") or "",
        queue=record.get("queue") or "",
        attempts=int(record.get("attempts") or 0),
        result=json.loads(result) if result is not None else None,
        error=error,
        progress=None if progress is None else float(progress),
        progress_message=record.get("progress_message"),
        enqueued_at=_time(record.get("enqueued_at")),
        started_at=_time(record.get("started_at")),
        finished_at=_time(record.get("finished_at")),
        updated_at=_time(record.get("updated_at")),
        result_error=record.get("result_error"),
        cancel_requested=bool(record.get("cancel_requested")),
    )

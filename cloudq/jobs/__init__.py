"""Job state without Redis: status, results, progress, cancellation, unique jobs and idempotency.

Where it lives is ``CLOUDQ_JOB_STORE``: ``local`` (a table in the local broker's SQLite file, the
default with the local broker), ``dynamodb`` (a table of its own, ``CLOUDQ_JOB_TABLE``), ``memory``
(tests), or ``none`` (the default on SQS). The producer writes ``queued``
(:mod:`cloudq.jobs.enqueue`), the consumer core claims and finishes (:mod:`cloudq.jobs.tracker`),
and :class:`~cloudq.jobs.ref.JobRef` reads (``status``, ``result``, ``cancel``). Nothing here is
imported unless a store is configured, and DynamoDB's SDK only by the DynamoDB store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudq.errors import ConfigurationError

if TYPE_CHECKING:
    from cloudq.jobs.store import JobStore

__all__ = ["create_job_store", "store_kind", "table_name"]


def store_kind(settings: Any) -> str:
    """The configured store; unset means ``local`` with the local broker, else ``none``."""
    kind = settings.job_store
    if kind is None:
        return "local" if settings.broker == "local" else "none"
    return str(kind)


def table_name(settings: Any) -> str:
    return settings.job_table or f"{settings.queue_prefix}cloudq-jobs"


def create_job_store(settings: Any) -> JobStore | None:
    """The store ``settings`` ask for, or None for ``none``; builds no connection or client yet."""
    kind = store_kind(settings)
    if kind == "none":
        return None
    if kind in ("local", "memory"):
        from cloudq.jobs.sqlite import SqliteJobStore

        path = settings.local_path if kind == "local" else ":memory:"
        return SqliteJobStore(path, ttl_s=settings.job_ttl_s, kind=kind)
    if kind == "dynamodb":
        from cloudq.jobs.dynamodb import DynamoJobStore

        return DynamoJobStore.from_settings(settings, table_name(settings))
    raise ConfigurationError(f"CLOUDQ_JOB_STORE={kind!r}: must be one of none, local, dynamodb, memory")

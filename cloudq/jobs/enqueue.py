"""The producer's side of job state: ``queued`` records and unique keys, written before the send.

Before, not after: a worker may take a message the moment it is sent, and its ``running`` must not be
overwritten by a late ``queued``; and a unique key must be held before its job exists anywhere. If the
send then fails, :func:`forget` removes what was written, so no phantom ``queued`` job is left behind.

A queued write that fails (the store unreachable after the shared transient retries) is dropped with a
warning and the job is sent anyway: the message is the source of truth, and the job's first delivery
creates its record. A unique key that cannot be checked fails the enqueue instead (BrokerUnavailable):
sending anyway would break the promise that only one such job is queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloudq.errors import CloudQError
from cloudq.jobs.state import NewJob
from cloudq.jobs.tracker import UNIQUE_HEADER
from cloudq.logs import get_logger
from cloudq.transient import call_retrying

if TYPE_CHECKING:
    from cloudq.envelope import Envelope
    from cloudq.jobs.store import JobStore

__all__ = ["Reserved", "forget", "reserve"]

logger = get_logger("cloudq.jobs")
_QUEUED_RETRY_S = 2.0  # a web request should not wait long for a status write
Reserved = tuple[dict[int, str], list[NewJob]]
"""(index of an envelope whose unique key is held -> the holding job's id, records written)."""


def reserve(store: JobStore, queue: str, envelopes: Sequence[Envelope]) -> Reserved:
    """Hold the unique keys and write the queued records of ``envelopes`` (one batch for the plain ones)."""
    held: dict[int, str] = {}
    written: list[NewJob] = []
    plain: list[NewJob] = []
    for index, envelope in enumerate(envelopes):
        key = envelope.headers.get(UNIQUE_HEADER)
        job = NewJob(envelope.id, envelope.task, queue, envelope.enqueued_at.timestamp(), key)
        if key is None:
            plain.append(job)
            continue
        holder = call_retrying(lambda: store.reserve_unique(key, job), stop_after_s=_QUEUED_RETRY_S)
        if holder is None:
            written.append(job)
        else:
            held[index] = holder
    if plain:
        try:
            call_retrying(lambda: store.put_queued(plain), stop_after_s=_QUEUED_RETRY_S)
            written.extend(plain)
        except CloudQError as exc:
            logger.warning("job.state_dropped", call="queued", jobs=len(plain), error=f"{type(exc).__name__}: {exc}")
    return held, written


def forget(store: JobStore, jobs: Sequence[NewJob]) -> None:
    """The send failed: remove the records written for it (best effort; they expire anyway)."""
    if not jobs:
        return
    try:
        store.forget(jobs)
    except CloudQError as exc:
        logger.warning("job.state_dropped", call="forget", jobs=len(jobs), error=f"{type(exc).__name__}: {exc}")

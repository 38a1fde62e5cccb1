"""The append-only journal each chaos worker writes, and its reader: what makes the counts exact.

One file per worker process (``<dir>/<worker>.jsonl``, the worker name from ``CHAOS_WORKER``), opened
``O_APPEND``: each record is one ``os.write`` of one short line, so a SIGKILL can cut at most the line
being written, never interleave two (threads of one process share the file descriptor). Records:

====== ===================================================== ==========================================
``e``  written when                                           fields
====== ===================================================== ==========================================
run    a job's task function finished (``ok``) or raised     ``k`` job key, ``m`` message id, ``a`` attempt
recv   the broker handed deliveries to the worker             ``m``, ``a`` (one line per delivery)
ack    a delete of those deliveries returned                  ``m``, ``a``
vis    a visibility change returned (0: released)             ``m``, ``a``, ``s`` seconds
out    the consumer settled a delivery (middleware)           ``m``, ``a``, ``o`` outcome kind
claim  the job store answered a claim (with a store only)     ``j`` job id, ``a``, ``p`` the state it
                                                              answered, ``t0`` when it was asked
fin    the job store's write of an end state returned         ``j``, ``a``, ``s`` the status written
====== ===================================================== ==========================================

A delivery is named by ``(message id, receive count)``: unique per receive on SQS and the local broker.
Times are ``time.time()`` to the microsecond, comparable across the workers (one machine): the store
records bracket each store call (``t0`` before it, ``t`` after it returned), which is what lets
:mod:`chaos.idempotency` say that a store write came before a claim.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Journal", "read_journals"]


class Journal:
    """Appends records to ``<directory>/<worker>.jsonl``."""

    def __init__(self, directory: str, worker: str) -> None:
        self.worker = worker
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._fd = os.open(Path(directory) / f"{worker}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, **fields: Any) -> None:
        self.records([{"e": event, **fields}])

    def records(self, records: list[dict[str, Any]]) -> None:
        """Several records (each a dict with its ``e``), stamped now and written in one call."""
        now = round(time.time(), 6)
        lines = [json.dumps({"t": now, **record}, separators=(",", ":")) for record in records]
        if lines:
            os.write(self._fd, ("\n".join(lines) + "\n").encode())

    def many(self, event: str, deliveries: Any, **fields: Any) -> None:
        """One record per delivery, written in one call."""
        self.records([{"e": event, "m": d.message_id, "a": d.receive_count, **fields} for d in deliveries])


def read_journals(directory: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(worker, record) for every complete line of every journal; a line cut by a SIGKILL is skipped."""
    for path in sorted(directory.glob("*.jsonl")):
        with path.open() as f:
            for line in f:
                if line.endswith("\n"):
                    try:
                        yield path.stem, json.loads(line)
                    except ValueError:
                        continue

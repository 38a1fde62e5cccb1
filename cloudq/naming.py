"""Logical queue name -> physical SQS names: one rule for the whole package.

A logical queue ``q`` is the SQS queue ``<prefix>q``, and its dead-letter queue is ``<prefix>q-dlq``,
with ``-dlq`` before ``.fifo`` because SQS wants the DLQ of a FIFO queue to be FIFO too. The rule lives
here, apart from the settings, so that code handed a naming (the worker, the Lambda handler, the ops
commands) depends on this rule and not on how settings are read; both settings classes mix it in.
Pure: no I/O, no pydantic, nothing that imports the settings modules back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudq.brokers.base import is_fifo

__all__ = ["QueueNaming"]


class QueueNaming:
    """Mixin: maps logical queue names to physical ones using the ``queue_prefix`` of the class it is mixed into."""

    if TYPE_CHECKING:  # a plain annotation here would look like a field to pydantic and to dataclasses
        queue_prefix: str

    def queue_name(self, queue: str) -> str:
        """The physical queue name of logical queue ``queue``."""
        return f"{self.queue_prefix}{queue}"

    def dlq_name(self, queue: str) -> str:
        """The physical dead-letter queue of logical ``queue`` (``-dlq`` before ``.fifo``)."""
        if is_fifo(queue):
            return f"{self.queue_prefix}{queue[: -len('.fifo')]}-dlq.fifo"
        return f"{self.queue_prefix}{queue}-dlq"

"""Retrying transient broker errors: what the SQS producer and the worker's deletes share.

A :class:`~cloudq.errors.BrokerUnavailable` (throttling, a 5xx, a connection refused or reset,
the endpoint down) is worth another try after a pause that grows exponentially, with jitter so
that many workers recovering together do not retry in lockstep. Any other
:class:`~cloudq.errors.BrokerError` is final. tenacity does the retrying; this module only says
how, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tenacity

from cloudq.errors import BrokerUnavailable

__all__ = ["transient_retry"]


def transient_retry(
    *, stop_after_s: float | None = None, attempts: int | None = None, on_retry: Callable[[BaseException, int], None] | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying``/``AsyncRetrying``: retry BrokerUnavailable until
    ``stop_after_s`` seconds or ``attempts`` tries, then re-raise the last error.
    ``on_retry(error, attempt)`` runs before each pause (to log it)."""
    stops = [tenacity.stop_after_delay(stop_after_s)] if stop_after_s is not None else []
    stops += [tenacity.stop_after_attempt(attempts)] if attempts is not None else []
    policy: dict[str, Any] = {
        "retry": tenacity.retry_if_exception_type(BrokerUnavailable),
        "stop": tenacity.stop_any(*stops) if stops else tenacity.stop_never,
        "wait": tenacity.wait_exponential(multiplier=0.2, max=5) + tenacity.wait_random(0, 0.2),
        "reraise": True,
    }
    if on_retry is not None:
        policy["before_sleep"] = lambda state: on_retry(state.outcome.exception(), state.attempt_number)  # type: ignore[union-attr]
    return policy

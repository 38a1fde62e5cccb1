"""Retrying transient broker errors: what the SQS producer and the worker's deletes share.

A :class:`~cloudq.errors.BrokerUnavailable` (throttling, a 5xx, a connection refused or reset,
the endpoint down) is worth another try after a pause that grows exponentially, with jitter so
that many workers recovering together do not retry in lockstep. Any other
:class:`~cloudq.errors.BrokerError` is final. tenacity does the retrying; this module only says
how, once.

:func:`call_retrying` / :func:`acall_retrying` make the first try a plain call: tenacity (its import,
and a ``Retrying`` object of about 70 us per call) is paid only once a call has failed, not on
every send and every delete batch of the hot path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cloudq.errors import BrokerUnavailable

__all__ = ["acall_retrying", "call_retrying", "transient_retry"]

T = TypeVar("T")
OnRetry = Callable[[BaseException, int], None]
_FIRST_PAUSE_S = 0.2  # before the second try; tenacity's own waits follow


def transient_retry(
    *, stop_after_s: float | None = None, attempts: int | None = None, on_retry: Callable[[BaseException, int], None] | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying``/``AsyncRetrying``: retry BrokerUnavailable until
    ``stop_after_s`` seconds or ``attempts`` tries, then re-raise the last error.
    ``on_retry(error, attempt)`` runs before each pause (to log it)."""
    import tenacity

    stops: list[Any] = [tenacity.stop_after_delay(stop_after_s)] if stop_after_s is not None else []
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


def _retry_policy(stop_after_s: float | None, attempts: int | None, on_retry: OnRetry | None, started: float) -> dict[str, Any]:
    """The tenacity loop that follows a failed first try: what is left of the budget, attempts counted on."""
    left_s = None if stop_after_s is None else max(0.0, stop_after_s - (time.monotonic() - started))
    shifted = None if on_retry is None else (lambda exc, attempt: on_retry(exc, attempt + 1))
    return transient_retry(stop_after_s=left_s, attempts=None if attempts is None else max(1, attempts - 1), on_retry=shifted)


def call_retrying(call: Callable[[], T], *, stop_after_s: float | None = None, attempts: int | None = None, on_retry: OnRetry | None = None) -> T:
    """``call()``, retried on BrokerUnavailable as :func:`transient_retry` says; the first try is plain."""
    started = time.monotonic()
    try:
        return call()
    except BrokerUnavailable as exc:
        if attempts == 1:
            raise
        if on_retry is not None:
            on_retry(exc, 1)
    time.sleep(_FIRST_PAUSE_S)
    import tenacity

    return tenacity.Retrying(**_retry_policy(stop_after_s, attempts, on_retry, started))(call)


async def acall_retrying(
    call: Callable[[], Awaitable[T]], *, stop_after_s: float | None = None, attempts: int | None = None, on_retry: OnRetry | None = None
) -> T:
    """The async twin of :func:`call_retrying`."""
    started = time.monotonic()
    try:
        return await call()
    except BrokerUnavailable as exc:
        if attempts == 1:
            raise
        if on_retry is not None:
            on_retry(exc, 1)
    await asyncio.sleep(_FIRST_PAUSE_S)
    import tenacity

    async def attempt() -> T:  # a coroutine function: tenacity awaits only those, not a lambda's coroutine
        return await call()

    return await tenacity.AsyncRetrying(**_retry_policy(stop_after_s, attempts, on_retry, started))(attempt)

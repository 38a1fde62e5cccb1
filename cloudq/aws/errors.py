"""AWS SDK failures translated into cloudq's exceptions (:mod:`cloudq.errors`), where they enter cloudq.

Every call cloudq makes to an AWS service, sync (boto3) or async (aioboto3), runs inside
:func:`translated`, which raises ``translate(exc, ...) from exc``: callers catch cloudq's tree, never
botocore's, and the original error stays attached as ``__cause__`` for the traceback. The same rules
hold for every service::

    ClientError  a missing-queue code (SQS)                  -> QueueNotFound
                 ResourceNotFoundException and kin           -> ResourceNotFound (a rule, a schedule group)
                 a throttling code, or HTTP status >= 500    -> BrokerUnavailable (transient: retry may help)
                 any other code (access denied, bad input)   -> BrokerError
    endpoint down, connection reset, timeouts, aiohttp's own -> BrokerUnavailable
    any other BotoCoreError (no credentials, no region)      -> BrokerError (retrying cannot help)
    anything else                                            -> not an AWS failure: passes through untouched

botocore has already retried throttling and 5xx in its ``standard`` mode by the time an error gets
here; BrokerUnavailable tells the layer above (tenacity on producer sends, the worker's poll loop) that
a longer wait may still help.

botocore is imported on the error path only, so that modules which merely *may* call AWS (the schedule
engines, which ``cloudq infra render`` and the local scheduler import too) load no SDK until they do.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cloudq.errors import BrokerError, BrokerUnavailable, QueueNotFound, ResourceNotFound

if TYPE_CHECKING:
    import botocore.exceptions

__all__ = ["call", "translate", "translated"]

_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
_MISSING_RESOURCE = {"ResourceNotFoundException", "ResourceNotFound", "NoSuchBucket", "NoSuchKey"}
_TRANSIENT = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "RequestLimitExceeded", "TooManyRequestsException", "ProvisionedThroughputExceededException", "SlowDown",
    "KmsThrottled", "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure",
    "InternalServerError", "InternalServerException", "RequestTimeout", "RequestTimeoutException",
}  # fmt: skip

@functools.cache
def _connection_errors() -> tuple[type[BaseException], ...]:
    import botocore.exceptions

    return (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectionClosedError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.HTTPClientError,
        ConnectionError,
        TimeoutError,
        asyncio.TimeoutError,  # the same class from Python 3.11 on
    )


def translate(exc: BaseException, service: str, operation: str, resource: str | None = None) -> BrokerError | None:
    """The cloudq error for an AWS failure of ``service``'s ``operation`` on ``resource``; None if ``exc``
    is not an AWS failure (a bug in cloudq, say), which the caller then lets through."""
    import botocore.exceptions

    on = f" on {resource!r}" if resource else ""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _client_error(exc, service, operation, resource)
    if isinstance(exc, _connection_errors()) or type(exc).__module__.partition(".")[0] == "aiohttp":
        return BrokerUnavailable(f"{service} endpoint unreachable for {operation}{on}: {type(exc).__name__}: {exc}")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return BrokerError(f"{service} {operation}{on} failed: {type(exc).__name__}: {exc}")
    return None


def _client_error(exc: botocore.exceptions.ClientError, service: str, operation: str, resource: str | None) -> BrokerError:
    response: dict[str, Any] = exc.response or {}
    code = str(response.get("Error", {}).get("Code", ""))
    message = response.get("Error", {}).get("Message") or str(exc)
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    on = f" on {resource!r}" if resource else ""
    if code in _MISSING_QUEUE:
        return QueueNotFound(f"queue {resource!r} does not exist (create it with `cloudq queues ensure` or in infra)")
    if code in _MISSING_RESOURCE:
        return ResourceNotFound(f"{service} {operation}{on}: {code}: {message}")
    if code in _TRANSIENT or status >= 500:
        return BrokerUnavailable(f"{service} {operation}{on} failed: {code or status}: {message}")
    return BrokerError(f"{service} {operation}{on} failed: {code or status or 'error'}: {message}")


@contextmanager
def translated(service: str, operation: str, resource: str | None = None) -> Iterator[None]:
    """Run one AWS call (sync, or awaited inside the block) with its failures translated.

    ``with translated("events", "put_rule", name): client.put_rule(...)``
    """
    try:
        yield
    except Exception as exc:
        error = translate(exc, service, operation, resource)
        if error is None:
            raise
        raise error from exc


def call(client: Any, operation: str, resource: str | None = None, **params: Any) -> dict[str, Any]:
    """One boto3 call by operation name, translated: the I/O primitive of code without a broker (schedules)."""
    with translated(client.meta.service_model.service_name, operation, resource):
        return dict(getattr(client, operation)(**params))

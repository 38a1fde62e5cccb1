"""boto3 and aioboto3 clients, built one way for every AWS service cloudq calls.

Why one factory: the SQS broker, the schedule sync (EventBridge, Scheduler, SQS queue policies) and
the stores that come next (S3, DynamoDB) must agree on the region, the endpoint (LocalStack serves
every service on one URL), the retry mode and the credentials a LocalStack needs; written once here,
they cannot drift apart.

* Region: ``settings.region``, else ``AWS_REGION`` (set by Lambda and ECS), else ``AWS_DEFAULT_REGION``,
  else us-east-1 (:func:`region_is_default` says when, so that the CLI can warn on real AWS).
* botocore's ``standard`` retry mode (throttling and 5xx, with backoff) and a 5 s connect timeout, so
  that an endpoint that is down is reported (as BrokerUnavailable) instead of hanging a worker.
* Credentials: the SDK's own chain; only for a LocalStack on this machine without any configured,
  dummy ones (LocalStack accepts any, and trying cloudq should not need an AWS account).

The SDKs are imported inside the functions: ``import cloudq`` must stay cheap for Lambda cold starts,
and only the async paths pay for aioboto3 and aiohttp.
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    import botocore.config

__all__ = ["AwsSettings", "DEFAULT_REGION", "aclient", "client", "client_config", "is_local_endpoint", "region_is_default", "region_of"]

DEFAULT_REGION = "us-east-1"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "localstack")
_LOCAL_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


class AwsSettings(Protocol):
    """What the factory reads from settings (``cloudq.Settings`` and the lean env reader both have it)."""

    @property
    def region(self) -> str | None: ...

    @property
    def endpoint_url(self) -> str | None: ...


def region_of(settings: AwsSettings) -> str:
    """The region every client of this app uses."""
    return settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def region_is_default(settings: AwsSettings) -> bool:
    """True when no region is configured anywhere, so :func:`region_of` falls back to us-east-1."""
    return not (settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))


def is_local_endpoint(endpoint_url: str | None) -> bool:
    """True for a LocalStack on this machine (or its usual container and DNS names); never for AWS."""
    host = urlparse(endpoint_url or "").hostname or ""
    return host in _LOCAL_HOSTS or host.endswith(".localstack.cloud")


def client_config(
    *, max_pool_connections: int = 10, read_timeout_s: float = 60, validate: bool = True
) -> botocore.config.Config:
    """botocore's config for every client: standard retries, a short connect timeout.

    ``read_timeout_s`` must outlast the longest call the client makes (SQS: the 20 s long poll).
    ``validate=False`` skips botocore's client-side check of each request's parameters: for callers
    that build every request themselves from tested builders (the SQS broker's hot path, where the
    check costs about 20 us per job).
    """
    import botocore.config

    return botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=read_timeout_s,
        parameter_validation=validate,
    )


def _credentials(endpoint_url: str | None, session: Any | None = None) -> dict[str, str]:
    """Dummy credentials for a local endpoint when the SDK's chain finds none; nothing otherwise.

    Keys in the environment settle it without a session (building one costs 13-18 ms of a start-up)."""
    if not is_local_endpoint(endpoint_url) or os.environ.get("AWS_ACCESS_KEY_ID"):
        return {}
    if session is None:
        import boto3

        session = boto3.session.Session()
    return dict(_LOCAL_CREDENTIALS) if session.get_credentials() is None else {}


def _connection(endpoint_url: str | None) -> dict[str, Any]:
    """A plain-http endpoint (LocalStack) needs no TLS: without ``verify=False`` the async client still
    builds an SSL context and loads the whole CA bundle on its first request (20-30 ms)."""
    return {"verify": False} if (endpoint_url or "").startswith("http://") else {}


def client(
    service: str, settings: AwsSettings, *, max_pool_connections: int = 10, read_timeout_s: float = 60, validate: bool = True
) -> Any:
    """A boto3 client for ``service`` ("sqs", "events", "scheduler", "s3", "dynamodb", ...).

    Each call builds its own boto3 session: sessions are not thread-safe, and a client built once is.
    """
    import boto3

    session = boto3.session.Session(region_name=region_of(settings))
    return session.client(
        service,
        endpoint_url=settings.endpoint_url,
        config=client_config(max_pool_connections=max_pool_connections, read_timeout_s=read_timeout_s, validate=validate),
        **_credentials(settings.endpoint_url, session),
        **_connection(settings.endpoint_url),
    )


def aclient(
    service: str, settings: AwsSettings, *, max_pool_connections: int = 10, read_timeout_s: float = 60, validate: bool = True
) -> AbstractAsyncContextManager[Any]:
    """An aioboto3 client for ``service``, as the async context manager aioboto3 hands out.

    Enter it on the event loop that will use it (``async with``, or an ``AsyncExitStack`` that the
    owner closes in its ``aclose``): an aiohttp session is bound to the loop it was opened on.
    """
    import aioboto3

    credentials = _credentials(settings.endpoint_url)  # checked with boto3: aioboto3's session is async
    return aioboto3.Session(region_name=region_of(settings)).client(  # type: ignore[no-any-return]
        service,
        endpoint_url=settings.endpoint_url,
        config=client_config(max_pool_connections=max_pool_connections, read_timeout_s=read_timeout_s, validate=validate),
        **credentials,
        **_connection(settings.endpoint_url),
    )

"""cloudq.aws: one client factory and one error translation for every AWS service (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.exceptions
import pytest

from cloudq.aws import clients
from cloudq.aws.errors import translate, translated
from cloudq.errors import BrokerError, BrokerUnavailable, QueueNotFound, ResourceNotFound
from cloudq.settings import Settings

pytestmark = pytest.mark.unit


def client_error(code: str, status: int = 400, operation: str = "GetQueueUrl") -> botocore.exceptions.ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, operation)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine with no AWS credentials anywhere (environment, files, instance metadata)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("service", "code", "status", "kind"),
    [
        ("sqs", "AWS.SimpleQueueService.NonExistentQueue", 400, QueueNotFound),
        ("sqs", "QueueDoesNotExist", 400, QueueNotFound),
        ("sqs", "ThrottlingException", 400, BrokerUnavailable),
        ("sqs", "InternalError", 500, BrokerUnavailable),
        ("sqs", "Whatever", 503, BrokerUnavailable),
        ("sqs", "AccessDenied", 403, BrokerError),
        ("scheduler", "ResourceNotFoundException", 404, ResourceNotFound),
        ("scheduler", "TooManyRequestsException", 429, BrokerUnavailable),
        ("events", "ResourceNotFoundException", 400, ResourceNotFound),
        ("events", "ValidationException", 400, BrokerError),
        ("dynamodb", "ProvisionedThroughputExceededException", 400, BrokerUnavailable),
    ],
)
def test_client_errors_map_onto_one_tree_for_every_service(service: str, code: str, status: int, kind: type) -> None:
    """An AWS error code means the same cloudq error whichever service answered it."""
    error = translate(client_error(code, status), service, "op", "thing")
    assert type(error) is kind


def test_a_missing_queue_is_named_with_the_way_to_create_it() -> None:
    error = translate(client_error("QueueDoesNotExist"), "sqs", "get_queue_url", "shop-default")
    assert str(error) == "queue 'shop-default' does not exist (create it with `cloudq queues ensure` or in infra)"


@pytest.mark.parametrize(
    "exc",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
        aiohttp.ServerDisconnectedError(),
    ],
)
def test_connection_failures_are_transient(exc: BaseException) -> None:
    """Endpoint down, resets and timeouts (botocore's, the OS's and aiohttp's) may be retried."""
    error = translate(exc, "events", "list_rules")
    assert isinstance(error, BrokerUnavailable) and "events endpoint unreachable" in str(error)


def test_other_sdk_errors_are_final_and_foreign_errors_pass_through() -> None:
    """No credentials cannot be retried away; an error that is not the SDK's is not translated at all."""
    assert type(translate(botocore.exceptions.NoCredentialsError(), "sqs", "send_message", "q")) is BrokerError
    assert translate(ValueError("a bug"), "sqs", "send_message", "q") is None


def test_translated_raises_from_the_sdk_error_and_lets_others_through() -> None:
    """The cloudq error keeps the SDK's as its cause; a bug in the block keeps its own type."""
    original = client_error("ResourceNotFoundException", operation="GetScheduleGroup")
    with pytest.raises(ResourceNotFound) as caught:
        with translated("scheduler", "get_schedule_group", "cloudq-app"):
            raise original
    assert caught.value.__cause__ is original
    assert "scheduler get_schedule_group on 'cloudq-app'" in str(caught.value)
    with pytest.raises(KeyError):
        with translated("scheduler", "get_schedule_group"):
            raise KeyError("x")


async def test_translated_covers_awaited_calls() -> None:
    """The same context manager wraps an awaited aioboto3 call."""

    async def failing() -> None:
        raise aiohttp.ClientConnectionError("refused")

    with pytest.raises(BrokerUnavailable):
        with translated("sqs", "receive_message", "q"):
            await failing()


# -- clients ----------------------------------------------------------------------------------------------
def test_region_comes_from_settings_then_the_environment_then_us_east_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert clients.region_of(Settings()) == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert clients.region_of(Settings()) == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert clients.region_of(Settings()) == "eu-central-1"
    assert clients.region_of(Settings(region="ap-south-1")) == "ap-south-1"


@pytest.mark.parametrize("service", ["sqs", "events", "scheduler", "s3", "dynamodb"])
def test_any_service_gets_the_endpoint_region_and_standard_retries(service: str) -> None:
    """The factory is generic over the service name: LocalStack's one endpoint serves them all."""
    client = clients.client(service, Settings(endpoint_url="http://127.0.0.1:4566", region="eu-west-1"))
    try:
        assert client.meta.service_model.service_name == service
        assert (client.meta.endpoint_url, client.meta.region_name) == ("http://127.0.0.1:4566", "eu-west-1")
        assert client.meta.config.retries["mode"] == "standard"
    finally:
        client.close()


@pytest.mark.usefixtures("no_credentials")
def test_dummy_credentials_only_for_a_local_endpoint_without_any() -> None:
    """LocalStack on this machine gets test/test when nothing is configured; AWS itself never does."""
    session = boto3.session.Session()
    assert clients._credentials("http://127.0.0.1:4566", session) == {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    assert clients._credentials("http://localhost.localstack.cloud:4566", session) != {}
    assert clients._credentials(None, session) == {}
    assert clients._credentials("https://sqs.eu-west-1.amazonaws.com", session) == {}


def test_configured_credentials_win_over_the_dummy_ones(monkeypatch: pytest.MonkeyPatch, no_credentials: None) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert clients._credentials("http://127.0.0.1:4566", boto3.session.Session()) == {}


async def test_async_clients_come_from_the_same_factory() -> None:
    """aioboto3 clients get the same endpoint, region and config, entered on the caller's loop."""
    settings = Settings(endpoint_url="http://127.0.0.1:4566", region="eu-west-1")
    async with clients.aclient("scheduler", settings, read_timeout_s=30) as client:
        assert (client.meta.endpoint_url, client.meta.region_name) == ("http://127.0.0.1:4566", "eu-west-1")
        assert client.meta.config.read_timeout == 30 and client.meta.config.retries["mode"] == "standard"

"""cloudq settings, read from ``CLOUDQ_*`` environment variables (pydantic-settings).

One object carries what producers, workers and the CLI need, so a container is
configured by its environment alone (12-factor), and tests pass ``Settings(...)``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloudq.naming import QueueNaming

__all__ = ["Settings"]


class Settings(QueueNaming, BaseSettings):
    """All of cloudq's knobs; each field is ``CLOUDQ_<FIELD>`` in the environment.

    An app built without settings reads the same variables through
    :class:`cloudq.settings_env.EnvSettings`, which skips importing pydantic (cold starts)
    and defers to this model for anything but plain values.
    """

    model_config = SettingsConfigDict(env_prefix="CLOUDQ_", extra="forbid", validate_default=True)

    broker: Literal["local", "sqs", "memory"] = Field(
        "local", description="local (SQLite file, the default), sqs (AWS or LocalStack), memory (tests)"
    )
    endpoint_url: str | None = Field(None, description="SQS endpoint, e.g. http://127.0.0.1:4566 for LocalStack")
    region: str | None = Field(None, description="AWS region; falls back to AWS_REGION / AWS_DEFAULT_REGION")
    queue_prefix: str = Field("", description="prepended to every logical queue name, e.g. 'shop-prod-'")
    default_queue: str = "default"
    queue_urls: dict[str, str] = Field(
        default_factory=dict, description="logical queue name -> queue URL, to skip GetQueueUrl"
    )
    local_path: str = Field(".cloudq/broker.db", description="SQLite file of the local broker")

    visibility_timeout_s: int = Field(30, ge=0, le=43_200, description="used when receiving messages")
    wait_time_s: int = Field(20, ge=0, le=20, description="long-poll wait per ReceiveMessage")
    concurrency: int = Field(10, ge=1, le=1000, description="jobs run at once per worker process")
    max_retries: int = Field(3, ge=0, description="default retries per task before dead-lettering")
    retry_backoff_s: float = Field(2.0, gt=0, description="first retry delay; doubles each attempt, with jitter")
    retry_backoff_max_s: float = Field(900.0, gt=0, le=43_200, description="cap of the retry delay")
    shutdown_grace_s: float = Field(30.0, ge=0, description="how long SIGTERM waits for running jobs")
    delete_flush_s: float = Field(0.05, ge=0, description="how long a finished job's delete may wait to batch")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    heartbeat_path: str | None = Field(None, description="file the worker touches while healthy")
    scheduler_role_arn: str | None = Field(
        None, description="IAM role EventBridge Scheduler sends to SQS as (`cloudq schedules sync --engine scheduler`)"
    )

    @field_validator("default_queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        if not value:
            raise ValueError("queue name must not be empty")
        return value

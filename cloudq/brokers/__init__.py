"""Brokers: two protocols (:mod:`cloudq.brokers.base`: the data plane ``Broker`` and the admin plane
``AdminBroker``), one module per transport, each implementing both.

Transports are imported lazily so that ``import cloudq`` stays cheap (Lambda cold
starts) and a missing optional dependency fails with an actionable message only
when that transport is actually used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudq.brokers.base import AdminBroker, Broker, Delivery, OutgoingMessage, QueueConfig, QueueStats, admin_of
from cloudq.errors import ConfigurationError

if TYPE_CHECKING:
    from cloudq.settings_fields import SettingsFields

__all__ = ["AdminBroker", "Broker", "Delivery", "OutgoingMessage", "QueueConfig", "QueueStats", "admin_of", "create_broker"]


def create_broker(settings: SettingsFields, *, sqs_async_io: str = "aioboto3") -> Broker:
    """Build the broker named by ``settings.broker``; ``sqs_async_io`` is :class:`SqsBroker`'s ``async_io``."""
    if settings.broker == "sqs":
        from cloudq.brokers.sqs import SqsBroker

        return SqsBroker(settings, async_io=sqs_async_io)
    if settings.broker == "local":
        from cloudq.brokers.local import LocalBroker

        return LocalBroker(settings.local_path)
    if settings.broker == "memory":
        from cloudq.brokers.memory import MemoryBroker

        return MemoryBroker()
    raise ConfigurationError(f"unknown broker {settings.broker!r}; expected local, sqs or memory")

"""The two broker protocols: the data plane the runtimes use and the admin plane of the ops commands."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cloudq.brokers import AdminBroker, Broker, admin_of
from cloudq.brokers.base import Delivery, OutgoingMessage
from cloudq.errors import ConfigurationError

pytestmark = pytest.mark.unit


class DataPlaneOnly:
    """A user's own broker with just what producers and consumers need (e.g. a test double)."""

    async def prepare(self, queues: Sequence[str]) -> None: ...

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        return []

    async def asend(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        return []

    async def receive(self, queue: str, *, max_messages: int, wait_s: float, visibility_timeout_s: int | None = None) -> list[Delivery]:
        return []

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None: ...

    async def change_visibility(self, queue: str, deliveries: Sequence[Delivery], timeout_s: int) -> None: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


def test_a_data_plane_broker_is_a_broker_without_admin() -> None:
    """Producers and runtimes need nothing more; ops commands get a clear error naming the broker."""
    broker = DataPlaneOnly()
    assert isinstance(broker, Broker) and not isinstance(broker, AdminBroker)
    with pytest.raises(ConfigurationError, match="DataPlaneOnly broker has no admin methods"):
        admin_of(broker)


def test_the_planes_do_not_overlap() -> None:
    """No admin call is part of the data plane, so a runtime cannot come to depend on one."""
    data = {name for name in vars(Broker) if not name.startswith("_")}
    admin = {name for name in vars(AdminBroker) if not name.startswith("_")}
    assert data == {"prepare", "send", "asend", "receive", "ack", "change_visibility", "close", "aclose"}
    assert admin == {"ensure_queue", "stats", "list_queues", "peek", "move_messages", "purge"}

"""The broker contract: SQS semantics that every broker must honour, one suite for all.

Time-based cases go through ``advance`` (a fake clock in process, a real sleep on SQS),
and timeouts stay at 1-2 seconds so the suite stays fast against a real service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import pytest

from cloudq.brokers.base import AdminBroker, Broker, Delivery, OutgoingMessage, QueueConfig, admin_of
from cloudq.brokers.sqs import SqsBroker
from cloudq.errors import BrokerUnavailable, QueueNotFound
from cloudq.settings import Settings

from .conftest import BROKERS, ContractBroker, FakeClock

Advance = Callable[[float], None]


async def receive_n(broker: Broker, queue: str, n: int, **options: int) -> list[Delivery]:
    """Receive until ``n`` deliveries arrive or a long poll comes back empty."""
    got: list[Delivery] = []
    while len(got) < n:
        batch = await broker.receive(queue, max_messages=min(10, n - len(got)), wait_s=1, **options)
        if not batch:
            break
        got.extend(batch)
    return got


async def receive_none(broker: Broker, queue: str) -> list[Delivery]:
    return await broker.receive(queue, max_messages=10, wait_s=0)


def fifo(body: str, group: str) -> OutgoingMessage:
    return OutgoingMessage(body, group_id=group, dedup_id=body)


async def test_roundtrip_keeps_body_attributes_and_id(broker: ContractBroker, queue: str) -> None:
    """A sent message comes back once with its body, attributes and id, and ack deletes it."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))
    [message_id] = broker.send(queue, [OutgoingMessage("hello", attributes={"task": "add", "job_id": "j1"})])

    [delivery] = await receive_n(broker, queue, 1)
    assert (delivery.message_id, delivery.body, delivery.receive_count) == (message_id, "hello", 1)
    assert delivery.attributes == {"task": "add", "job_id": "j1"}
    assert isinstance(delivery.sent_at, datetime)
    await broker.ack(queue, [delivery])

    stats = broker.stats(queue)
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)


async def test_asend_matches_send(broker: ContractBroker, queue: str) -> None:
    """The async producer sends like the sync one."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))
    ids = await broker.asend(queue, [OutgoingMessage("a"), OutgoingMessage("b")])
    got = await receive_n(broker, queue, 2)
    assert sorted(d.message_id for d in got) == sorted(ids)


async def test_receive_count_grows_after_visibility_expires(broker: ContractBroker, queue: str, advance: Advance) -> None:
    """An unacked message is hidden for the visibility timeout, then comes back with a new receipt."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=1))
    broker.send(queue, [OutgoingMessage("job")])

    [first] = await receive_n(broker, queue, 1)
    assert await receive_none(broker, queue) == []
    advance(1.5)
    [second] = await receive_n(broker, queue, 1)
    assert (first.receive_count, second.receive_count) == (1, 2)
    assert first.message_id == second.message_id and first.receipt != second.receipt


async def test_stale_receipt_is_ignored(broker: ContractBroker, queue: str, advance: Advance) -> None:
    """Ack or visibility change with a receipt from an earlier receive does nothing."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=1))
    broker.send(queue, [OutgoingMessage("job")])
    [stale] = await receive_n(broker, queue, 1)
    advance(1.5)
    [current] = await receive_n(broker, queue, 1)

    await broker.ack(queue, [stale])
    await broker.change_visibility(queue, [stale], 0)
    if isinstance(broker, SqsBroker):
        # SQS documents a delete with an older receipt handle as "succeeds, but the message might not
        # be deleted" (LocalStack deletes it): only "no error" is common ground, and the worker never
        # relies on more. The in-process brokers take the strict reading.
        return
    assert broker.stats(queue).in_flight == 1
    assert await receive_none(broker, queue) == []

    await broker.ack(queue, [current])
    assert broker.stats(queue).in_flight == 0


async def test_change_visibility_zero_makes_visible_at_once(broker: ContractBroker, queue: str) -> None:
    """change_visibility(0) hands the message back without waiting for the timeout."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))
    broker.send(queue, [OutgoingMessage("job")])
    [first] = await receive_n(broker, queue, 1)

    await broker.change_visibility(queue, [first], 0)
    [again] = await receive_n(broker, queue, 1)
    assert again.receive_count == 2


async def test_receive_overrides_visibility_timeout(broker: ContractBroker, queue: str, advance: Advance) -> None:
    """A per-receive visibility timeout replaces the queue's."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=30))
    broker.send(queue, [OutgoingMessage("job")])
    await receive_n(broker, queue, 1, visibility_timeout_s=1)
    advance(1.5)
    [again] = await receive_n(broker, queue, 1)
    assert again.receive_count == 2


async def test_delay_hides_message_until_due(broker: ContractBroker, queue: str, advance: Advance) -> None:
    """delay_s keeps a message invisible (and counted as delayed) until the delay passes."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))
    broker.send(queue, [OutgoingMessage("later", delay_s=2)])

    assert await receive_none(broker, queue) == []
    assert broker.stats(queue).delayed == 1
    advance(2.5)
    [delivery] = await receive_n(broker, queue, 1)
    assert delivery.body == "later"


async def test_redrive_to_dead_letter_queue(broker: ContractBroker, queue: str, advance: Advance) -> None:
    """After max_receive_count receives the next receive moves the message, attributes and all, to the DLQ."""
    dlq = f"{queue}-dlq"
    broker.ensure_queue(dlq, QueueConfig(visibility_timeout_s=2))
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=1, dead_letter_queue=dlq, max_receive_count=2))
    [message_id] = broker.send(queue, [OutgoingMessage("poison", attributes={"task": "boom"})])

    for _ in range(2):
        assert len(await receive_n(broker, queue, 1)) == 1
        advance(1.5)
    assert await broker.receive(queue, max_messages=10, wait_s=1) == []  # SQS moves it during a (long-poll) receive

    [dead] = await receive_n(broker, dlq, 1)
    assert (dead.message_id, dead.body, dead.attributes) == (message_id, "poison", {"task": "boom"})


async def test_fifo_group_order_and_blocking(broker: ContractBroker, fifo_queue: str) -> None:
    """A FIFO group delivers in order and nothing more of a group while one of its messages is in flight."""
    broker.ensure_queue(fifo_queue, QueueConfig(visibility_timeout_s=2))
    broker.send(fifo_queue, [fifo("a1", "a"), fifo("a2", "a"), fifo("b1", "b"), fifo("a3", "a")])

    [a1] = await broker.receive(fifo_queue, max_messages=1, wait_s=1)
    assert a1.body == "a1"
    assert [d.body for d in await broker.receive(fifo_queue, max_messages=10, wait_s=1)] == ["b1"]

    await broker.ack(fifo_queue, [a1])
    rest = await receive_n(broker, fifo_queue, 2)
    assert [d.body for d in rest] == ["a2", "a3"]


async def test_fifo_dedup_returns_original_id(broker: ContractBroker, fifo_queue: str) -> None:
    """A repeated dedup id inside the window returns the first message id and enqueues nothing."""
    broker.ensure_queue(fifo_queue, QueueConfig(visibility_timeout_s=2))
    [first] = broker.send(fifo_queue, [OutgoingMessage("one", group_id="g", dedup_id="d1")])
    [again] = broker.send(fifo_queue, [OutgoingMessage("two", group_id="g", dedup_id="d1")])

    assert again == first
    got = await broker.receive(fifo_queue, max_messages=10, wait_s=1)
    assert [d.body for d in got] == ["one"]
    assert await receive_none(broker, fifo_queue) == []


async def test_stats_counts(broker: ContractBroker, queue: str) -> None:
    """stats splits messages into visible, in flight and delayed; unknown queues do not exist."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))
    broker.send(queue, [OutgoingMessage(str(i)) for i in range(3)] + [OutgoingMessage("d", delay_s=2)])
    await broker.receive(queue, max_messages=1, wait_s=1)

    stats = broker.stats(queue)
    assert (stats.exists, stats.visible, stats.in_flight, stats.delayed) == (True, 2, 1, 1)
    assert broker.stats(f"{queue}-missing").exists is False


async def test_batch_of_25(broker: ContractBroker, queue: str) -> None:
    """Any number of messages can be sent at once; all arrive once and ack empties the queue."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))
    ids = broker.send(queue, [OutgoingMessage(f"m{i}") for i in range(25)])
    assert len(set(ids)) == 25

    got = await receive_n(broker, queue, 25)
    assert sorted(d.body for d in got) == sorted(f"m{i}" for i in range(25))
    await broker.ack(queue, got)
    assert broker.stats(queue).visible == broker.stats(queue).in_flight == 0


async def test_long_poll_returns_message_sent_during_wait(broker: ContractBroker, queue: str) -> None:
    """A receive waiting on an empty queue returns as soon as a message arrives."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))

    async def send_soon() -> None:
        await asyncio.sleep(0.1)
        await broker.asend(queue, [OutgoingMessage("late")])

    sender = asyncio.create_task(send_soon())
    receiving = asyncio.ensure_future(broker.receive(queue, max_messages=10, wait_s=20))
    # Event order, not speed: the receive must be back before a timer half its wait long, which a receive
    # that sat out its whole wait (and returned the message only at the end) never is.
    half_wait = asyncio.ensure_future(asyncio.sleep(10))
    done, _ = await asyncio.wait({receiving, half_wait}, return_when=asyncio.FIRST_COMPLETED)
    half_wait.cancel()
    await sender
    assert receiving in done, "the receive waited out its wait instead of returning with the message"
    assert [d.body for d in receiving.result()] == ["late"]


# -- prepare: the data plane's one look-up, before consuming ---------------------------------------
def test_every_broker_implements_both_planes(broker: ContractBroker) -> None:
    """Each broker is a data-plane Broker and an AdminBroker; admin_of hands back the same object."""
    assert isinstance(broker, Broker) and isinstance(broker, AdminBroker)
    assert admin_of(broker) is broker


async def test_prepare_then_consume(broker: ContractBroker, queue: str, fifo_queue: str) -> None:
    """prepare accepts existing queues (standard and FIFO, twice over), and they are consumed as before."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))
    broker.ensure_queue(fifo_queue, QueueConfig(visibility_timeout_s=2))
    await broker.prepare([queue, fifo_queue])
    await broker.prepare([queue])

    broker.send(queue, [OutgoingMessage("after prepare")])
    [delivery] = await receive_n(broker, queue, 1)
    assert delivery.body == "after prepare"


@pytest.mark.integration
@pytest.mark.parametrize("async_io", ["aioboto3", "threads"])
async def test_sqs_prepare_resolves_each_url_once_and_refuses_a_missing_queue(localstack_endpoint: str, queue: str, async_io: str) -> None:
    """On SQS prepare costs one GetQueueUrl per queue and none afterwards; a missing queue is QueueNotFound."""
    settings = Settings(broker="sqs", endpoint_url=localstack_endpoint, region="us-east-1")
    admin, consumer = SqsBroker(settings), SqsBroker(settings, async_io=async_io)
    try:
        admin.ensure_queue(queue, QueueConfig(visibility_timeout_s=2))
        await consumer.prepare([queue])
        await consumer.receive(queue, max_messages=1, wait_s=0)
        await consumer.prepare([queue])
        assert consumer.calls.get("get_queue_url") == 1

        with pytest.raises(QueueNotFound, match=f"{queue}-missing"):
            await consumer.prepare([f"{queue}-missing"])
    finally:
        await consumer.aclose()
        for name in admin.list_queues(queue):
            admin._call(name, "delete_queue", {"QueueUrl": admin.queue_url(name)})
        admin.close()


@pytest.mark.integration
async def test_sqs_prepare_on_an_unreachable_endpoint_is_broker_unavailable(queue: str) -> None:
    """A refused connection while resolving queues is transient (the worker waits it out), not a crash."""
    broker = SqsBroker(Settings(broker="sqs", endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    try:
        with pytest.raises(BrokerUnavailable, match="sqs endpoint unreachable"):
            await broker.prepare([queue])
    finally:
        await broker.aclose()


async def test_list_queues_by_prefix(broker: ContractBroker, queue: str) -> None:
    """list_queues names the queues that exist under a prefix, a DLQ included, and nothing else."""
    broker.ensure_queue(queue, QueueConfig(visibility_timeout_s=2, dead_letter_queue=f"{queue}-dlq"))
    assert broker.list_queues(queue) == [queue, f"{queue}-dlq"]
    assert queue in broker.list_queues()
    assert broker.list_queues(f"{queue}-nothing-") == []


# -- the admin plane -------------------------------------------------------------------------------
@pytest.fixture(params=["local", "memory"])
async def ops_broker(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> AsyncIterator[ContractBroker]:
    """The in-process brokers only: SQS's peek/redrive/purge are covered end to end in
    tests/integration/test_cli_ops.py (so no "sqs" case is collected only to be skipped)."""
    built = BROKERS[str(request.param)].build(clock, tmp_path)
    yield built
    await built.aclose()
    built.close()


async def test_peek_changes_nothing(ops_broker: ContractBroker, queue: str) -> None:
    """peek shows messages without receiving them, and its empty receipt cannot ack."""
    ops_broker.send(queue, [OutgoingMessage("a", attributes={"k": "v"}), OutgoingMessage("b")])
    peeked = ops_broker.peek(queue, 10)
    assert [(d.body, d.receive_count) for d in peeked] == [("a", 0), ("b", 0)]
    assert peeked[0].attributes == {"k": "v"}

    await ops_broker.ack(queue, peeked)
    assert ops_broker.stats(queue).visible == 2


async def test_move_messages_resets_receive_counts(ops_broker: ContractBroker, queue: str) -> None:
    """Moving messages back from a DLQ gives them a fresh receive count; max_messages caps the move."""
    dlq = f"{queue}-dlq"
    ops_broker.send(dlq, [OutgoingMessage(str(i)) for i in range(3)])
    await receive_n(ops_broker, dlq, 3, visibility_timeout_s=0)

    assert ops_broker.move_messages(dlq, queue, max_messages=2) == 2
    assert ops_broker.move_messages(dlq, queue) == 1
    got = await receive_n(ops_broker, queue, 3)
    assert sorted(d.body for d in got) == ["0", "1", "2"]
    assert {d.receive_count for d in got} == {1}


async def test_purge_and_list_queues(ops_broker: ContractBroker, queue: str) -> None:
    """purge deletes everything, in flight included; list_queues names every known queue."""
    ops_broker.send(queue, [OutgoingMessage(str(i)) for i in range(4)])
    await ops_broker.receive(queue, max_messages=1, wait_s=0)

    assert queue in ops_broker.list_queues()
    assert ops_broker.purge(queue) == 4
    assert ops_broker.stats(queue).in_flight == ops_broker.stats(queue).visible == 0

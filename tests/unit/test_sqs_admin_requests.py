"""Pure SQS requests and parsers of the ops commands: DLQ move tasks, redrive copies, purge."""

from __future__ import annotations

import pytest

from cloudq.brokers import sqs_requests as rq
from cloudq.brokers.base import Delivery

pytestmark = pytest.mark.unit

SOURCE = "arn:aws:sqs:us-east-1:000000000000:shop-billing-dlq"


def test_start_move_task_names_source_and_destination() -> None:
    assert rq.start_move_task_request(SOURCE, "arn:dest") == ("start_message_move_task", {"SourceArn": SOURCE, "DestinationArn": "arn:dest"})
    assert rq.list_move_tasks_request(SOURCE) == ("list_message_move_tasks", {"SourceArn": SOURCE, "MaxResults": 10})


def test_parse_move_task_finds_ours_by_handle_while_running() -> None:
    """A running task is matched by its handle and reports moved / to move."""
    response = {"Results": [{"TaskHandle": "h1", "Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 4, "ApproximateNumberOfMessagesToMove": 9}]}
    task = rq.parse_move_task(response, "h1")
    assert task == rq.MoveTask("RUNNING", 4, 9) and not task.finished


def test_parse_move_task_takes_the_newest_finished_one_without_a_handle() -> None:
    """SQS drops the handle once a task ends: the newest result, handle-less, is ours."""
    response = {"Results": [
        {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 9, "ApproximateNumberOfMessagesToMove": 9},
        {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 1},
    ]}  # fmt: skip
    task = rq.parse_move_task(response, "h1")
    assert task == rq.MoveTask("COMPLETED", 9, 9) and task.finished


def test_parse_move_task_failed_carries_the_reason() -> None:
    response = {"Results": [{"Status": "FAILED", "ApproximateNumberOfMessagesMoved": 2, "FailureReason": "AccessDenied"}]}
    assert rq.parse_move_task(response, "h1") == rq.MoveTask("FAILED", 2, None, "AccessDenied")


@pytest.mark.parametrize("response", [{"Results": []}, {}, {"Results": [{"TaskHandle": "someone-else", "Status": "RUNNING"}]}])
def test_parse_move_task_not_ours(response: dict) -> None:
    assert rq.parse_move_task(response, "h1") is None


def test_redrive_messages_keep_body_and_reason_attributes() -> None:
    """Copies keep the body and the recorded reason; a standard queue gets no group or dedup id."""
    dead = Delivery("d", "m1", "r1", '{"task": "t"}', 3, {"cloudq-reason": "rejected"}, group_id=None)
    [copy] = rq.redrive_messages("shop-billing", [dead])
    assert (copy.body, dict(copy.attributes), copy.group_id, copy.dedup_id, copy.delay_s) == ('{"task": "t"}', {"cloudq-reason": "rejected"}, None, None, 0)


def test_redrive_messages_to_fifo_keep_the_group_with_a_dedup_id_per_receive() -> None:
    """On FIFO the group survives and each receive gets its own dedup id (a second redrive is not swallowed)."""
    first = Delivery("d.fifo", "m1", "receipt-1", "b", 1, group_id="order-7")
    again = Delivery("d.fifo", "m1", "receipt-2", "b", 1, group_id=None)
    a, b = rq.redrive_messages("orders.fifo", [first, again])
    assert (a.group_id, b.group_id) == ("order-7", "default")
    assert a.dedup_id and b.dedup_id and a.dedup_id != b.dedup_id and len(a.dedup_id) <= 128


def test_purge_and_arn_requests() -> None:
    assert rq.purge_request("u") == ("purge_queue", {"QueueUrl": "u"})
    assert rq.queue_arn_request("u") == ("get_queue_attributes", {"QueueUrl": "u", "AttributeNames": ["QueueArn"]})


def test_list_queues_pages_by_prefix_and_parses_names_from_urls() -> None:
    """ListQueues asks for full pages under the prefix; names are the URLs' last segments."""
    assert rq.list_queues_request("shop-", None) == ("list_queues", {"MaxResults": 1000, "QueueNamePrefix": "shop-"})
    assert rq.list_queues_request("", "t1") == ("list_queues", {"MaxResults": 1000, "NextToken": "t1"})
    url = "http://127.0.0.1:4566/000000000000/shop-billing.fifo"
    assert rq.parse_list_queues({"QueueUrls": [url], "NextToken": "t2"}) == ({"shop-billing.fifo": url}, "t2")
    assert rq.parse_list_queues({}) == ({}, None)

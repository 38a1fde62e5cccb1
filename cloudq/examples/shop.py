"""A small shop's background jobs: the example app that ``cloudq demo`` runs.

Settings come from ``CLOUDQ_*`` environment variables, so the same module runs on the
embedded local broker (the default), on LocalStack, or on AWS::

    cloudq worker cloudq.examples.shop:app                        # local broker, .cloudq/broker.db
    CLOUDQ_BROKER=sqs CLOUDQ_ENDPOINT_URL=http://127.0.0.1:4566 \\
        cloudq worker cloudq.examples.shop:app                    # SQS on LocalStack

Producing from a web handler::

    from cloudq.examples.shop import charge, send_welcome_email

    send_welcome_email.delay("ada@example.com")        # sync producer
    await charge.adelay("order-42", amount_cents=1999)  # async producer, never blocks the loop

The tasks show the API, one behaviour each: a sync task, an async task with its own
queue, retries and timeout, a task that asks to be retried (``cloudq.Retry``), a task
that gives up on purpose (``cloudq.Reject``, straight to the dead-letter queue), and a
periodic task (``@app.periodic``) that AWS fires on a schedule.
The "external services" are simulated, so the tasks are fast and need no network.

On AWS Lambda the handler is :mod:`cloudq.examples.shop_lambda` (``serverless.yml`` deploys
it), kept apart so that importing this module in a worker or a web process builds no handler.
"""

from __future__ import annotations

import asyncio
import threading

import structlog

import cloudq

__all__ = ["app", "charge", "hourly_revenue_report", "notify_legacy_crm", "send_welcome_email", "update_search_index"]

logger = structlog.get_logger(__name__)

app = cloudq.App("shop")


@app.task
def send_welcome_email(user_email: str) -> None:
    """A plain sync task on the default queue; the worker runs it in a thread.

    Its name is the default one, ``cloudq.examples.shop.send_welcome_email``.
    """
    body = f"Welcome to the shop, {user_email.partition('@')[0]}!"
    logger.debug("email.rendered", chars=len(body))  # a real app would hand ``body`` to SES here


@app.task(name="billing.charge", queue="billing", max_retries=5, timeout=30)
async def charge(order_id: str, amount_cents: int) -> dict[str, object]:
    """An async task on its own queue, with more retries than the default and a timeout.

    An explicit name keeps enqueued jobs valid when the function moves to another module. Its result
    (a receipt) is kept by the job store: ``ref.result()`` or ``cloudq job APP ID`` reads it back.
    """
    if amount_cents <= 0:
        raise cloudq.Reject(f"order {order_id}: nothing to charge ({amount_cents} cents)")
    await asyncio.sleep(0)  # stands for the payment provider's HTTP call
    return {"order": order_id, "charged_cents": amount_cents}


_indexed_once: set[str] = set()
_indexed_lock = threading.Lock()


@app.task(name="search.update_index")
def update_search_index(product_id: str) -> None:
    """Fails once per product, then succeeds: a flaky search cluster, simulated.

    ``Retry(delay=1)`` asks for another attempt in one second instead of the policy's
    backoff. The first attempt is remembered per process, so with one worker process
    each product is retried exactly once.
    """
    with _indexed_lock:
        first_attempt = product_id not in _indexed_once
        _indexed_once.add(product_id)
    if first_attempt:
        raise cloudq.Retry(delay=1, reason="search cluster busy")


@app.task(name="crm.notify_legacy")
def notify_legacy_crm(customer_id: str) -> None:
    """Always rejects: the legacy CRM was retired, but old code may still enqueue for it.

    ``Reject`` skips the retries: the job goes to its queue's dead-letter queue at once,
    with the reason attached for whoever looks at the DLQ.
    """
    raise cloudq.Reject(f"legacy CRM was retired; customer {customer_id} not notified")


@app.periodic("rate(1 hour)", name="reports.hourly_revenue")
def hourly_revenue_report() -> None:
    """A periodic task on the default queue: every hour, one job with no arguments.

    In production AWS fires it: the EventBridge rule in ``infra/cloudformation.json`` and
    ``serverless.yml`` sends the job to the queue (``cloudq schedules sync`` can create the
    same rule instead). On the local broker the worker fires it itself, on the full hours
    (UTC); a fresh database only records the task, so nothing fires at start-up.
    """
    revenue_cents = 0  # a real app would sum the last hour's orders from its database here
    logger.debug("report.hourly_revenue", revenue_cents=revenue_cents)

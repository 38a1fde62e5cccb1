"""``python -m bench.map_process cloudq|raw QUEUE_NAME N``: ``.map()`` as a user's fresh script does it.

The child half of the fresh-process producer bench (:mod:`bench.cli_drain`). It prints one JSON line of
``time.perf_counter()`` marks (the parent's clock too, on Linux) and this process's CPU time at each:

- ``imported``: after ``import cloudq`` + the app module (cloudq), or ``import boto3`` (raw);
- ``first``: after the first 10 jobs were sent: cloudq builds its boto3 client and resolves the queue URL
  inside that first ``.map()``; the raw side creates its client and calls GetQueueUrl here;
- ``done``: after the other N - 10 jobs (one ``.map()`` call, or SendMessageBatch of 10 in a loop).

Both sides send the same envelope fields, built per message (:func:`bench.sqs_drain.raw_body` for raw).
Settings come from ``CLOUDQ_*``, as in the CLI drain.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone

FIRST = 10


def _mark(marks: dict[str, list[float]], name: str) -> None:
    marks[name] = [time.perf_counter(), time.process_time()]


def raw_body() -> str:
    """Like :func:`bench.sqs_drain.raw_body`, repeated here so the raw child imports only boto3."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {"v": 1, "id": uuid.uuid4().hex, "task": "bench.noop", "args": [], "kwargs": {}, "enqueued_at": now, "eta": None, "headers": {}},
        separators=(",", ":"),
    )


def run_cloudq(queue_name: str, n: int, marks: dict[str, list[float]]) -> None:
    from bench.cli_app import noop

    _mark(marks, "imported")
    task = noop.with_options(queue=queue_name.removeprefix(os.environ.get("CLOUDQ_QUEUE_PREFIX", "")))
    task.map([()] * FIRST)
    _mark(marks, "first")
    task.map([()] * (n - FIRST))
    _mark(marks, "done")


def run_raw(queue_name: str, n: int, marks: dict[str, list[float]]) -> None:
    import boto3  # noqa: F401 - imported before the "imported" mark, as the hand-written script would
    import botocore.config  # noqa: F401

    from bench.raw_client import sqs_client

    _mark(marks, "imported")
    client = sqs_client(os.environ["CLOUDQ_ENDPOINT_URL"], os.environ.get("CLOUDQ_REGION", "us-east-1"))
    url = client.get_queue_url(QueueName=queue_name)["QueueUrl"]
    sent = 0
    while sent < n:
        count = min(10, n - sent)
        response = client.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": raw_body()} for i in range(count)])
        if response.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {response['Failed']}")
        sent += count
        if sent == FIRST:
            _mark(marks, "first")
    _mark(marks, "done")


def main(side: str, queue_name: str, n: int) -> int:
    marks: dict[str, list[float]] = {}
    _mark(marks, "main")
    (run_cloudq if side == "cloudq" else run_raw)(queue_name, n, marks)
    print(json.dumps(marks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

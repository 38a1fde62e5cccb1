"""``python -m bench.raw_consumer QUEUE_NAME N``: the hand-batched boto3 loop a user would write, as a process.

The reference side of the CLI drain bench (:mod:`bench.cli_drain`): a boto3 client configured like cloudq's
(standard retries, same timeouts), GetQueueUrl by name as ``cloudq worker`` does, then one thread looping
ReceiveMessage(10, 20 s long poll) -> ``json.loads`` each body and call the no-op -> DeleteMessageBatch,
until N jobs ran. The endpoint and region come from ``CLOUDQ_ENDPOINT_URL`` and ``CLOUDQ_REGION``, the same
variables the cloudq side reads.
"""

from __future__ import annotations

import json
import os
import sys

from bench import jobclock


def noop() -> None:
    jobclock.tick()


def main(queue_name: str, n: int) -> int:
    from bench.raw_client import sqs_client

    client = sqs_client(os.environ["CLOUDQ_ENDPOINT_URL"], os.environ.get("CLOUDQ_REGION", "us-east-1"))
    url = client.get_queue_url(QueueName=queue_name)["QueueUrl"]
    done = 0
    while done < n:
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=20).get("Messages", [])
        if not messages:
            continue
        for message in messages:
            body = json.loads(message["Body"])
            noop(*body.get("args", ()), **body.get("kwargs", {}))
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        failed = client.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed")
        if failed:
            print(f"raw_consumer: DeleteMessageBatch failed: {failed}", file=sys.stderr)
            return 1
        done += len(messages)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))

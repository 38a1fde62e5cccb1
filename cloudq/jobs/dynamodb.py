"""Job state in DynamoDB: one on-demand table, one item per job, keyed by ``id``.

Each protocol call is one request where DynamoDB can do it in one (conditional UpdateItem for claim,
finish, progress and cancel; BatchWriteItem of 25 for queued records; BatchGetItem of 100 for the
cancel check; TransactWriteItems for a unique key and its job), because DynamoDB bills per request
and per item: see the README's cost table. Unique keys are items of the same table (``id`` =
``key#<key>``, with ``job_id``). The ``ttl`` attribute (epoch seconds) is the table's TTL attribute;
DynamoDB deletes expired items lazily, so every read also treats ``ttl`` in the past as absent.

Listing (``cloudq jobs``, the dashboard) scans the table: an admin read, paid per item read, with no
index to keep in sync on every status change (an index on status would add a write to each of the
job's three). The low-level client is used, not boto3's resource layer: it imports less and needs no
Decimal for numbers (results travel as JSON text anyway).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cloudq.errors import BrokerError, ConfigurationError
from cloudq.jobs.state import ACTIVE, CANCELLABLE, FINAL, SKIP_ON_DELIVERY, Finish, JobState, NewJob, state_from_record
from cloudq.jobs.store import Claim

__all__ = ["DynamoJobStore", "table_definition"]

_MAX_RESULT_BYTES = 350_000  # the item limit is 400 KB, the rest of the record included
_KEY_PREFIX = "key#"
_SCAN_PAGES = 100
_NUMBERS = frozenset({"attempts", "progress", "enqueued_at", "started_at", "finished_at", "updated_at", "ttl"})


@dataclass(frozen=True)
class _Endpoint:
    region: str | None
    endpoint_url: str | None


def table_definition(table: str) -> dict[str, Any]:
    """CreateTable's parameters: what ``cloudq queues ensure`` creates and ``infra render`` declares."""
    return {
        "TableName": table,
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


class _ConditionFailed(Exception):
    def __init__(self, item: dict[str, Any] | None) -> None:
        self.item = item


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        return {"N": repr(round(value, 6)) if isinstance(value, float) else str(value)}
    return {"S": str(value)}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, typed in item.items():
        ((kind, raw),) = typed.items()
        out[name] = float(raw) if kind == "N" else raw if kind in ("S", "BOOL") else None
    return out


def _update(sets: dict[str, Any], *, if_absent: dict[str, Any] | None = None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """An UpdateExpression from ``sets`` (None values are REMOVEd) and ``if_absent`` (set only if missing)."""
    names, values, set_parts, remove = {}, {}, [], []
    for i, (name, value) in enumerate({**sets, **(if_absent or {})}.items()):
        names[f"#a{i}"] = name
        if value is None:
            remove.append(f"#a{i}")
        elif if_absent and name in if_absent:
            set_parts.append(f"#a{i} = if_not_exists(#a{i}, :v{i})")
            values[f":v{i}"] = _value(value)
        else:
            set_parts.append(f"#a{i} = :v{i}")
            values[f":v{i}"] = _value(value)
    expression = ("SET " + ", ".join(set_parts)) if set_parts else ""
    if remove:
        expression += " REMOVE " + ", ".join(remove)
    return expression.strip(), names, values


class DynamoJobStore:
    """Job state in the DynamoDB table ``table``; ``client`` is a boto3 DynamoDB client."""

    kind: ClassVar[str] = "dynamodb"
    max_result_bytes: ClassVar[int] = _MAX_RESULT_BYTES

    def __init__(self, table: str, client: Callable[[], Any], *, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self._client_factory = client
        self._client: Any = None
        self.ttl_s = ttl_s
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Any, table: str) -> DynamoJobStore:
        from cloudq.aws.clients import client

        endpoint = _Endpoint(settings.region, settings.job_store_endpoint_url or settings.endpoint_url)
        # validate=False: every request is built here from tested builders (botocore's check costs CPU per call)
        return cls(table, lambda: client("dynamodb", endpoint, max_pool_connections=20, read_timeout_s=10, validate=False), ttl_s=settings.job_ttl_s)

    # -- the protocol -----------------------------------------------------------------------
    def check(self) -> None:
        self._call("describe_table", TableName=self.table)

    def ensure(self) -> None:
        try:
            self.check()
            return
        except ConfigurationError:
            pass
        self._call("create_table", **table_definition(self.table))
        self.client.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        self._call("update_time_to_live", TableName=self.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})

    def put_queued(self, jobs: Sequence[NewJob]) -> None:
        now = self.clock()
        requests = [{"PutRequest": {"Item": self._queued_item(job, now)}} for job in jobs]
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {self.table: requests[start : start + 25]}
            for _ in range(5):  # throttled items come back as UnprocessedItems
                pending = self._call("batch_write_item", RequestItems=pending).get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(0.05)
            if pending:
                from cloudq.errors import BrokerUnavailable

                raise BrokerUnavailable(f"DynamoDB left {len(pending[self.table])} queued job records unwritten in {self.table!r}")

    def _queued_item(self, job: NewJob, now: float) -> dict[str, Any]:
        item = {"id": job.id, "status": "queued", "task": job.task, "queue": job.queue, "enqueued_at": job.enqueued_at,
                "updated_at": now, "ttl": int(now + self.ttl_s)}  # fmt: skip
        if job.unique_key:
            item["unique_key"] = job.unique_key
        return {k: _value(v) for k, v in item.items()}

    def reserve_unique(self, key: str, job: NewJob) -> str | None:
        holder: str | None = None
        for _ in range(3):
            now = self.clock()
            lock = {"id": _value(_KEY_PREFIX + key), "job_id": _value(job.id), "ttl": _value(int(now + self.ttl_s))}
            if holder is None:
                condition, values = "attribute_not_exists(id) OR #ttl < :now", {":now": _value(int(now))}
            else:  # the key is held by a job that ended without releasing it: take it over from exactly that job
                condition, values = "job_id = :holder", {":holder": _value(holder)}
            try:
                self._call("transact_write_items", TransactItems=[
                    {"Put": {"TableName": self.table, "Item": lock, "ConditionExpression": condition,
                             **({"ExpressionAttributeNames": {"#ttl": "ttl"}} if holder is None else {}),
                             "ExpressionAttributeValues": values}},
                    {"Put": {"TableName": self.table, "Item": self._queued_item(job, now), "ConditionExpression": "attribute_not_exists(id)"}},
                ])  # fmt: skip
                return None
            except _ConditionFailed:
                held = self._get_item(_KEY_PREFIX + key)
                holder = held.get("job_id") if held else None
                if holder is None:
                    continue
                state = self.get(holder)
                if state is not None and state.status in ACTIVE:
                    return str(holder)
        raise BrokerError(f"unique key {key!r} kept changing hands in {self.table!r}; try the enqueue again")

    def forget(self, jobs: Sequence[NewJob]) -> None:
        for job in jobs:
            self._delete(job.id, "#s = :queued", {"#s": "status"}, {":queued": _value("queued")})
            if job.unique_key:
                self._delete(_KEY_PREFIX + job.unique_key, "job_id = :id", None, {":id": _value(job.id)})

    def claim(self, job_id: str, *, task: str, queue: str, attempt: int, enqueued_at: float | None, record: bool) -> Claim:
        now = self.clock()
        if not record:
            old = self._get_item(job_id, consistent=True)
            return self._claim_of(old, now)
        expression, names, values = _update(
            {"status": "running", "task": task, "queue": queue, "attempts": attempt, "started_at": now, "updated_at": now,
             "ttl": int(now + self.ttl_s), "finished_at": None, "progress": None, "progress_message": None},
            if_absent={"cancel_requested": False, **({"enqueued_at": enqueued_at} if enqueued_at is not None else {})},
        )  # fmt: skip
        names.update({"#cs": "status", "#ct": "ttl"})
        skip = {f":skip{i}": _value(status) for i, status in enumerate(sorted(SKIP_ON_DELIVERY))}
        values.update({**skip, ":now": _value(int(now))})
        try:
            answer = self._call(
                "update_item", TableName=self.table, Key={"id": _value(job_id)}, UpdateExpression=expression,
                ConditionExpression=f"attribute_not_exists(id) OR #ct < :now OR NOT (#cs IN ({', '.join(skip)}))",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )  # fmt: skip
        except _ConditionFailed as failed:
            old = _plain(failed.item) if failed.item else self._get_item(job_id, consistent=True)
            return self._claim_of(old, now)
        return self._claim_of(_plain(answer["Attributes"]) if answer.get("Attributes") else None, now)

    @staticmethod
    def _claim_of(old: dict[str, Any] | None, now: float) -> Claim:
        if not old or "status" not in old or float(old.get("ttl") or 0) < now:
            return Claim(None)
        return Claim(old["status"], bool(old.get("cancel_requested")))

    def finish(self, job_id: str, end: Finish) -> None:
        now = self.clock()
        error = end.error
        expression, names, values = _update(
            {"status": end.status, "task": end.task, "queue": end.queue, "attempts": end.attempts, "result": end.result_json,
             "error_type": error.type if error else None, "error_message": error.message if error else None,
             "error_reason": error.reason if error else None, "result_error": end.result_error,
             "finished_at": now if end.status in FINAL else None, "updated_at": now, "ttl": int(now + self.ttl_s),
             "cancel_requested": None},
            if_absent={"enqueued_at": end.enqueued_at} if end.enqueued_at is not None else None,
        )  # fmt: skip
        names["#attempt"], values[":attempt"] = "attempts", _value(end.attempts)
        try:  # an end state of an earlier attempt (a write retried late) never overwrites a later one's
            self._call("update_item", TableName=self.table, Key={"id": _value(job_id)}, UpdateExpression=expression,
                       ConditionExpression="attribute_not_exists(#attempt) OR #attempt <= :attempt",
                       ExpressionAttributeNames=names, ExpressionAttributeValues=values)  # fmt: skip
        except _ConditionFailed:
            return
        if end.unique_key and end.status in FINAL:
            self._delete(_KEY_PREFIX + end.unique_key, "job_id = :id", None, {":id": _value(job_id)})

    def set_progress(self, job_id: str, fraction: float, message: str | None) -> None:
        now = self.clock()
        expression, names, values = _update({"progress": fraction, "progress_message": message, "updated_at": now, "ttl": int(now + self.ttl_s)})
        names["#cs"] = "status"
        values[":running"] = _value("running")
        try:
            self._call("update_item", TableName=self.table, Key={"id": _value(job_id)}, UpdateExpression=expression,
                       ConditionExpression="#cs = :running", ExpressionAttributeNames=names, ExpressionAttributeValues=values)  # fmt: skip
        except _ConditionFailed:
            pass  # no longer running: the final state wins

    def request_cancel(self, job_id: str) -> bool | None:
        now = self.clock()
        names = {"#s": "status", "#t": "ttl", "#f": "finished_at", "#u": "updated_at"}
        values = {":cancelled": _value("cancelled"), ":now": _value(now), ":nowi": _value(int(now)),
                  **{f":c{i}": _value(s) for i, s in enumerate(sorted(CANCELLABLE))}}  # fmt: skip
        try:
            answer = self._call(
                "update_item", TableName=self.table, Key={"id": _value(job_id)},
                UpdateExpression="SET #s = :cancelled, #f = :now, #u = :now",
                ConditionExpression=f"#t > :nowi AND #s IN ({', '.join(f':c{i}' for i in range(len(CANCELLABLE)))})",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
            )  # fmt: skip
            key = _plain(answer.get("Attributes") or {}).get("unique_key")
            if key:
                self._delete(_KEY_PREFIX + key, "job_id = :id", None, {":id": _value(job_id)})
            return True
        except _ConditionFailed:
            pass
        try:
            self._call(
                "update_item", TableName=self.table, Key={"id": _value(job_id)}, UpdateExpression="SET cancel_requested = :yes, #u = :now",
                ConditionExpression="#t > :nowi AND #s = :running", ExpressionAttributeNames={"#s": "status", "#t": "ttl", "#u": "updated_at"},
                ExpressionAttributeValues={":yes": _value(True), ":now": _value(now), ":nowi": _value(int(now)), ":running": _value("running")},
            )  # fmt: skip
            return True
        except _ConditionFailed:
            pass
        return None if self.get(job_id) is None else False

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        asked: set[str] = set()
        for start in range(0, len(job_ids), 100):
            keys = [{"id": _value(i)} for i in job_ids[start : start + 100]]
            pending: dict[str, Any] = {self.table: {"Keys": keys, "ProjectionExpression": "id, cancel_requested"}}
            for _ in range(5):
                answer = self._call("batch_get_item", RequestItems=pending)
                asked.update(item["id"]["S"] for item in answer.get("Responses", {}).get(self.table, []) if item.get("cancel_requested", {}).get("BOOL"))
                pending = answer.get("UnprocessedKeys") or {}
                if not pending:
                    break
        return asked

    def get(self, job_id: str) -> JobState | None:
        item = self._get_item(job_id, consistent=True)
        if not item or "status" not in item or float(item.get("ttl") or 0) < self.clock():
            return None
        return state_from_record(item)

    def list(self, *, status: str | None = None, task: str | None = None, limit: int = 50) -> list[JobState]:
        names, values = {"#s": "status", "#t": "ttl"}, {":now": _value(int(self.clock()))}
        conditions = ["attribute_exists(#s)", "#t >= :now"]
        for field, value in (("status", status), ("task", task)):
            if value:
                names[f"#{field}"], values[f":{field}"] = field, _value(value)
                conditions.append(f"#{field} = :{field}")
        params: dict[str, Any] = {"TableName": self.table, "FilterExpression": " AND ".join(conditions),
                                  "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}  # fmt: skip
        items: list[dict[str, Any]] = []
        for _ in range(_SCAN_PAGES):
            page = self._call("scan", **params)
            items.extend(_plain(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        items.sort(key=lambda item: (-(item.get("enqueued_at") or 0), item["id"]))
        return [state_from_record(item) for item in items[:limit]]

    def close(self) -> None:
        self._client = None

    # -- requests ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _get_item(self, item_id: str, *, consistent: bool = True) -> dict[str, Any] | None:
        answer = self._call("get_item", TableName=self.table, Key={"id": _value(item_id)}, ConsistentRead=consistent)
        return _plain(answer["Item"]) if answer.get("Item") else None

    def _delete(self, item_id: str, condition: str, names: dict[str, str] | None, values: dict[str, Any]) -> None:
        try:
            self._call("delete_item", TableName=self.table, Key={"id": _value(item_id)}, ConditionExpression=condition,
                       ExpressionAttributeValues=values, **({"ExpressionAttributeNames": names} if names else {}))  # fmt: skip
        except _ConditionFailed:
            pass

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One request, with DynamoDB's answers translated: a failed condition is :class:`_ConditionFailed`
        (an outcome, not an error), a missing table the one-line error that says how to create it."""
        import botocore.exceptions

        from cloudq.aws.errors import translate

        try:
            return dict(getattr(self.client, operation)(**params))
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise _ConditionFailed(exc.response.get("Item")) from None
            if code == "TransactionCanceledException" and "ConditionalCheckFailed" in str(exc):
                raise _ConditionFailed(None) from None
            if code == "ResourceNotFoundException":
                raise ConfigurationError(
                    f"job table {self.table!r} does not exist (CLOUDQ_JOB_TABLE): create it with `cloudq queues ensure APP`"
                    " for development, or deploy the stack `cloudq infra render APP` writes"
                ) from exc
            raise translate(exc, "dynamodb", operation, self.table) or exc from exc
        except Exception as exc:
            error = translate(exc, "dynamodb", operation, self.table)
            if error is None:
                raise
            raise error from exc

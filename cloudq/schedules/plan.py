"""What the two schedule engines share: resource names, the ownership marker, and the plan/diff they print.

A sync is computed before anything is changed: read what AWS has, compare it with what the registry wants,
and produce a list of :class:`Change` (create, update, delete, unchanged). ``--dry-run`` prints that list;
a real sync prints it and applies it; a second sync finds nothing but ``unchanged`` and says so. The diff is
pure, so the rules that decide what gets deleted (only resources marked as this app's) are unit-tested
without AWS.

Ownership is a marker in the resource's Description, which both EventBridge rules and Scheduler schedules
carry and which their list calls return without one more request per resource. It names the app *and* its
queue prefix, because staging and production usually share an app name in one account, and pruning one must
never touch the other.

The queue look-ups both engines make sit at the end of this module; like every AWS call of the engines they
go through :func:`cloudq.aws.errors.call`, which translates botocore's errors where they enter cloudq.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cloudq.aws.errors import call
from cloudq.errors import ConfigurationError, QueueNotFound

__all__ = [
    "Action", "Change", "Owner", "QueueInfo", "diff_resources", "owner_tags", "read_queue", "read_target_queues",
    "render_plan", "resource_name",
]  # fmt: skip

Action = Literal["create", "update", "delete", "unchanged", "orphaned"]

_NAME_LIMIT = 64  # EventBridge rule, Scheduler schedule and schedule group names
_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9._-]")
_NOT_TAG_CHAR = re.compile(r"[^\w .:/=+@-]")
_MARKER = "cloudq:"
_SYMBOLS = {"create": "+", "update": "~", "delete": "-", "unchanged": "=", "orphaned": "!"}


def resource_name(*parts: str) -> str:
    """``cloudq-<parts>`` in the characters and length AWS allows; stable across runs and machines.

    A name that had to be changed (a character replaced, or cut at 64) gets a short hash of the original,
    so two tasks whose names differ only in what was lost cannot collide.
    """
    raw = "cloudq-" + "".join(parts)
    clean = _NOT_NAME_CHAR.sub("-", raw)
    if clean == raw and len(raw) <= _NAME_LIMIT:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{clean[: _NAME_LIMIT - len(digest) - 1]}-{digest}"


@dataclass(frozen=True)
class Owner:
    """An app deployed under one queue prefix: the unit that a sync manages and a prune may delete from."""

    app: str
    queue_prefix: str

    def marker(self, task: str) -> str:
        """The Description that marks a resource as this owner's, naming the task it fires (JSON: unambiguous)."""
        body = json.dumps({"app": self.app, "prefix": self.queue_prefix, "task": task}, separators=(",", ":"), sort_keys=True)
        return _MARKER + body

    def task_of(self, description: str | None) -> str | None:
        """The task a resource fires if this owner made it; None for anyone else's (other apps and prefixes too)."""
        if not description or not description.startswith(_MARKER):
            return None
        try:
            data = json.loads(description[len(_MARKER) :])
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("app") != self.app or data.get("prefix") != self.queue_prefix:
            return None
        task = data.get("task")
        return task if isinstance(task, str) else None


def owner_tags(owner: Owner) -> list[dict[str, str]]:
    """Tags for consoles, cost reports and IAM conditions; the Description marker remains what a prune trusts."""
    app = _NOT_TAG_CHAR.sub("_", owner.app)[:256]
    tags = [{"Key": "ManagedBy", "Value": "cloudq"}, {"Key": "CloudqApp", "Value": app}]
    if owner.queue_prefix:
        tags.append({"Key": "CloudqQueuePrefix", "Value": owner.queue_prefix[:256]})
    return tags


@dataclass(frozen=True)
class Change:
    """One line of a plan; ``payload`` is what applying it sends (not shown, not compared)."""

    action: Action
    kind: str  # "rule", "schedule", "schedule group", "queue policy"
    name: str
    detail: str = ""
    payload: Any = field(default=None, compare=False, repr=False)

    @property
    def is_change(self) -> bool:
        return self.action in ("create", "update", "delete")


def diff_resources(
    kind: str,
    desired: Mapping[str, tuple[dict[str, Any], Any]],
    current: Mapping[str, dict[str, Any]],
    owned: set[str],
    *,
    prune: bool,
    current_payload: Callable[[str], Any] = lambda name: None,
) -> list[Change]:
    """Compare wanted resources (name -> (fingerprint, payload)) with current ones (name -> fingerprint).

    ``owned`` names the current resources marked as this owner's. A wanted name held by anyone else is
    an error, never an overwrite; an owned resource the registry no longer has is deleted only with
    ``prune`` and reported as orphaned otherwise.
    """
    changes: list[Change] = []
    for name, (want, payload) in sorted(desired.items()):
        if name not in current:
            changes.append(Change("create", kind, name, _summary(want), payload))
        elif name not in owned:
            raise ConfigurationError(f"{kind} {name!r} exists but is not managed by cloudq for this app; refusing to overwrite it")
        elif current[name] != want:
            changes.append(Change("update", kind, name, _differences(current[name], want), payload))
        else:
            changes.append(Change("unchanged", kind, name))
    for name in sorted(owned - desired.keys()):
        if prune:
            changes.append(Change("delete", kind, name, "no longer in the registry", current_payload(name)))
        else:
            changes.append(Change("orphaned", kind, name, "no longer in the registry; kept (--prune deletes it)"))
    return changes


def _summary(fingerprint: Mapping[str, Any]) -> str:
    expression = fingerprint.get("ScheduleExpression")
    zone = fingerprint.get("ScheduleExpressionTimezone")
    target = fingerprint.get("Target") or {}
    arn = str(target.get("Arn", ""))
    where = f" -> {arn.rsplit(':', 1)[-1]}" if arn else ""
    return f"{expression or ''}{f' ({zone})' if zone else ''}{where}".strip()


def _differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    keys = sorted(k for k in {*have, *want} if have.get(k) != want.get(k))
    return "; ".join(f"{k}: {_short(have.get(k))} -> {_short(want.get(k))}" for k in keys)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_plan(changes: list[Change], *, dry_run: bool) -> list[str]:
    """The lines a sync prints: every change, then a one-line verdict ("no changes" when idempotent)."""
    shown = [c for c in changes if c.action != "unchanged"]
    lines = [f"{_SYMBOLS[c.action]} {c.action} {c.kind} {c.name}" + (f": {c.detail}" if c.detail else "") for c in shown]
    n = {a: sum(1 for c in changes if c.action == a) for a in ("create", "update", "delete", "unchanged")}
    if not any(c.is_change for c in changes):
        lines.append(f"no changes ({n['unchanged']} unchanged)")
    else:
        verb = "would apply" if dry_run else "applied"
        counts = f"{n['create']} to create, {n['update']} to update, {n['delete']} to delete, {n['unchanged']} unchanged"
        lines.append(f"{verb}: {counts}")
    return lines


@dataclass(frozen=True)
class QueueInfo:
    """A target queue as a sync needs it: where it is, its ARN, and its current access policy."""

    physical: str
    url: str
    arn: str
    policy: dict[str, Any] | None = None


def read_queue(sqs: Any, physical: str, url: str | None = None) -> QueueInfo | None:
    """The queue's ARN and policy; None if it does not exist (schedules never create queues)."""
    try:
        url = url or call(sqs, "get_queue_url", physical, QueueName=physical)["QueueUrl"]
        attributes = call(sqs, "get_queue_attributes", physical, QueueUrl=url, AttributeNames=["QueueArn", "Policy"])["Attributes"]
    except QueueNotFound:
        return None
    policy = json.loads(attributes["Policy"]) if attributes.get("Policy") else None
    return QueueInfo(physical, url, attributes["QueueArn"], policy)


def read_target_queues(sqs: Any, settings: Any, queues: list[str]) -> dict[str, QueueInfo]:
    """Logical queue -> QueueInfo for every queue a periodic task targets; a missing one is an error."""
    found: dict[str, QueueInfo] = {}
    for queue in sorted(set(queues)):
        physical = settings.queue_name(queue)
        info = read_queue(sqs, physical, settings.queue_urls.get(queue))
        if info is None:
            raise QueueNotFound(f"queue {physical!r} does not exist; create it first (`cloudq queues ensure`)")
        found[queue] = info
    return found

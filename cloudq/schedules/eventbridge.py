"""EventBridge rules for periodic tasks: the default engine of ``cloudq schedules sync``.

One rule per periodic task, on the default event bus, whose single target (Id ``cloudq``) is the task's SQS
queue with a constant Input: the job's envelope (see :meth:`~cloudq.schedules.periodic.PeriodicSpec.envelope_body`).
EventBridge then needs the queue's permission to send, so each rule also gets one statement in its queue's
policy (its Sid is the rule's name), merged with whatever else the policy says, never replacing it.

Rules are the default because they are what LocalStack can fire end to end; EventBridge rules evaluate
cron in UTC and have no one-off schedules, so a task with ``timezone=`` and a cron expression, or an
``at(...)``, needs ``--engine scheduler`` (:mod:`cloudq.schedules.scheduler`) and is refused here.

The module is a pure plan builder (:func:`build_rules_plan`) between two thin I/O steps: :func:`read_rules`
and :func:`apply_rules_plan`, which take injected boto3 clients (from :mod:`cloudq.aws.clients`) and make each
call through :func:`cloudq.aws.errors.call`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cloudq.aws.errors import call
from cloudq.brokers.base import is_fifo
from cloudq.errors import ConfigurationError
from cloudq.schedules.plan import Change, Owner, QueueInfo, diff_resources, read_queue, resource_name

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.schedules.periodic import PeriodicSpec
    from cloudq.signing import Signer

__all__ = ["CurrentRule", "RuleSpec", "apply_rules_plan", "build_rules_plan", "desired_rules", "plan_rules", "read_rules"]

TARGET_ID = "cloudq"
FIFO_GROUP = "cloudq-scheduled"
_RULE_PREFIX = "cloudq-"


@dataclass(frozen=True)
class RuleSpec:
    """A rule the registry wants: its name, schedule, marker and its one target."""

    name: str
    task: str
    expression: str
    description: str
    queue_arn: str
    target: dict[str, Any]
    state: str = "ENABLED"  # not compared: a rule an operator disabled stays disabled

    def fingerprint(self) -> dict[str, Any]:
        return {"ScheduleExpression": self.expression, "Description": self.description, "Target": normalize_target(self.target)}


@dataclass(frozen=True)
class CurrentRule:
    """A rule as EventBridge has it: what a diff compares, and what a delete must remove first."""

    name: str
    expression: str | None
    description: str | None
    state: str
    target: dict[str, Any] | None  # ours, Id "cloudq"
    target_ids: tuple[str, ...] = ()

    def fingerprint(self) -> dict[str, Any]:
        target = normalize_target(self.target) if self.target else None
        return {"ScheduleExpression": self.expression, "Description": self.description, "Target": target}


def normalize_target(target: Mapping[str, Any]) -> dict[str, Any]:
    """The target fields a sync manages, with Input parsed so that JSON spacing never reads as a change."""
    fields = {k: target[k] for k in ("Id", "Arn", "SqsParameters", "RoleArn") if target.get(k)}
    text = target.get("Input")
    try:
        fields["Input"] = json.loads(text) if text else None
    except ValueError:
        fields["Input"] = text
    return fields


def sqs_target(
    spec: PeriodicSpec, queue_arn: str, scheduled_by: str, *, target_id: str | None = TARGET_ID, signer: Signer | None = None
) -> dict[str, Any]:
    """An SQS target carrying the task's envelope; FIFO queues also need a message group."""
    target: dict[str, Any] = {"Arn": queue_arn, "Input": spec.envelope_body(scheduled_by, signer)}
    if target_id is not None:
        target["Id"] = target_id
    if is_fifo(queue_arn):
        target["SqsParameters"] = {"MessageGroupId": FIFO_GROUP}
    return target


def rule_arn(queue_arn: str, rule: str) -> str:
    """A default-bus rule's ARN in the queue's partition, region and account: known before the rule exists."""
    _, partition, _, region, account, _ = queue_arn.split(":", 5)
    return f"arn:{partition}:events:{region}:{account}:rule/{rule}"


def check_rules_engine(spec: PeriodicSpec) -> None:
    """Refuse what EventBridge rules cannot express, rather than deploy a schedule that fires at other times."""
    if spec.schedule.kind == "at":
        raise ConfigurationError(f"task {spec.name!r}: one-off at(...) schedules need EventBridge Scheduler (--engine scheduler)")
    if spec.schedule.kind == "cron" and spec.tz.upper() != "UTC":
        raise ConfigurationError(
            f"task {spec.name!r}: EventBridge rules evaluate cron in UTC, not {spec.tz}; use --engine scheduler for timezone="
        )


def desired_rules(app: App, queues: Mapping[str, QueueInfo]) -> dict[str, RuleSpec]:
    """One rule per periodic task, named from the queue prefix and the task name."""
    owner = Owner(app.name, app.settings.queue_prefix)
    rules: dict[str, RuleSpec] = {}
    for spec in app.periodic_tasks.values():
        check_rules_engine(spec)
        name = resource_name(app.settings.queue_prefix, spec.name)
        queue_arn = queues[spec.queue].arn
        target = sqs_target(spec, queue_arn, name, signer=app.wire.signer)
        rules[name] = RuleSpec(name, spec.name, spec.schedule.expression, owner.marker(spec.name), queue_arn, target)
    return rules


# -- queue policies ------------------------------------------------------------------------------------------
def policy_statement(queue_arn: str, rule: str) -> dict[str, Any]:
    """Lets only this rule (SourceArn) send to the queue: EventBridge's documented SQS permission."""
    return {
        "Sid": rule,
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn(queue_arn, rule)}},
    }


def _statements(policy: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    statements = (policy or {}).get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def merge_policy(policy: Mapping[str, Any] | None, wanted: Mapping[str, dict[str, Any]], owned_sids: set[str]) -> dict[str, Any]:
    """The policy with our wanted statements in place and our stale ones gone; everyone else's untouched."""
    kept: list[dict[str, Any]] = []
    for statement in _statements(policy):
        sid = str(statement.get("Sid", ""))
        if sid in wanted:
            kept.append(wanted[sid])
        elif sid not in owned_sids:
            kept.append(statement)
    present = {s.get("Sid") for s in kept}
    kept += [wanted[sid] for sid in sorted(wanted) if sid not in present]
    merged = {k: v for k, v in (policy or {}).items() if k != "Statement"}
    return {"Version": "2012-10-17", **merged, "Statement": kept}


def plan_policies(queues: Iterable[QueueInfo], final_targets: Mapping[str, str], owned_rules: set[str]) -> list[Change]:
    """Policy changes for each queue, given rule -> queue ARN after the sync and every rule this app owns."""
    owned_sids = set(owned_rules)
    changes: list[Change] = []
    for queue in sorted(queues, key=lambda q: q.arn):
        wanted = {r: policy_statement(queue.arn, r) for r, arn in final_targets.items() if arn == queue.arn}
        after = merge_policy(queue.policy, wanted, owned_sids)
        before_sids = {str(s.get("Sid", "")) for s in _statements(queue.policy)}
        if _statements(after) == _statements(queue.policy):
            continue
        added = sorted(set(wanted) - before_sids)
        removed = sorted((before_sids & owned_sids) - set(wanted))
        detail = ", ".join([*(f"+{s}" for s in added), *(f"-{s}" for s in removed)]) or "statements rewritten"
        text = json.dumps(after, separators=(",", ":")) if _statements(after) else ""
        changes.append(Change("update", "queue policy", queue.physical, detail, (queue.url, text)))
    return changes


# -- the plan ---------------------------------------------------------------------------------------------------
def build_rules_plan(
    owner: Owner, desired: Mapping[str, RuleSpec], current: Mapping[str, CurrentRule], queues: Iterable[QueueInfo], *, prune: bool
) -> list[Change]:
    """Policies first (a new rule must be allowed to send before it fires), then rules, then deletions."""
    owned = {name for name, rule in current.items() if owner.task_of(rule.description) is not None}
    desired = {name: replace(spec, state=current[name].state) if name in current else spec for name, spec in desired.items()}
    rule_changes = diff_resources(
        "rule",
        {name: (spec.fingerprint(), spec) for name, spec in desired.items()},
        {name: rule.fingerprint() for name, rule in current.items()},
        owned,
        prune=prune,
        current_payload=lambda name: current[name],
    )
    final = {name: spec.queue_arn for name, spec in desired.items()}
    if not prune:
        final |= {n: str((current[n].target or {}).get("Arn")) for n in owned - desired.keys() if current[n].target}
    return plan_policies(queues, final, owned | desired.keys()) + rule_changes


# -- I/O: read, plan, apply ------------------------------------------------------------------------------------
def read_rules(events: Any, owner: Owner, names: Iterable[str] = ()) -> dict[str, CurrentRule]:
    """cloudq-named rules that this owner marked or that a wanted rule would collide with, with their targets."""
    wanted = set(names)
    rules: dict[str, CurrentRule] = {}
    token: str | None = None
    while True:
        page = call(events, "list_rules", _RULE_PREFIX, NamePrefix=_RULE_PREFIX, **({"NextToken": token} if token else {}))
        for rule in page.get("Rules", []):
            if rule["Name"] in wanted or owner.task_of(rule.get("Description")) is not None:
                rules[rule["Name"]] = _current_rule(events, rule)
        token = page.get("NextToken")
        if not token:
            return rules


def _current_rule(events: Any, rule: Mapping[str, Any]) -> CurrentRule:
    targets = call(events, "list_targets_by_rule", rule["Name"], Rule=rule["Name"]).get("Targets", [])
    ours = next((t for t in targets if t.get("Id") == TARGET_ID), None)
    ids = tuple(t["Id"] for t in targets)
    return CurrentRule(rule["Name"], rule.get("ScheduleExpression"), rule.get("Description"), rule.get("State", "ENABLED"), ours, ids)


def plan_rules(app: App, events: Any, sqs: Any, target_queues: Mapping[str, QueueInfo], *, prune: bool) -> list[Change]:
    """Read EventBridge and the queues' policies, and diff them against the registry (changes nothing)."""
    owner = Owner(app.name, app.settings.queue_prefix)
    desired = desired_rules(app, target_queues)
    current = read_rules(events, owner, desired)
    queues = {q.arn: q for q in target_queues.values()}
    for rule in current.values():  # queues that rules leaving the registry point at, if they still exist
        arn = str((rule.target or {}).get("Arn", ""))
        if arn.startswith("arn:") and arn not in queues and owner.task_of(rule.description) is not None:
            info = read_queue(sqs, arn.rsplit(":", 1)[-1])
            if info is not None:
                queues[arn] = info
    return build_rules_plan(owner, desired, current, queues.values(), prune=prune)


def apply_rules_plan(events: Any, sqs: Any, changes: Iterable[Change], tags: list[dict[str, str]]) -> None:
    """Apply a plan in its order; a rule is put before its target, and its targets removed before it is deleted."""
    for change in changes:
        if change.kind == "queue policy" and change.action == "update":
            url, text = change.payload
            call(sqs, "set_queue_attributes", change.name, QueueUrl=url, Attributes={"Policy": text})
        elif change.kind == "rule" and change.action in ("create", "update"):
            _put_rule(events, change.payload, tags if change.action == "create" else None)
        elif change.kind == "rule" and change.action == "delete":
            rule: CurrentRule = change.payload
            if rule.target_ids:
                call(events, "remove_targets", rule.name, Rule=rule.name, Ids=list(rule.target_ids))
            call(events, "delete_rule", rule.name, Name=rule.name)


def _put_rule(events: Any, spec: RuleSpec, tags: list[dict[str, str]] | None) -> None:
    params: dict[str, Any] = {"Name": spec.name, "ScheduleExpression": spec.expression, "Description": spec.description}
    call(events, "put_rule", spec.name, **params, State=spec.state, **({"Tags": tags} if tags else {}))
    call(events, "put_targets", spec.name, Rule=spec.name, Targets=[spec.target])

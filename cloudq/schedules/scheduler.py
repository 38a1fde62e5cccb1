"""EventBridge Scheduler for periodic tasks: ``cloudq schedules sync APP --engine scheduler``.

AWS recommends Scheduler for new schedules, and only Scheduler honours ``timezone=`` for cron (with its DST
rules, which :mod:`cloudq.schedules.expressions` reproduces locally) and one-off ``at(...)`` schedules. Each
app deployment gets a schedule group of its own, ``cloudq-<queue prefix><app>``, so its schedules are easy to
find, and one schedule per periodic task in it, named like the rules of the rules engine.

Scheduler sends to SQS as an IAM role rather than through the queue's policy, so the role is a setting
(``CLOUDQ_SCHEDULER_ROLE_ARN``): a role that ``scheduler.amazonaws.com`` may assume, with ``sqs:SendMessage``
on the queues. cloudq does not create IAM roles; infrastructure code owns those.

Same shape as :mod:`cloudq.schedules.eventbridge`: read, a pure plan, apply, with injected boto3 clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudq.aws.errors import call
from cloudq.errors import ConfigurationError, ResourceNotFound
from cloudq.schedules.eventbridge import normalize_target, sqs_target
from cloudq.schedules.plan import Change, Owner, QueueInfo, diff_resources, resource_name

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.schedules.periodic import PeriodicSpec
    from cloudq.signing import Signer

__all__ = [
    "CurrentSchedule", "apply_schedules_plan", "build_schedules_plan", "desired_schedules", "group_name",
    "plan_schedules", "read_schedules",
]  # fmt: skip


def group_name(app: App) -> str:
    """The schedule group of one app deployment (app name and queue prefix)."""
    return resource_name(app.settings.queue_prefix, app.name)


def role_arn(app: App) -> str:
    """The role Scheduler sends as; required by AWS for every target, so missing it is a clear error up front."""
    arn = app.settings.scheduler_role_arn
    if not arn:
        raise ConfigurationError(
            "--engine scheduler needs CLOUDQ_SCHEDULER_ROLE_ARN: an IAM role that scheduler.amazonaws.com can assume, "
            "allowed sqs:SendMessage on the task queues"
        )
    return str(arn)


@dataclass(frozen=True)
class CurrentSchedule:
    """A schedule as Scheduler has it (GetSchedule's fields)."""

    name: str
    fields: Mapping[str, Any]

    @property
    def description(self) -> str | None:
        return self.fields.get("Description")

    @property
    def state(self) -> str:
        return str(self.fields.get("State", "ENABLED"))

    def fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.fields)


def fingerprint(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What a sync manages: an absent time zone is UTC, and Input is compared as JSON."""
    return {
        "ScheduleExpression": fields.get("ScheduleExpression"),
        "ScheduleExpressionTimezone": fields.get("ScheduleExpressionTimezone") or "UTC",
        "Description": fields.get("Description"),
        "FlexibleTimeWindow": (fields.get("FlexibleTimeWindow") or {}).get("Mode", "OFF"),
        "Target": normalize_target(fields.get("Target") or {}),
    }


def schedule_request(
    spec: PeriodicSpec, group: str, name: str, description: str, queue_arn: str, role: str, signer: Signer | None = None
) -> dict[str, Any]:
    """CreateSchedule/UpdateSchedule parameters (UpdateSchedule replaces every field, so both take all)."""
    target = sqs_target(spec, queue_arn, name, target_id=None, signer=signer) | {"RoleArn": role}
    return {
        "Name": name,
        "GroupName": group,
        "ScheduleExpression": spec.schedule.expression,
        "ScheduleExpressionTimezone": spec.tz,
        "Description": description,
        "State": "ENABLED",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": target,
    }


def desired_schedules(app: App, queues: Mapping[str, QueueInfo]) -> dict[str, dict[str, Any]]:
    """Schedule name -> request, one per periodic task."""
    owner, group, role = Owner(app.name, app.settings.queue_prefix), group_name(app), role_arn(app)
    wanted: dict[str, dict[str, Any]] = {}
    for spec in app.periodic_tasks.values():
        name = resource_name(app.settings.queue_prefix, spec.name)
        wanted[name] = schedule_request(spec, group, name, owner.marker(spec.name), queues[spec.queue].arn, role, app.wire.signer)
    return wanted


def build_schedules_plan(
    owner: Owner, group: str, desired: Mapping[str, dict[str, Any]], current: Mapping[str, CurrentSchedule] | None, *, prune: bool
) -> list[Change]:
    """``current`` is None when the group does not exist yet: then the plan creates it first (if it has a use)."""
    existing = current or {}
    owned = {name for name, s in existing.items() if owner.task_of(s.description) is not None}
    # UpdateSchedule without the current State would re-enable a schedule an operator disabled.
    requests = {n: r | {"State": existing[n].state} if n in existing else r for n, r in desired.items()}
    changes = diff_resources(
        "schedule",
        {name: (fingerprint(request), request) for name, request in requests.items()},
        {name: s.fingerprint() for name, s in existing.items()},
        owned,
        prune=prune,
        current_payload=lambda name: {"Name": name, "GroupName": group},
    )
    if current is None and desired:
        changes.insert(0, Change("create", "schedule group", group, "", {"Name": group}))
    return changes


# -- I/O ---------------------------------------------------------------------------------------------------------
def read_schedules(scheduler: Any, group: str) -> dict[str, CurrentSchedule] | None:
    """Every schedule in the group, with its full definition; None if the group does not exist."""
    try:
        call(scheduler, "get_schedule_group", group, Name=group)
    except ResourceNotFound:
        return None
    schedules: dict[str, CurrentSchedule] = {}
    token: str | None = None
    while True:
        page = call(scheduler, "list_schedules", group, GroupName=group, **({"NextToken": token} if token else {}))
        for item in page.get("Schedules", []):
            fields = call(scheduler, "get_schedule", item["Name"], Name=item["Name"], GroupName=group)
            schedules[item["Name"]] = CurrentSchedule(item["Name"], fields)
        token = page.get("NextToken")
        if not token:
            return schedules


def plan_schedules(app: App, scheduler: Any, target_queues: Mapping[str, QueueInfo], *, prune: bool) -> list[Change]:
    """Read the app's schedule group and diff it against the registry (changes nothing)."""
    group = group_name(app)
    desired = desired_schedules(app, target_queues)
    current = read_schedules(scheduler, group)
    return build_schedules_plan(Owner(app.name, app.settings.queue_prefix), group, desired, current, prune=prune)


def apply_schedules_plan(scheduler: Any, changes: Iterable[Change], tags: list[dict[str, str]]) -> None:
    """Apply a plan in order: the group, then each schedule."""
    operations = {"create": "create_schedule", "update": "update_schedule", "delete": "delete_schedule"}
    for change in changes:
        if change.kind == "schedule group" and change.action == "create":
            call(scheduler, "create_schedule_group", change.name, **change.payload, Tags=tags)
        elif change.kind == "schedule" and change.action in operations:
            call(scheduler, operations[change.action], change.name, **change.payload)

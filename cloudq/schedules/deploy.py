"""Sync and list an app's periodic tasks on AWS, with either engine: what ``cloudq schedules`` calls.

Kept apart from the CLI so that tests and deployment scripts can run a sync with their own boto3 clients
(:class:`AwsClients`, by default from :mod:`cloudq.aws.clients` like every client cloudq builds), and apart
from the engines so that each engine module stays a read/plan/apply triple.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from cloudq.schedules import eventbridge, scheduler
from cloudq.schedules.plan import Change, Owner, owner_tags, read_target_queues, resource_name

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.schedules.periodic import PeriodicSpec

__all__ = ["AwsClients", "Engine", "ScheduleStatus", "schedule_statuses", "sync"]

Engine = Literal["rules", "scheduler"]


@dataclass(frozen=True)
class AwsClients:
    """The boto3 clients a sync uses, injected so tests and scripts choose endpoint and credentials."""

    sqs: Any
    events: Any
    scheduler: Any

    @classmethod
    def from_settings(cls, settings: Any) -> AwsClients:
        """The app's clients from the shared factory: its region, its endpoint (LocalStack serves every service)."""
        from cloudq.aws.clients import client

        return cls(sqs=client("sqs", settings), events=client("events", settings), scheduler=client("scheduler", settings))

    def close(self) -> None:
        for client in (self.sqs, self.events, self.scheduler):
            client.close()


def plan(app: App, clients: AwsClients, *, engine: Engine = "rules", prune: bool = False) -> list[Change]:
    """What a sync would change; reads AWS, writes nothing."""
    queues = read_target_queues(clients.sqs, app.settings, [s.queue for s in app.periodic_tasks.values()])
    if engine == "scheduler":
        return scheduler.plan_schedules(app, clients.scheduler, queues, prune=prune)
    return eventbridge.plan_rules(app, clients.events, clients.sqs, queues, prune=prune)


def sync(app: App, clients: AwsClients, *, engine: Engine = "rules", prune: bool = False, dry_run: bool = False) -> list[Change]:
    """Make the engine match the registry; returns the plan it applied (or would apply, with ``dry_run``)."""
    changes = plan(app, clients, engine=engine, prune=prune)
    if dry_run or not any(c.is_change for c in changes):
        return changes
    tags = owner_tags(Owner(app.name, app.settings.queue_prefix))
    if engine == "scheduler":
        scheduler.apply_schedules_plan(clients.scheduler, changes, tags)
    else:
        eventbridge.apply_rules_plan(clients.events, clients.sqs, changes, tags)
    return changes


@dataclass(frozen=True)
class ScheduleStatus:
    """One line of ``cloudq schedules list``."""

    task: str
    expression: str
    timezone: str
    resource: str
    state: str  # ENABLED, DISABLED, "not deployed", or "orphaned" for one the registry no longer has
    deployed_expression: str | None
    next_fires: tuple[datetime, ...]

    def render(self) -> str:
        stale = self.deployed_expression not in (None, self.expression)
        drift = f" (deployed: {self.deployed_expression}; run sync)" if stale else ""
        zone = _tzinfo(self.timezone) if self.next_fires else timezone.utc
        fires = ", ".join(f.astimezone(zone).isoformat(timespec="minutes") for f in self.next_fires) or "-"
        return f"{self.task}  {self.expression} {self.timezone}  {self.resource} {self.state}{drift}  next: {fires}"


def schedule_statuses(
    app: App, clients: AwsClients, *, engine: Engine = "rules", now: datetime | None = None, count: int = 3
) -> list[ScheduleStatus]:
    """Each periodic task with its deployed state and next fire times (in its time zone), then orphans."""
    now = now or datetime.now(timezone.utc)
    owner = Owner(app.name, app.settings.queue_prefix)
    deployed = _deployed(app, clients, engine, owner)
    statuses = []
    for spec in sorted(app.periodic_tasks.values(), key=lambda s: s.name):
        name = resource_name(app.settings.queue_prefix, spec.name)
        state, expression, _ = deployed.pop(name, ("not deployed", None, None))
        statuses.append(_status(spec, name, state, expression, now, count))
    for name, (_, expression, task) in sorted(deployed.items()):
        statuses.append(ScheduleStatus(task or "?", expression or "?", "-", name, "orphaned (not in the registry)", None, ()))
    return statuses


def _status(spec: PeriodicSpec, name: str, state: str, deployed: str | None, now: datetime, count: int) -> ScheduleStatus:
    fires = tuple(spec.schedule.next_fire_times(now, count, spec.tz))
    return ScheduleStatus(spec.name, spec.schedule.expression, spec.tz, name, state, deployed, fires)


def _deployed(app: App, clients: AwsClients, engine: Engine, owner: Owner) -> dict[str, tuple[str, str | None, str | None]]:
    """Resource name -> (state, expression, task) of this owner's rules or schedules, and of any holding a wanted name."""
    names = {resource_name(app.settings.queue_prefix, name) for name in app.periodic_tasks}
    if engine == "scheduler":
        current = scheduler.read_schedules(clients.scheduler, scheduler.group_name(app)) or {}
        found = {n: (s.state, s.fields.get("ScheduleExpression"), s.description) for n, s in current.items()}
    else:
        rules = eventbridge.read_rules(clients.events, owner, names)
        found = {n: (r.state, r.expression, r.description) for n, r in rules.items()}
    mine = {n: owner.task_of(d) for n, (_, _, d) in found.items()}
    return {
        n: (state if mine[n] else "NOT OURS (made by someone else; sync refuses to overwrite it)", expr, mine[n])
        for n, (state, expr, _) in found.items()
        if n in names or mine[n]
    }


def _tzinfo(name: str) -> Any:
    return timezone.utc if name.upper() == "UTC" else ZoneInfo(name)

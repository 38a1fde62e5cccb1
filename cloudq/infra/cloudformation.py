"""CloudFormation for an app, rendered from its registry: what ``cloudq infra render`` prints.

Pure: an :class:`~cloudq.App` in, a template ``dict`` out, no AWS call. The output is deterministic (keys
sorted when dumped, logical ids derived from queue and task names, no timestamps), so a rendered file can be
committed and checked for staleness.

What the template holds, and the rules behind it:

* Per logical queue (:func:`cloudq.queues.plan_queues`, shared with ``cloudq queues ensure``): the queue and
  its dead-letter queue, SSE-SQS encryption, 14 days' retention (the DLQ always SQS's maximum, 14 days), a
  RedrivePolicy with the plan's maxReceiveCount, and ``VisibilityTimeout = max(CLOUDQ_VISIBILITY_TIMEOUT_S,
  ceil(slowest task timeout x 1.2))``, at most 43200 (:func:`cloudq.queues.queue_visibility_timeout_s`).
  ``.fifo`` queues get FIFO dead-letter queues. Queues and DLQs are retained (``DeletionPolicy`` and
  ``UpdateReplacePolicy``: Retain): deleting the stack, or an update that would replace a queue, never
  deletes jobs.
* Queue names are baked in from the settings (``CLOUDQ_QUEUE_PREFIX``), because the app finds its queues by
  those names: render once per environment, with that environment's prefix.
* Per queue, two alarms: its DLQ holds any message, and its oldest message is older than the
  ``BacklogAgeAlarmThresholdSeconds`` parameter. Both notify ``AlarmTopicArn`` when it is set. With
  ``CLOUDQ_METRICS=emf``, two more on the metrics the app's EMF lines report (namespace
  ``CLOUDQ_METRICS_NAMESPACE``, dimensions app and queue): more jobs dead-lettered in 5 minutes than
  ``DeadLetterRateAlarmThreshold`` (0), more failed runs than ``FailureAlarmThreshold`` (10).
* Per periodic task (``app.periodic_tasks``): an EventBridge rule on the default bus whose target is the task's
  queue with the job's envelope as constant Input, named as ``cloudq schedules sync`` would name it, plus one
  queue policy per targeted queue letting only those rules (``aws:SourceArn``) send. The rules carry no
  ``schedules sync`` ownership marker, so a sync refuses to touch them: deploy schedules with one or the other.
  A FIFO queue that a rule targets gets content-based deduplication, which EventBridge requires (cloudq's own
  producers always send an explicit deduplication id, so nothing else changes).
* Two IAM managed policies, for the roles you attach them to. Producer: ``sqs:SendMessage`` and
  ``sqs:GetQueueUrl`` on the queues. Worker: receive, delete, change visibility, GetQueueUrl and
  GetQueueAttributes on the queues; ``sqs:SendMessage`` on the DLQs (dead-lettering with the reason) and on
  the queues too, because a job whose ETA is beyond SQS's 15-minute delay is re-sent to its own queue.
* With ``CLOUDQ_JOB_STORE=dynamodb``: the job state table and its grants in both policies
  (:mod:`cloudq.infra.job_table`).
* With ``CLOUDQ_PAYLOAD_BUCKET`` set, the bucket of large payloads and its statements in both policies
  (:mod:`cloudq.infra.payload_bucket`); the worker policy is also the Lambda function's.
* Optionally, the ECS worker service with autoscaling (:mod:`cloudq.infra.ecs`), behind a Condition.

``--format serverless`` renders the same queues, alarms, rules and policies as the ``resources:`` section of a
serverless.yml, with parameters replaced by their defaults and without the ECS section.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cloudq.brokers.base import QueueConfig, is_fifo
from cloudq.errors import ConfigurationError
from cloudq.infra import payload_bucket
from cloudq.infra.ecs import ecs_section
from cloudq.infra.job_table import JobTableSection, job_table_section
from cloudq.queues import QueuePlan, plan_queues
from cloudq.schedules.eventbridge import FIFO_GROUP, TARGET_ID, check_rules_engine
from cloudq.schedules.plan import Owner, owner_tags, resource_name

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.schedules.periodic import PeriodicSpec

__all__ = [
    "DEFAULT_BACKLOG_AGE_S", "SQS_MAX_RETENTION_S", "Format", "logical_ids", "render", "render_serverless", "render_template", "retained", "to_json",
]  # fmt: skip

Format = Literal["cloudformation", "serverless"]
DEFAULT_BACKLOG_AGE_S = 300
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")
_ALARM_TOPIC = "AlarmTopicArn"
_AGE_THRESHOLD = "BacklogAgeAlarmThresholdSeconds"
_HAS_ALARM_TOPIC = "HasAlarmTopic"
_DLQ_RATE = "DeadLetterRateAlarmThreshold"  # parameters of the EMF alarms (CLOUDQ_METRICS=emf)
_FAILURES = "FailureAlarmThreshold"
SQS_MAX_RETENTION_S = 1_209_600  # 14 days, SQS's MessageRetentionPeriod maximum


def ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def get_att(resource: str, attribute: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource, attribute]}


def logical_ids(names: Iterable[str]) -> dict[str, str]:
    """CamelCase alphanumeric ids (``billing-eu.fifo`` -> ``BillingEuFifo``), stable across runs.

    Names that would collide (``a-b`` and ``a_b``) each get a short hash of the original name.
    """
    names = sorted(set(names))
    base = {name: _camel(name) for name in names}
    clashing = {b for b in base.values() if list(base.values()).count(b) > 1}
    return {n: b + hashlib.sha256(n.encode()).hexdigest()[:8] if b in clashing else b for n, b in base.items()}


def _camel(name: str) -> str:
    camel = "".join(part[:1].upper() + part[1:] for part in _NOT_ALNUM.split(name) if part)
    return camel if camel[:1].isalpha() else f"Q{camel}"


@dataclass(frozen=True)
class _Knobs:
    """What differs between the formats: parameter references (CloudFormation) or plain values (serverless)."""

    age_threshold: Any
    alarm_actions: Any | None
    dead_letter_threshold: Any = 0
    failure_threshold: Any = 10


class _Resources(dict[str, dict[str, Any]]):
    """Resources by logical id, refusing a duplicate id (two names that camel-case alike into another's id)."""

    def add(self, logical_id: str, resource: dict[str, Any]) -> None:
        if logical_id in self:
            raise ConfigurationError(f"two resources would share the logical id {logical_id!r}; rename a queue or task")
        self[logical_id] = resource


# -- queues ----------------------------------------------------------------------------------------------------
def queue_properties(
    physical: str, config: QueueConfig, *, dlq_arn: Any = None, tags: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """AWS::SQS::Queue properties: the attributes ``cloudq queues ensure`` sets, in CloudFormation's types."""
    props: dict[str, Any] = {
        "QueueName": physical,
        "VisibilityTimeout": config.visibility_timeout_s,
        "MessageRetentionPeriod": config.retention_s,
        "SqsManagedSseEnabled": True,
    }
    if tags:
        props["Tags"] = tags
    if is_fifo(physical):
        props["FifoQueue"] = True
        props["ContentBasedDeduplication"] = True  # EventBridge targets need it; cloudq's explicit dedup ids win
    if dlq_arn is not None:
        props["RedrivePolicy"] = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": config.max_receive_count}
    return props


def retained(resource: dict[str, Any]) -> dict[str, Any]:
    """A stateful resource that outlives its stack: deleting the stack, or a replacing update, keeps it (and its jobs)."""
    return {**resource, "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}


def _queue_resources(resources: _Resources, plan: QueuePlan, qid: str, tags: list[dict[str, str]]) -> None:
    """The queue (with its RedrivePolicy) and its DLQ, both retained. The DLQ keeps the source's visibility and
    SQS's longest retention: a dead letter's age counts from its first enqueue, not from when it was moved."""
    dlq_id = f"{qid}DeadLetterQueue"
    dlq = queue_properties(plan.dead_letter_queue, QueueConfig(plan.config.visibility_timeout_s, retention_s=SQS_MAX_RETENTION_S), tags=tags)
    queue = queue_properties(plan.physical, plan.config, dlq_arn=get_att(dlq_id, "Arn"), tags=tags)
    resources.add(f"{qid}Queue", retained({"Type": "AWS::SQS::Queue", "Properties": queue}))
    resources.add(dlq_id, retained({"Type": "AWS::SQS::Queue", "Properties": dlq}))


def _cloudwatch_alarm(
    name: str, description: str, metric: tuple[str, str, list[dict[str, Any]]], statistic: str, period_s: int, periods: int,
    threshold: Any, knobs: _Knobs,
) -> dict[str, Any]:
    """One CloudWatch alarm above ``threshold``; ``metric`` is (namespace, name, dimensions). Both kinds use it:
    the SQS metrics' alarms and, with CLOUDQ_METRICS=emf, the alarms on cloudq's own metrics."""
    namespace, metric_name, dimensions = metric
    props: dict[str, Any] = {
        "AlarmName": name,
        "AlarmDescription": description,
        "Namespace": namespace,
        "MetricName": metric_name,
        "Dimensions": dimensions,
        "Statistic": statistic,
        "Period": period_s,
        "EvaluationPeriods": periods,
        "Threshold": threshold,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
    }
    if knobs.alarm_actions is not None:
        props["AlarmActions"] = knobs.alarm_actions
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": props}


def _alarm(name: str, description: str, queue_id: str, metric: str, threshold: Any, periods: int, knobs: _Knobs) -> dict[str, Any]:
    """An alarm on one of SQS's own queue metrics, its maximum per minute."""
    dimensions = [{"Name": "QueueName", "Value": get_att(queue_id, "QueueName")}]
    return _cloudwatch_alarm(name, description, ("AWS/SQS", metric, dimensions), "Maximum", 60, periods, threshold, knobs)


def _alarms(resources: _Resources, plan: QueuePlan, qid: str, knobs: _Knobs) -> None:
    dlq = plan.dead_letter_queue
    resources.add(
        f"{qid}DeadLetterAlarm",
        _alarm(f"{dlq}-not-empty", f"cloudq: dead letters in {dlq} (inspect with `cloudq dlq peek`)",
               f"{qid}DeadLetterQueue", "ApproximateNumberOfMessagesVisible", 0, 1, knobs),
    )  # fmt: skip
    resources.add(
        f"{qid}BacklogAgeAlarm",
        _alarm(f"{plan.physical}-backlog-age", f"cloudq: the oldest job in {plan.physical} has waited too long (workers down or too few)",
               f"{qid}Queue", "ApproximateAgeOfOldestMessage", knobs.age_threshold, 3, knobs),
    )  # fmt: skip


def _emf_alarm(name: str, description: str, app: App, queue: str, metric: str, threshold: Any, knobs: _Knobs) -> dict[str, Any]:
    """An alarm on a metric the app's EMF lines report (CLOUDQ_METRICS=emf), summed over 5 minutes per queue."""
    dimensions = [{"Name": "app", "Value": app.name}, {"Name": "queue", "Value": queue}]
    return _cloudwatch_alarm(name, description, (app.settings.metrics_namespace, metric, dimensions), "Sum", 300, 1, threshold, knobs)


def _emf_alarms(resources: _Resources, app: App, plan: QueuePlan, qid: str, knobs: _Knobs) -> None:
    """With CLOUDQ_METRICS=emf: the dead-letter rate and the failures of the queue's jobs (all tasks)."""
    resources.add(
        f"{qid}DeadLetterRateAlarm",
        _emf_alarm(f"{plan.physical}-dead-letter-rate", f"cloudq: jobs of {plan.physical} are being dead-lettered (`cloudq dlq peek`)",
                   app, plan.queue, "jobs_dead_lettered", knobs.dead_letter_threshold, knobs),
    )  # fmt: skip
    resources.add(
        f"{qid}FailureAlarm",
        _emf_alarm(f"{plan.physical}-failures", f"cloudq: jobs of {plan.physical} are failing (each failed run counts, retries too)",
                   app, plan.queue, "jobs_failed", knobs.failure_threshold, knobs),
    )  # fmt: skip


# -- IAM ---------------------------------------------------------------------------------------------------------
def _statement(sid: str, actions: list[str], resources: list[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}


def _managed_policy(description: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    document = {"Version": "2012-10-17", "Statement": statements}
    return {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"Description": description, "PolicyDocument": document}}


def _iam_policies(resources: _Resources, app: App, qids: list[str], jobs: JobTableSection) -> None:
    queues = [get_att(f"{q}Queue", "Arn") for q in qids]
    dlqs = [get_att(f"{q}DeadLetterQueue", "Arn") for q in qids]
    bucket, prefix = app.settings.payload_bucket, app.settings.payload_prefix
    producer = [_statement("EnqueueJobs", ["sqs:GetQueueUrl", "sqs:SendMessage"], queues)]
    consume = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]
    worker = [
        _statement("ConsumeJobs", [*consume, "sqs:SendMessage"], queues),
        _statement("DeadLetterJobs", ["sqs:GetQueueUrl", "sqs:SendMessage"], dlqs),
    ]
    if jobs.resources:
        producer.append(_statement("JobState", jobs.producer_actions, [jobs.table_arn]))
        worker.append(_statement("JobState", jobs.worker_actions, [jobs.table_arn]))
    if bucket:
        producer += payload_bucket.producer_statements(bucket, prefix)
        worker += payload_bucket.worker_statements(bucket, prefix)
    resources.add("ProducerPolicy", _managed_policy(f"cloudq producer of app {app.name}: enqueue jobs on its queues", producer))
    resources.add("WorkerPolicy", _managed_policy(
        f"cloudq worker of app {app.name}: consume its queues, re-send far ETAs, dead-letter with the reason", worker
    ))  # fmt: skip


# -- periodic tasks -------------------------------------------------------------------------------------------
def _periodic_specs(app: App) -> list[PeriodicSpec]:
    specs = sorted(getattr(app, "periodic_tasks", {}).values(), key=lambda spec: spec.name)
    for spec in specs:
        try:
            check_rules_engine(spec)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc} (`cloudq infra render` deploys EventBridge rules only)") from exc
    return specs


def _rule(app: App, spec: PeriodicSpec, qid: str) -> dict[str, Any]:
    name = resource_name(app.settings.queue_prefix, spec.name)
    target: dict[str, Any] = {"Id": TARGET_ID, "Arn": get_att(f"{qid}Queue", "Arn"), "Input": spec.envelope_body(name, app.wire.signer)}
    if is_fifo(spec.queue):
        target["SqsParameters"] = {"MessageGroupId": FIFO_GROUP}
    props = {
        "Name": name,
        "Description": f"cloudq periodic task {spec.name} of app {app.name} (managed by CloudFormation)"[:512],
        "ScheduleExpression": spec.schedule.expression,
        "State": "ENABLED",
        "Targets": [target],
    }
    return {"Type": "AWS::Events::Rule", "Properties": props}


def _queue_policy(qid: str, rule_ids: list[str]) -> dict[str, Any]:
    """Lets EventBridge send to the queue for these rules only (one policy per queue: SQS keeps just one)."""
    statements = [
        {
            "Sid": rule_id,
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": get_att(f"{qid}Queue", "Arn"),
            "Condition": {"ArnEquals": {"aws:SourceArn": get_att(rule_id, "Arn")}},
        }
        for rule_id in rule_ids
    ]
    props = {"Queues": [ref(f"{qid}Queue")], "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}
    return {"Type": "AWS::SQS::QueuePolicy", "Properties": props}


def _schedules(resources: _Resources, app: App, specs: list[PeriodicSpec], qids: dict[str, str]) -> None:
    rule_ids = logical_ids(spec.name for spec in specs)
    by_queue: dict[str, list[str]] = {}
    for spec in specs:
        rule_id = f"{rule_ids[spec.name]}ScheduleRule"
        resources.add(rule_id, _rule(app, spec, qids[spec.queue]))
        by_queue.setdefault(spec.queue, []).append(rule_id)
    for queue, ids in sorted(by_queue.items()):
        resources.add(f"{qids[queue]}QueuePolicy", _queue_policy(qids[queue], ids))


# -- outputs and assembly -------------------------------------------------------------------------------------
def _outputs(plans: list[QueuePlan], qids: dict[str, str]) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for plan in plans:
        qid = qids[plan.queue]
        for physical, resource in ((plan.physical, f"{qid}Queue"), (plan.dead_letter_queue, f"{qid}DeadLetterQueue")):
            about = f"{physical} (logical queue {plan.queue})"
            outputs[f"{resource}Url"] = {"Description": f"URL of {about}", "Value": ref(resource)}
            outputs[f"{resource}Arn"] = {"Description": f"ARN of {about}", "Value": get_att(resource, "Arn")}
    for policy, role in (("ProducerPolicy", "producer"), ("WorkerPolicy", "worker")):
        outputs[f"{policy}Arn"] = {"Description": f"managed policy to attach to the {role} role", "Value": ref(policy)}
    return outputs


def _core(app: App, knobs: _Knobs) -> tuple[_Resources, dict[str, Any], list[QueuePlan], dict[str, str]]:
    """Queues, alarms, IAM policies, schedules and outputs: what both formats contain."""
    plans = plan_queues(app)
    qids = logical_ids(plan.queue for plan in plans)
    specs = _periodic_specs(app)
    tags = owner_tags(Owner(app.name, app.settings.queue_prefix))
    resources = _Resources()
    for plan in plans:
        _queue_resources(resources, plan, qids[plan.queue], tags)
        _alarms(resources, plan, qids[plan.queue], knobs)
        if getattr(app.settings, "metrics", "none") == "emf":
            _emf_alarms(resources, app, plan, qids[plan.queue], knobs)
    jobs = job_table_section(app)
    for logical_id, resource in jobs.resources.items():
        resources.add(logical_id, resource)
    _iam_policies(resources, app, [qids[plan.queue] for plan in plans], jobs)
    _schedules(resources, app, specs, qids)
    if app.settings.payload_bucket:
        retentions = [SQS_MAX_RETENTION_S, *(plan.config.retention_s for plan in plans)]  # the DLQs keep 14 days
        for logical_id, resource in payload_bucket.bucket_resources(app.settings.payload_bucket, app.settings.payload_prefix, retentions, tags).items():
            resources.add(logical_id, resource)
    return resources, {**_outputs(plans, qids), **jobs.outputs}, plans, qids


def _parameters(backlog_age_threshold_s: int, emf: bool) -> dict[str, Any]:
    parameters = {
        _AGE_THRESHOLD: {
            "Type": "Number", "Default": backlog_age_threshold_s, "MinValue": 60,
            "Description": "alarm when a queue's oldest job is older than this many seconds",
        },
        _ALARM_TOPIC: {"Type": "String", "Default": "", "Description": "SNS topic ARN the alarms notify (empty: no notification)"},
    }  # fmt: skip
    if emf:
        parameters[_DLQ_RATE] = {"Type": "Number", "Default": 0, "MinValue": 0, "Description": "alarm when more jobs of a queue than this are dead-lettered in 5 minutes"}
        parameters[_FAILURES] = {"Type": "Number", "Default": 10, "MinValue": 0, "Description": "alarm when more runs of a queue's jobs than this fail in 5 minutes"}
    return parameters


def render_template(app: App, app_spec: str, *, backlog_age_threshold_s: int = DEFAULT_BACKLOG_AGE_S) -> dict[str, Any]:
    """The CloudFormation template of ``app``; ``app_spec`` (``module:attribute``) is the ECS worker's CLOUDQ_APP."""
    alarm_actions = {"Fn::If": [_HAS_ALARM_TOPIC, [ref(_ALARM_TOPIC)], ref("AWS::NoValue")]}
    resources, outputs, plans, qids = _core(app, _Knobs(ref(_AGE_THRESHOLD), alarm_actions, ref(_DLQ_RATE), ref(_FAILURES)))
    ecs = ecs_section(app, app_spec, [f"{qids[plan.queue]}Queue" for plan in plans])
    for logical_id, resource in sorted(ecs.resources.items()):
        resources.add(logical_id, resource)
    settings = app.settings
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"cloudq app {app.name}: queues, dead-letter queues, alarms, schedules, IAM policies and an optional ECS worker. "
        "Generated by `cloudq infra render`; do not edit by hand.",
        "Metadata": {"cloudq": {"App": app.name, "AppSpec": app_spec, "QueuePrefix": settings.queue_prefix, "DefaultQueue": settings.default_queue}},
        "Parameters": {**_parameters(backlog_age_threshold_s, getattr(settings, "metrics", "none") == "emf"), **ecs.parameters},
        "Conditions": {_HAS_ALARM_TOPIC: {"Fn::Not": [{"Fn::Equals": [ref(_ALARM_TOPIC), ""]}]}, **ecs.conditions},
        "Rules": ecs.rules,
        "Resources": dict(resources),
        "Outputs": {**outputs, **ecs.outputs},
    }


def render_serverless(app: App, *, backlog_age_threshold_s: int = DEFAULT_BACKLOG_AGE_S) -> dict[str, Any]:
    """The ``resources:`` section of a serverless.yml: no parameters, no alarm actions, no ECS service."""
    resources, outputs, _, _ = _core(app, _Knobs(backlog_age_threshold_s, None))
    return {"resources": {"Resources": dict(resources), "Outputs": outputs}}


def to_json(document: dict[str, Any]) -> str:
    """The committed form: two-space indent, sorted keys, a final newline (JSON is also valid YAML)."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def render(app: App, app_spec: str, fmt: Format = "cloudformation", *, backlog_age_threshold_s: int = DEFAULT_BACKLOG_AGE_S) -> str:
    """The text ``cloudq infra render`` writes."""
    if fmt == "serverless":
        return to_json(render_serverless(app, backlog_age_threshold_s=backlog_age_threshold_s))
    return to_json(render_template(app, app_spec, backlog_age_threshold_s=backlog_age_threshold_s))

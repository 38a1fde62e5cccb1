"""The optional ECS part of ``cloudq infra render``: a Fargate worker service that scales on backlog per task.

Everything here is behind the ``EnableEcsWorker`` condition, true when both ``EcsClusterName`` and
``WorkerImage`` are set (the image built from this repository's Dockerfile, or one ``FROM`` it). Left empty,
the stack holds only the queues, alarms, schedules and IAM policies.

The service runs ``cloudq worker`` (every queue of the registry) with the app's settings in its environment, a
task role carrying the stack's worker policy, the ``cloudq health`` heartbeat check, and a stop timeout a little
longer than ``CLOUDQ_SHUTDOWN_GRACE_S`` so that SIGTERM drains running jobs.

Autoscaling is target tracking on *backlog per task*, AWS's recommended SQS metric: metric math over the
visible messages of all the app's queues (``FILL``-ed with 0, as an idle queue stops publishing) divided by
the service's ``RunningTaskCount``. That count comes from CloudWatch Container Insights, which must be enabled
on the cluster; without it the metric has no data and the service stays at ``WorkerMinTasks``. Choose
``BacklogPerTaskTarget`` as the backlog one task clears within your latency goal (jobs per second per task x
acceptable seconds of wait).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudq.app import App

__all__ = ["ENABLE_ECS", "EcsSection", "ecs_section"]

ENABLE_ECS = "EnableEcsWorker"
_HAS_SECURITY_GROUPS = "HasWorkerSecurityGroups"
_HEARTBEAT_PATH = "/tmp/cloudq-heartbeat"  # noqa: S108 - the Dockerfile's CLOUDQ_HEARTBEAT_PATH
_FARGATE_MAX_STOP_S = 120


@dataclass
class EcsSection:
    parameters: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def _ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def _split(parameter: str) -> dict[str, Any]:
    """A comma-separated String parameter as a list (String, not CommaDelimitedList: its empty default stays simple)."""
    return {"Fn::Split": [",", _ref(parameter)]}


def _not_empty(value: Any) -> dict[str, Any]:
    return {"Fn::Not": [{"Fn::Equals": [value, ""]}]}


def ecs_section(app: App, app_spec: str, queue_ids: list[str]) -> EcsSection:
    """Parameters, conditions, resources and outputs of the optional worker service."""
    resources = {
        # retained like the queues: the worker's logs outlive the stack (an incident is often why it is deleted)
        "WorkerLogGroup": {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 30}, "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"},
        "WorkerExecutionRole": _role("pull the worker image and write its logs", [
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"}
        ]),  # fmt: skip
        "WorkerTaskRole": _role("the worker's own AWS access: the stack's worker policy", [_ref("WorkerPolicy")]),
        "WorkerTaskDefinition": _task_definition(app, app_spec),
        "WorkerService": _service(),
        "WorkerScalableTarget": _scalable_target(),
        "WorkerScalingPolicy": _scaling_policy(queue_ids),
    }
    for resource in resources.values():
        resource["Condition"] = ENABLE_ECS
    outputs = {
        "WorkerServiceName": {"Condition": ENABLE_ECS, "Description": "the ECS worker service", "Value": {"Fn::GetAtt": ["WorkerService", "Name"]}}
    }
    conditions = {
        ENABLE_ECS: {"Fn::And": [_not_empty(_ref(name)) for name in ("EcsClusterName", "WorkerImage", "WorkerSubnetIds")]},
        _HAS_SECURITY_GROUPS: _not_empty(_ref("WorkerSecurityGroupIds")),
    }
    return EcsSection(_parameters(), conditions, _RULES, resources, outputs)


# A stack with a cluster and an image but no subnets would silently deploy no service: refuse it instead.
_RULES = {
    "EcsWorkerNeedsSubnets": {
        "RuleCondition": {"Fn::And": [_not_empty(_ref("EcsClusterName")), _not_empty(_ref("WorkerImage"))]},
        "Assertions": [
            {
                "Assert": _not_empty(_ref("WorkerSubnetIds")),
                "AssertDescription": "WorkerSubnetIds must name the worker's subnets when EcsClusterName and WorkerImage are set",
            }
        ],
    }
}


def _parameters() -> dict[str, Any]:
    def param(kind: str, default: Any, description: str, **extra: Any) -> dict[str, Any]:
        return {"Type": kind, "Default": default, "Description": description, **extra}

    return {
        "EcsClusterName": param("String", "", "ECS cluster for the worker service; empty: no ECS resources"),
        "WorkerImage": param("String", "", "worker image (this repository's Dockerfile); empty: no ECS resources"),
        "WorkerSubnetIds": param("String", "", "comma-separated subnets of the worker tasks (required with ECS)"),
        "WorkerSecurityGroupIds": param("String", "", "comma-separated security groups of the worker tasks (empty: the VPC default)"),
        "WorkerAssignPublicIp": param("String", "DISABLED", "ENABLED only in public subnets without a NAT", AllowedValues=["DISABLED", "ENABLED"]),
        "WorkerCpu": param("String", "256", "Fargate CPU units per task", AllowedValues=["256", "512", "1024", "2048", "4096"]),
        "WorkerMemory": param("String", "512", "Fargate memory (MiB) per task, valid for WorkerCpu"),
        "WorkerMinTasks": param("Number", 1, "fewest worker tasks", MinValue=1),
        "WorkerMaxTasks": param("Number", 10, "most worker tasks", MinValue=1),
        "BacklogPerTaskTarget": param("Number", 100, "visible jobs per running task that autoscaling aims for", MinValue=1),
    }


def _role(purpose: str, managed_policies: list[Any]) -> dict[str, Any]:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": _ref("AWS::AccountId")}},
            }
        ],
    }
    props = {"Description": f"cloudq worker: {purpose}", "AssumeRolePolicyDocument": trust, "ManagedPolicyArns": managed_policies}
    return {"Type": "AWS::IAM::Role", "Properties": props}


def worker_environment(app: App, app_spec: str) -> dict[str, Any]:
    """The settings the deployed worker needs to agree with the rendered queues (and job table)."""
    from cloudq.jobs import store_kind

    settings = app.settings
    jobs = {"CLOUDQ_JOB_STORE": "dynamodb", "CLOUDQ_JOB_TABLE": _ref("JobTable")} if store_kind(settings) == "dynamodb" else {"CLOUDQ_JOB_STORE": "none"}
    return {
        **jobs,
        "CLOUDQ_APP": app_spec,
        "CLOUDQ_BROKER": "sqs",
        "CLOUDQ_DEFAULT_QUEUE": settings.default_queue,
        "CLOUDQ_HEARTBEAT_PATH": _HEARTBEAT_PATH,
        "CLOUDQ_LOG_FORMAT": "json",
        "CLOUDQ_MAX_RETRIES": str(settings.max_retries),
        "CLOUDQ_QUEUE_PREFIX": settings.queue_prefix,
        "CLOUDQ_REGION": _ref("AWS::Region"),
        "CLOUDQ_SHUTDOWN_GRACE_S": f"{settings.shutdown_grace_s:g}",
        "CLOUDQ_VISIBILITY_TIMEOUT_S": str(settings.visibility_timeout_s),
    }


def _task_definition(app: App, app_spec: str) -> dict[str, Any]:
    environment = [{"Name": k, "Value": v} for k, v in sorted(worker_environment(app, app_spec).items())]
    container = {
        "Name": "worker",
        "Image": _ref("WorkerImage"),
        "Essential": True,
        "EntryPoint": ["cloudq", "worker"],
        "Environment": environment,
        "HealthCheck": {"Command": ["CMD", "cloudq", "health", "--max-age", "60"], "Interval": 30, "Timeout": 5, "Retries": 3, "StartPeriod": 20},
        "StopTimeout": min(_FARGATE_MAX_STOP_S, math.ceil(app.settings.shutdown_grace_s) + 10),
        "LogConfiguration": {
            "LogDriver": "awslogs",
            "Options": {"awslogs-group": _ref("WorkerLogGroup"), "awslogs-region": _ref("AWS::Region"), "awslogs-stream-prefix": "worker"},
        },
    }
    props = {
        "Family": re.sub(r"[^A-Za-z0-9_-]", "-", f"{app.settings.queue_prefix}{app.name}-worker")[:255],
        "RequiresCompatibilities": ["FARGATE"],
        "NetworkMode": "awsvpc",
        "Cpu": _ref("WorkerCpu"),
        "Memory": _ref("WorkerMemory"),
        "ExecutionRoleArn": {"Fn::GetAtt": ["WorkerExecutionRole", "Arn"]},
        "TaskRoleArn": {"Fn::GetAtt": ["WorkerTaskRole", "Arn"]},
        "ContainerDefinitions": [container],
    }
    return {"Type": "AWS::ECS::TaskDefinition", "Properties": props}


def _service() -> dict[str, Any]:
    network = {
        "AssignPublicIp": _ref("WorkerAssignPublicIp"),
        "Subnets": _split("WorkerSubnetIds"),
        "SecurityGroups": {"Fn::If": [_HAS_SECURITY_GROUPS, _split("WorkerSecurityGroupIds"), _ref("AWS::NoValue")]},
    }
    props = {
        "Cluster": _ref("EcsClusterName"),
        "TaskDefinition": _ref("WorkerTaskDefinition"),
        "LaunchType": "FARGATE",
        "DesiredCount": _ref("WorkerMinTasks"),
        "NetworkConfiguration": {"AwsvpcConfiguration": network},
        "DeploymentConfiguration": {"DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}, "MaximumPercent": 200, "MinimumHealthyPercent": 100},
        "EnableECSManagedTags": True,
        "PropagateTags": "SERVICE",
    }
    return {"Type": "AWS::ECS::Service", "Properties": props}


def _scalable_target() -> dict[str, Any]:
    props = {
        "ServiceNamespace": "ecs",
        "ScalableDimension": "ecs:service:DesiredCount",
        "ResourceId": {"Fn::Join": ["/", ["service", _ref("EcsClusterName"), {"Fn::GetAtt": ["WorkerService", "Name"]}]]},
        "MinCapacity": _ref("WorkerMinTasks"),
        "MaxCapacity": _ref("WorkerMaxTasks"),
    }
    return {"Type": "AWS::ApplicationAutoScaling::ScalableTarget", "Properties": props}


def _metric(metric_id: str, namespace: str, name: str, dimensions: list[dict[str, Any]], stat: str) -> dict[str, Any]:
    stat_spec = {"Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions}, "Stat": stat}
    return {"Id": metric_id, "MetricStat": stat_spec, "ReturnData": False}


def backlog_per_task_metrics(queue_ids: list[str]) -> list[dict[str, Any]]:
    """Metric math: (visible jobs over every queue, missing data as 0) / running tasks."""
    metrics = [
        _metric(f"q{i}", "AWS/SQS", "ApproximateNumberOfMessagesVisible", [{"Name": "QueueName", "Value": {"Fn::GetAtt": [q, "QueueName"]}}], "Sum")
        for i, q in enumerate(queue_ids)
    ]
    service = [
        {"Name": "ClusterName", "Value": _ref("EcsClusterName")},
        {"Name": "ServiceName", "Value": {"Fn::GetAtt": ["WorkerService", "Name"]}},
    ]
    metrics.append(_metric("tasks", "ECS/ContainerInsights", "RunningTaskCount", service, "Average"))
    backlog = " + ".join(f"FILL(q{i}, 0)" for i in range(len(queue_ids)))
    metrics.append({"Id": "backlog_per_task", "Expression": f"({backlog}) / tasks", "Label": "visible jobs per running task", "ReturnData": True})
    return metrics


def _scaling_policy(queue_ids: list[str]) -> dict[str, Any]:
    config = {
        "TargetValue": _ref("BacklogPerTaskTarget"),
        "CustomizedMetricSpecification": {"Metrics": backlog_per_task_metrics(queue_ids)},
        "ScaleOutCooldown": 60,
        "ScaleInCooldown": 300,
    }
    props = {
        "PolicyName": "backlog-per-task",
        "PolicyType": "TargetTrackingScaling",
        "ScalingTargetId": _ref("WorkerScalableTarget"),
        "TargetTrackingScalingPolicyConfiguration": config,
    }
    return {"Type": "AWS::ApplicationAutoScaling::ScalingPolicy", "Properties": props}

"""`cloudq infra render` with CLOUDQ_METRICS=emf: CloudWatch alarms on the metrics the EMF lines report."""

from __future__ import annotations

from typing import Any

import pytest

import cloudq
from cloudq.infra.cloudformation import render, render_serverless, render_template

from .test_infra import cfn_lint, resources_of

pytestmark = pytest.mark.unit


def make_app(**settings: Any) -> cloudq.App:
    app = cloudq.App("reports", settings=cloudq.Settings(broker="memory", queue_prefix="r-", **settings))
    app.task(name="reports.build", queue="reports")(lambda: None)
    return app


def test_emf_adds_a_dead_letter_rate_and_a_failure_alarm_per_queue() -> None:
    """Alarms on jobs_dead_lettered and jobs_failed, summed per queue over 5 minutes, in the EMF namespace,
    with the dimensions (app, queue) the EMF lines declare for every job metric."""
    template = render_template(make_app(metrics="emf", metrics_namespace="reports-prod"), "x:app")
    rate = template["Resources"]["ReportsDeadLetterRateAlarm"]["Properties"]
    failures = template["Resources"]["ReportsFailureAlarm"]["Properties"]

    assert (rate["Namespace"], rate["MetricName"], rate["Statistic"], rate["Period"]) == ("reports-prod", "jobs_dead_lettered", "Sum", 300)
    assert rate["Dimensions"] == [{"Name": "app", "Value": "reports"}, {"Name": "queue", "Value": "reports"}]
    assert rate["Threshold"] == {"Ref": "DeadLetterRateAlarmThreshold"} and failures["Threshold"] == {"Ref": "FailureAlarmThreshold"}
    assert failures["MetricName"] == "jobs_failed" and rate["AlarmName"] == "r-reports-dead-letter-rate"
    assert "AlarmActions" in rate
    assert len(resources_of(template, "AWS::CloudWatch::Alarm")) == 8  # two queues (reports, default) x (2 SQS + 2 EMF)
    serverless = render_serverless(make_app(metrics="emf"))["resources"]["Resources"]
    assert serverless["DefaultFailureAlarm"]["Properties"]["Threshold"] == 10


def test_without_emf_there_are_no_metric_alarms_nor_their_parameters() -> None:
    for metrics in ("none", "prometheus"):
        template = render_template(make_app(metrics=metrics), "x:app")
        assert len(resources_of(template, "AWS::CloudWatch::Alarm")) == 4
        assert "FailureAlarmThreshold" not in template["Parameters"]


def test_the_emf_template_passes_cfn_lint() -> None:
    assert cfn_lint(render(make_app(metrics="emf"), "x:app")) == []

"""metrics.backend cloudwatch: the dashboard and alarms of monitoring/ against moto over HTTP.

`plan` shows them to create and writes nothing; `apply` (the deploy role's command) makes
them, then finds nothing to do; a change made by hand in AWS shows in `plan` as a diff and
`apply` puts it back with two calls; an alarm named outside the prefix stops the run with one
line; `destroy` deletes them. A cloudwatch bake's monitoring/ files and stack.yaml metrics are used.
"""

from __future__ import annotations

import json
import shutil

import pytest
from aws_testkit import EksExtras, create_cluster, instrument, make_repo, session, stack_for

from repos import baked_repo

from airflow_gitops.aws.cloudwatch import ALARMS_FILE, DASHBOARD_FILE
from airflow_gitops.aws.command import ConvergeError, converge
from airflow_gitops.stack import load_stack

REPO_ROOT = baked_repo(metrics_backend="cloudwatch")  # its monitoring/, iam/ and stack.yaml
METRICS = load_stack(REPO_ROOT)["metrics"]
KINDS = ("cloudwatch dashboard", "cloudwatch alarm")


def repo_with_metrics(tmp_path):
    stack = stack_for("git-sync")
    stack["metrics"] = METRICS
    root = make_repo(tmp_path, stack)
    shutil.copytree(REPO_ROOT / "monitoring", root / "monitoring")
    for name in ("cloudwatch-agent-policy.json", "cloudwatch-agent-trust.json"):
        document = json.loads((REPO_ROOT / "iam" / name).read_text())
        if "Principal" in json.dumps(document):  # the trust: the test cluster's issuer
            document = json.loads((root / "iam" / "api-server-trust.json").read_text())
        (root / "iam" / name).write_text(json.dumps(document))
    create_cluster(session())
    return stack, root


def run(command, stack, root, eks, **kwargs):
    target = session()
    log = instrument(target, eks)
    return converge(command, stack, root, target, **kwargs), log


def ours(results):
    return [(r.kind, r.name, r.action, r.owner) for r in results if r.kind in KINDS]


def alarm_names():
    return [a["AlarmName"] for a in json.loads((REPO_ROOT / ALARMS_FILE).read_text())]


def test_plan_shows_them_apply_makes_them_then_nothing_changes(aws, tmp_path):
    stack, root = repo_with_metrics(tmp_path)
    eks = EksExtras()
    planned, log = run("plan", stack, root, eks)
    assert ours(planned) == [("cloudwatch dashboard", METRICS["dashboard"], "create", "apply")] + [
        ("cloudwatch alarm", name, "create", "apply") for name in alarm_names()
    ]
    assert log.mutating() == []
    run("bootstrap", stack, root, eks)  # the roles apply checks first
    session().client("cloudwatch").delete_dashboards(DashboardNames=[METRICS["dashboard"]])
    session().client("cloudwatch").delete_alarms(AlarmNames=alarm_names())

    applied, log = run("apply", stack, root, eks)
    assert {r.action for r in applied if r.kind in KINDS} == {"create"}
    assert sorted(log.mutating()) == ["PutDashboard"] + ["PutMetricAlarm"] * len(alarm_names())

    again, log = run("apply", stack, root, eks)
    assert {r.action for r in again} == {"ok"} and log.mutating() == []
    cloudwatch = session().client("cloudwatch")
    body = cloudwatch.get_dashboard(DashboardName=METRICS["dashboard"])["DashboardBody"]
    assert json.loads(body) == json.loads((REPO_ROOT / DASHBOARD_FILE).read_text())
    alarms = cloudwatch.describe_alarms(AlarmNames=alarm_names())["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == sorted(alarm_names())
    assert {a["Namespace"] for a in alarms if "Namespace" in a} == {METRICS["namespace"]}


def test_a_change_by_hand_shows_in_plan_and_apply_puts_it_back(aws, tmp_path):
    stack, root = repo_with_metrics(tmp_path)
    eks = EksExtras()
    run("bootstrap", stack, root, eks)
    cloudwatch = session().client("cloudwatch")
    cloudwatch.put_dashboard(DashboardName=METRICS["dashboard"], DashboardBody='{"widgets": []}')
    [first] = [a for a in json.loads((REPO_ROOT / ALARMS_FILE).read_text()) if "MetricName" in a][
        :1
    ]
    cloudwatch.put_metric_alarm(**{**first, "Threshold": 42.0})

    planned, log = run("plan", stack, root, eks)
    changed = [r for r in planned if r.changes]
    assert [(r.kind, r.name, r.action) for r in changed] == [
        ("cloudwatch dashboard", METRICS["dashboard"], "update"),
        ("cloudwatch alarm", first["AlarmName"], "update"),
    ]
    assert log.mutating() == []
    alarm_diff = "\n".join(changed[1].diff)
    assert '-  "Threshold": 42.0' in alarm_diff and f'+  "Threshold": {first["Threshold"]}' in (
        alarm_diff
    )

    applied, log = run("apply", stack, root, eks)
    assert sorted(log.mutating()) == ["PutDashboard", "PutMetricAlarm"]
    assert {r.action for r in run("plan", stack, root, eks)[0]} == {"ok"}


def test_an_alarm_outside_the_prefix_stops_the_run_with_one_line(aws, tmp_path):
    stack, root = repo_with_metrics(tmp_path)
    alarms = json.loads((root / ALARMS_FILE).read_text())
    alarms[0]["AlarmName"] = "someone-elses-alarm"
    (root / ALARMS_FILE).write_text(json.dumps(alarms))
    with pytest.raises(ConvergeError) as raised:
        run("plan", stack, root, EksExtras())
    message = str(raised.value)
    assert "\n" not in message
    assert "'someone-elses-alarm'" in message and METRICS["alarm_prefix"] in message


def test_a_broken_dashboard_file_stops_the_run_with_one_line(aws, tmp_path):
    stack, root = repo_with_metrics(tmp_path)
    (root / DASHBOARD_FILE).write_text('{"widgets": [')
    with pytest.raises(ConvergeError, match=r"cloudwatch-dashboard\.json: not valid JSON"):
        run("plan", stack, root, EksExtras())


def test_destroy_deletes_them(aws, tmp_path):
    stack, root = repo_with_metrics(tmp_path)
    eks = EksExtras()
    run("bootstrap", stack, root, eks)
    results, _ = run("destroy", stack, root, eks)
    assert {r.action for r in results if r.kind in KINDS} == {"delete"}
    cloudwatch = session().client("cloudwatch")
    assert cloudwatch.describe_alarms(AlarmNames=alarm_names())["MetricAlarms"] == []
    assert cloudwatch.list_dashboards()["DashboardEntries"] == []

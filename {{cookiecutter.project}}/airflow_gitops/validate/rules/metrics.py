"""metrics.backend cloudwatch: the dashboard and alarms `make apply` puts into CloudWatch.

A CloudWatch alarm on a namespace nothing writes stays in INSUFFICIENT_DATA (or, for the
scheduler-down alarm, fires forever), and an alarm named outside the prefix is refused by the
deploy role's policy at deploy time. These rules say so before the deploy does.
"""

from __future__ import annotations

from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.loader import parse_text
from airflow_gitops.validate.rules.common import as_dict, as_list, as_str

DASHBOARD = "monitoring/cloudwatch-dashboard.json"
ALARMS = "monitoring/cloudwatch-alarms.json"
OPERATORS = {
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
}
MISSING_DATA = {"breaching", "notBreaching", "ignore", "missing"}


def check(repo) -> Iterator[Finding]:
    if repo.fact("metrics", "backend") != "cloudwatch":
        return
    namespace = as_str(repo.fact("metrics", "namespace"))
    yield from _dashboard(repo, namespace, as_str(repo.fact("aws", "region")))
    yield from _alarms(repo, namespace, as_str(repo.fact("metrics", "alarm_prefix")))


def _load(repo, path: str, rule: str):
    """(document, findings): the file parsed with line numbers, or why it could not be."""
    text = repo.other_texts.get(path)
    if text is None:
        return None, [Finding(path, 1, 1, "missing; metrics.backend is cloudwatch", rule)]
    parsed = parse_text(path, text)
    documents = [d for d in parsed.documents if d.data is not None]
    if parsed.broken or not documents:
        return None, parsed.findings or [Finding(path, 1, 1, "the file is empty", rule)]
    return documents[0], []


def _dashboard(repo, namespace: str, region: str) -> Iterator[Finding]:
    rule = "cloudwatch-dashboard"
    doc, problems = _load(repo, DASHBOARD, rule)
    yield from problems
    if doc is None:
        return
    widgets = doc.get("widgets")
    if not isinstance(widgets, list) or not widgets:
        yield doc.finding((), "a dashboard body needs a non-empty list `widgets`", rule)
        return
    for i, widget in enumerate(widgets):
        if as_dict(widget).get("type") != "metric":
            continue
        where = ("widgets", i, "properties")
        properties = as_dict(as_dict(widget).get("properties"))
        if properties.get("region") != region:
            yield doc.finding(
                (*where, "region") if "region" in properties else where,
                f"region {properties.get('region')!r}: the metrics are in {region!r} "
                "(stack.yaml aws.region)",
                rule,
            )
        for j, line in enumerate(as_list(properties.get("metrics"))):
            first = as_list(line)[0] if as_list(line) else None
            reads = (
                f"{{{namespace}," in as_str(first.get("expression"))
                if isinstance(first, dict)
                else first == namespace
            )
            if not reads:
                yield doc.finding(
                    (*where, "metrics", j),
                    f"reads {first!r}, not namespace {namespace!r} where the CloudWatch agent "
                    "writes (stack.yaml metrics.namespace); the graph would stay empty",
                    rule,
                )


def put_metric_alarm_keys() -> set[str]:
    """The parameters of cloudwatch:PutMetricAlarm, from botocore's own service model (what
    `make apply` sends each alarm as)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("cloudwatch")
    return set(model.operation_model("PutMetricAlarm").input_shape.members)


def _alarms(repo, namespace: str, prefix: str) -> Iterator[Finding]:
    rule = "cloudwatch-alarms"
    doc, problems = _load(repo, ALARMS, rule)
    yield from problems
    if doc is None:
        return
    if not isinstance(doc.data, list):
        yield doc.finding((), "a list of alarms (PutMetricAlarm requests) expected", rule)
        return
    account, region = as_str(repo.fact("aws", "account_id")), as_str(repo.fact("aws", "region"))
    known = put_metric_alarm_keys()
    for i, alarm in enumerate(doc.data):
        alarm = as_dict(alarm)
        for key in sorted(set(alarm) - known):
            yield doc.finding(
                (i, key),
                f"{key!r} is not a PutMetricAlarm parameter (AWS would refuse the alarm); "
                "allowed: " + ", ".join(sorted(known)),
                rule,
                at_key=True,
            )
        name = as_str(alarm.get("AlarmName"))
        if not name.startswith(prefix):
            yield doc.finding(
                (i, "AlarmName") if "AlarmName" in alarm else (i,),
                f"AlarmName {name!r} must start with {prefix!r} (stack.yaml "
                "metrics.alarm_prefix); the deploy role may write no other alarm",
                rule,
            )
        stats = [
            (
                ("Metrics", j, "MetricStat", "Metric"),
                as_dict(as_dict(m.get("MetricStat")).get("Metric")),
            )
            for j, m in enumerate(as_list(alarm.get("Metrics")))
            if isinstance(m, dict) and "MetricStat" in m
        ]
        if "MetricName" in alarm:
            stats.append(((), alarm))
        elif not stats:
            yield doc.finding((i,), f"alarm {name!r}: no MetricName and no Metrics to watch", rule)
        for path, metric in stats:
            if metric.get("Namespace") != namespace:
                yield doc.finding(
                    (i, *path, "Namespace") if "Namespace" in metric else (i, *path),
                    f"alarm {name!r} watches namespace {metric.get('Namespace')!r}, not "
                    f"{namespace!r} where the CloudWatch agent writes (stack.yaml metrics.namespace)",
                    rule,
                )
        if alarm.get("ComparisonOperator") not in OPERATORS:
            yield doc.finding(
                (i, "ComparisonOperator") if "ComparisonOperator" in alarm else (i,),
                f"alarm {name!r}: ComparisonOperator {alarm.get('ComparisonOperator')!r}; "
                f"allowed: {', '.join(sorted(OPERATORS))}",
                rule,
            )
        if alarm.get("TreatMissingData", "missing") not in MISSING_DATA:
            yield doc.finding(
                (i, "TreatMissingData"),
                f"alarm {name!r}: TreatMissingData {alarm.get('TreatMissingData')!r}; "
                f"allowed: {', '.join(sorted(MISSING_DATA))}",
                rule,
            )
        topics = f"arn:aws:sns:{region}:{account}:"
        for key in ("AlarmActions", "OKActions", "InsufficientDataActions"):
            for j, action in enumerate(as_list(alarm.get(key))):
                if not as_str(action).startswith(topics):
                    yield doc.finding(
                        (i, key, j),
                        f"alarm {name!r}: action {action!r}; the deploy role may only name SNS "
                        f"topics of this account and region ({topics}...)",
                        rule,
                    )

"""metrics_backend cloudwatch: the dashboard and the alarms of monitoring/, kept as the files say.

Both are `apply`'s (the deploy role's): iam/deploy-role-policy.json lets it put only the
dashboard stack.yaml metrics.dashboard names and alarms whose names start with
metrics.alarm_prefix, and lets an alarm notify only SNS topics of this account and region.
`plan` (and the nightly drift check) reads both and shows a difference as a diff. Neither holds
data: `destroy` deletes them (an admin's command; the deploy role cannot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_gitops.aws.converge import (
    APPLY,
    DELETE,
    OK,
    Converger,
    Result,
    Step,
    canonical,
    document_diff,
    error_code,
    to_json,
)
from airflow_gitops.errors import ToolkitError

DASHBOARD_FILE = "monitoring/cloudwatch-dashboard.json"
ALARMS_FILE = "monitoring/cloudwatch-alarms.json"
# PutMetricAlarm replaces a whole alarm: an action list the file leaves out is emptied.
ACTION_LISTS = ("AlarmActions", "OKActions", "InsufficientDataActions")


def load_monitoring_file(root, relative: str, stack: dict) -> Any:
    """monitoring/<file> as data, filled for the environment of ``stack``."""
    from airflow_gitops.stack import read_filled

    path = Path(root) / relative
    try:
        return json.loads(read_filled(path, stack))
    except FileNotFoundError:
        raise ToolkitError(
            f"{relative}: not found; it is generated with metrics.backend cloudwatch "
            "(stack.yaml); run `make validate`"
        ) from None
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"{relative}: not valid JSON ({exc}); run `make validate`") from None


def wanted_alarms(root, prefix: str, stack: dict) -> list[dict]:
    """The alarm requests of monitoring/cloudwatch-alarms.json, each checked for a name this
    repo may write."""
    alarms = load_monitoring_file(root, ALARMS_FILE, stack)
    if not isinstance(alarms, list) or not all(isinstance(a, dict) for a in alarms):
        raise ToolkitError(f"{ALARMS_FILE}: must be a list of alarm objects; run `make validate`")
    for alarm in alarms:
        name = str(alarm.get("AlarmName", ""))
        if not name.startswith(prefix):
            raise ToolkitError(
                f"{ALARMS_FILE}: AlarmName {name!r} must start with {prefix!r} "
                "(stack.yaml metrics.alarm_prefix; the deploy role may write no other alarm)"
            )
    return alarms


def _numbers_as_float(value):
    """AWS returns Threshold 0.0 where the file says 0: compare numbers as numbers."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers_as_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_float(v) for v in value]
    return value


def _as_wanted(wanted, current):
    """``current`` cut to the keys ``wanted`` sets (AWS adds its own: ARNs, state, dates)."""
    if isinstance(wanted, dict) and isinstance(current, dict):
        return {k: _as_wanted(wanted[k], current[k]) for k in wanted if k in current}
    if isinstance(wanted, list) and isinstance(current, list) and len(wanted) == len(current):
        return [_as_wanted(w, c) for w, c in zip(wanted, current)]
    return current


class CloudWatchDashboard(Converger):
    """Dashboard stack.yaml metrics.dashboard with the body of monitoring/cloudwatch-dashboard.json."""

    kind = "cloudwatch dashboard"
    owner = APPLY

    def _current(self, ctx) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            body = ctx.client("cloudwatch").get_dashboard(DashboardName=self.name)["DashboardBody"]
        except ClientError as exc:
            if error_code(exc) in ("ResourceNotFound", "ResourceNotFoundException"):
                return None
            raise
        return json.loads(body)

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        wanted = load_monitoring_file(ctx.root, DASHBOARD_FILE, ctx.stack)
        current = self._current(ctx)
        if current is not None and canonical(current) == canonical(wanted):
            return True, []
        self.show_diff(DASHBOARD_FILE, current, wanted)

        def put():
            ctx.client("cloudwatch").put_dashboard(
                DashboardName=self.name, DashboardBody=to_json(wanted)
            )

        widgets = len(wanted.get("widgets", [])) if isinstance(wanted, dict) else 0
        return current is not None, [(f"{widgets} widgets from {DASHBOARD_FILE}", put)]

    def removal(self, ctx) -> list[Step]:
        if self._current(ctx) is None:
            return []
        cloudwatch = ctx.client("cloudwatch")
        return [("delete", lambda: cloudwatch.delete_dashboards(DashboardNames=[self.name]))]


class CloudWatchAlarms(Converger):
    """Every alarm of monitoring/cloudwatch-alarms.json; one result line per alarm. ``name`` is
    the prefix every alarm name starts with."""

    kind = "cloudwatch alarm"
    owner = APPLY

    def _current(self, ctx, names: list[str]) -> dict[str, dict]:
        cloudwatch = ctx.client("cloudwatch")
        found: dict[str, dict] = {}
        if not names:
            return found
        pages = cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNames=names, AlarmTypes=["MetricAlarm"]
        )
        for page in pages:
            for alarm in page.get("MetricAlarms", []):
                found[alarm["AlarmName"]] = alarm
        return found

    def converge(self, ctx) -> list[Result]:
        alarms = wanted_alarms(ctx.root, self.name, ctx.stack)
        current = self._current(ctx, [a["AlarmName"] for a in alarms])
        results = []
        for alarm in alarms:
            name = alarm["AlarmName"]
            wanted = {key: [] for key in ACTION_LISTS} | alarm
            now = current.get(name)
            if now is not None:
                shown = _as_wanted(wanted, {key: [] for key in ACTION_LISTS} | now)
                if _numbers_as_float(shown) == _numbers_as_float(wanted):
                    results.append(self.finish(ctx, True, [], name=name))
                    continue
            else:
                shown = None
            diff = document_diff(f"{ALARMS_FILE} {name}", shown, wanted)

            def put(request=alarm):
                ctx.client("cloudwatch").put_metric_alarm(**request)

            what = alarm.get("MetricName") or "metric math"
            results.append(
                self.finish(ctx, now is not None, [(f"on {what}", put)], name=name, diff=diff)
            )
        return results

    def destroy(self, ctx) -> list[Result]:
        try:
            names = [a["AlarmName"] for a in wanted_alarms(ctx.root, self.name, ctx.stack)]
        except ToolkitError:
            names = []
        present = sorted(self._current(ctx, names))
        if present and not ctx.dry_run:
            ctx.client("cloudwatch").delete_alarms(AlarmNames=present)
        return [
            Result(DELETE if name in present else OK, self.kind, name, [], self.owner)
            for name in names
        ]

    def removal(self, ctx) -> list[Step]:
        return []

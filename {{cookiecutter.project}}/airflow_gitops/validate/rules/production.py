"""The production shape: sized components, autoscaling that fits the executor, a TLS-only UI,
an API server its own pods can reach, metrics Prometheus can find.

docs/production.md and docs/ui-access.md say what the generated values set and why; these rules
keep a later edit from quietly dropping it.
"""

from __future__ import annotations

from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import as_dict, as_str

# Every component that runs a pod, where the chart reads its `resources`; the first place wins,
# the later ones are the chart's fallbacks. The migration job runs on every deploy.
SIZED = {
    "scheduler": (("scheduler",),),
    "apiServer": (("apiServer",),),
    "dagProcessor": (("dagProcessor",),),
    "triggerer": (("triggerer",),),
    "statsd": (("statsd",),),
    "migrateDatabaseJob": (("migrateDatabaseJob",),),
    "workers.celery": (("workers", "celery"), ("workers",)),
    "workers.kubernetes": (("workers", "kubernetes"), ("workers",)),
    "redis": (("redis",),),
}
ALB_ANNOTATION = "alb.ingress.kubernetes.io/"
# API groups of the custom resources this repo deploys (KEDA's ScaledObject, the Prometheus
# operator's kinds): the deploy role's EKS access policy covers built-in kinds only, so a Role in
# k8s/ grants these to the Kubernetes group on the deploy role's access entry.
EXTENSION_API_GROUPS = frozenset({"keda.sh", "monitoring.coreos.com"})


def check(repo) -> Iterator[Finding]:
    values = repo.values
    executor = as_str(values.get("executor")) or as_str(repo.fact("airflow", "executor"))
    yield from _keda_needs_celery(values, executor)
    yield from _alb_is_tls_only(values)
    yield from _api_server_reachable(values)
    yield from _service_monitors(repo)
    yield from _extensions_bound_to_the_deploy_group(repo)
    if repo.fact("airflow", "size") is not None:  # a sized repository keeps every pod sized
        yield from _requests(values, executor)
        yield from _priority_classes(repo)


def _components(values, executor: str) -> list[str]:
    names = ["scheduler", "apiServer", "dagProcessor", "migrateDatabaseJob"]
    if values.get("triggerer", "enabled") is not False:
        names.append("triggerer")
    if values.get("statsd", "enabled") is not False:
        names.append("statsd")
    if "KubernetesExecutor" in executor:
        names.append("workers.kubernetes")
    if "CeleryExecutor" in executor or not executor:
        names.append("workers.celery")
        if values.get("redis", "enabled") is not False:
            names.append("redis")
    return names


def _requests(values, executor: str) -> Iterator[Finding]:
    for component in _components(values, executor):
        places = SIZED[component]
        requests, where = {}, places[0]
        for base in places:
            found = as_dict(values.get(*base, "resources", "requests"))
            if found:
                requests, where = found, base
                break
        missing = [r for r in ("cpu", "memory") if r not in requests]
        if missing:
            anchor = where + ("resources", "requests") if requests else where
            yield values.finding(
                anchor if values.get(*anchor) is not None else (),
                f"{component} has no {' or '.join(missing)} request: without requests its pods are "
                f"BestEffort, packed anywhere and evicted first; set {'.'.join(places[0])}.resources."
                "requests (docs/production.md)",
                "resources-missing",
                at_key=True,
            )


def _keda_needs_celery(values, executor: str) -> Iterator[Finding]:
    if "CeleryExecutor" in executor or not executor:
        return
    for base in (("workers", "keda"), ("workers", "celery", "keda")):
        if values.get(*base, "enabled") is True:
            yield values.finding(
                base + ("enabled",),
                f"KEDA scales Celery workers; executor is {executor}, which starts one pod per task "
                "and has no workers to scale: remove it (docs/production.md: Autoscaling)",
                "keda-executor",
            )


def _alb_is_tls_only(values) -> Iterator[Finding]:
    ingress = ("ingress", "apiServer")
    if (
        values.get(*ingress, "enabled") is not True
        or values.get(*ingress, "ingressClassName") != "alb"
    ):
        return
    annotations = as_dict(values.get(*ingress, "annotations"))
    problems = []
    if not as_str(annotations.get(ALB_ANNOTATION + "certificate-arn")).startswith("arn:aws:acm:"):
        problems.append("an ACM certificate-arn")
    if str(annotations.get(ALB_ANNOTATION + "ssl-redirect")) != "443":
        problems.append('ssl-redirect "443"')
    if "HTTPS" not in as_str(annotations.get(ALB_ANNOTATION + "listen-ports")):
        problems.append("an HTTPS listen-port")
    if problems:
        yield values.finding(
            ingress + ("annotations",) if annotations else ingress,
            "the UI's load balancer must serve HTTPS only; its annotations lack "
            + ", ".join(problems)
            + " (docs/ui-access.md)",
            "ingress-tls",
            at_key=True,
        )


def _priority_classes(repo) -> Iterator[Finding]:
    """A priorityClassName must name a PriorityClass that k8s/ creates (or a system one)."""
    values = repo.values
    known = {d.get("metadata", "name") for d in repo.by_kind("PriorityClass")}
    for places in SIZED.values():
        base = places[0]
        name = values.get(*base, "priorityClassName")
        if isinstance(name, str) and name and name not in known and not name.startswith("system-"):
            yield values.finding(
                base + ("priorityClassName",),
                f"PriorityClass {name!r} is not in k8s/; pods naming a missing class are refused "
                f"(k8s/ has: {', '.join(sorted(map(str, known))) or 'none'})",
                "priorityclass-missing",
            )


def _api_server_reachable(values) -> Iterator[Finding]:
    """The chart's API server NetworkPolicy with no peers lets nothing in; in Airflow 3 every task
    calls the API server's Execution API, so every task would fail."""
    if (
        values.get("networkPolicies", "enabled") is not True
        or values.get("apiServer", "enabled") is False
    ):
        return
    peers = values.get("apiServer", "networkPolicy", "ingress", "from")
    if not peers:
        anchor = ("apiServer", "networkPolicy", "ingress", "from")
        yield values.finding(
            anchor if values.get(*anchor) is not None else ("networkPolicies", "enabled"),
            "with networkPolicies.enabled the API server admits only apiServer.networkPolicy.ingress.from, "
            "which is empty: tasks could not reach the Execution API; allow Airflow's pods "
            "(docs/network-policies.md)",
            "api-server-unreachable",
            at_key=True,
        )


def _service_monitors(repo) -> Iterator[Finding]:
    """A ServiceMonitor in k8s/ must select the chart's StatsD Service and name its metrics port."""
    release = repo.fact("airflow", "release")
    statsd_labels = {"tier": "airflow", "component": "statsd", "release": release}
    for doc in repo.by_kind("ServiceMonitor"):
        selector = as_dict(doc.get("spec", "selector", "matchLabels"))
        ports = [as_dict(e).get("port") for e in doc.get("spec", "endpoints", default=[]) or []]
        if (
            not selector
            or not selector.items() <= statsd_labels.items()
            or "statsd-scrape" not in ports
        ):
            yield doc.finding(
                ("spec",),
                f"ServiceMonitor {doc.get('metadata', 'name')!r} must select the StatsD exporter's Service "
                f"(matchLabels within {statsd_labels}) on port statsd-scrape; as written it scrapes nothing",
                "servicemonitor-target",
                at_key=True,
            )


def _extensions_bound_to_the_deploy_group(repo) -> Iterator[Finding]:
    """A binding of a Role over EXTENSION_API_GROUPS must name the group `make bootstrap` puts on
    the deploy role's access entry, or `helm upgrade` is forbidden to create those objects."""
    group = repo.fact("eks", "deploy_kubernetes_group")
    if not isinstance(group, str):
        return
    extension_roles = {
        d.get("metadata", "name")
        for d in repo.by_kind("Role")
        if any(
            EXTENSION_API_GROUPS & set(as_dict(rule).get("apiGroups") or [])
            for rule in d.get("rules", default=[]) or []
        )
    }
    for binding in repo.by_kind("RoleBinding"):
        if binding.get("roleRef", "name") not in extension_roles:
            continue
        groups = [
            as_dict(s).get("name")
            for s in binding.get("subjects", default=[]) or []
            if as_dict(s).get("kind") == "Group"
        ]
        if group not in groups:
            yield binding.finding(
                ("subjects",),
                f"RoleBinding {binding.get('metadata', 'name')!r} grants "
                f"{', '.join(sorted(EXTENSION_API_GROUPS))} rights to {groups or 'no group'}, but the "
                f"deploy role's access entry carries the group {group!r} (stack.yaml "
                "eks.deploy_kubernetes_group): the deploy would be forbidden to apply them",
                "deploy-group-unbound",
                at_key=True,
            )

"""The production shape of issue 16, asserted on what the real chart renders.

Each combination is baked and rendered by its own `make manifests` with the chart package the
project carries (tests/helm_chart.py). Sizes (requests, limits, replicas, PDBs, zone spread,
priority), the way in (Ingress), autoscaling (KEDA), metrics (scrape, rules, dashboard) and
NetworkPolicies are read from the rendered objects only, plus the numbers docs/production.md
promises, which must be the rendered ones. The last tests edit a baked repo and expect
`make validate` to name the rule that the edit breaks.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil

import pytest
import yaml
from conftest import run_make
from helm_chart import chart_file
from test_chart_render import airflow_config, all_containers, named, of_kind, pod_specs

SIZES = ["small", "production"]
EXECUTORS = ["CeleryExecutor", "KubernetesExecutor"]
# s3-sync carries our sidecars, git-sync the chart's: between them every container kind.
SIZE_COMBINATIONS = [
    {"size": s, "executor": e, "dag_source": m}
    for s in SIZES
    for e in EXECUTORS
    for m in ("s3-sync", "git-sync")
]
# The components production runs twice, by their pods' `component` label.
REPLICATED = ("scheduler", "api-server", "triggerer")
ZONE = "topology.kubernetes.io/zone"
# docs/production.md row -> (pod component label, container name) where its numbers apply.
DOC_ROWS = {
    "scheduler": ("scheduler", "scheduler"),
    "apiServer": ("api-server", "api-server"),
    "dagProcessor": ("dag-processor", "dag-processor"),
    "triggerer": ("triggerer", "triggerer"),
    "worker": ("worker", "worker"),
    "taskPod": ("task-pod", "base"),
    "migrations": ("run-airflow-migrations", "run-airflow-migrations"),
    "redis": ("redis", "redis"),
    "statsd": ("statsd", "statsd"),
    "logGroomer": ("scheduler", "scheduler-log-groomer"),
    "gitSync": ("dag-processor", "git-sync"),
}


def combo_id(answers: dict) -> str:
    return "-".join(answers.values())


def quantity(text: str) -> float:
    """A Kubernetes quantity as a number (bytes or cores), for comparisons."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()
    return float(number) * units[unit]


def workloads(docs: list[dict]) -> dict[str, dict]:
    """component label -> Deployment/StatefulSet (the chart's long-running pods)."""
    return {
        w["spec"]["template"]["metadata"]["labels"]["component"]: w
        for w in of_kind(docs, "Deployment", "StatefulSet")
    }


@pytest.mark.parametrize("answers", SIZE_COMBINATIONS, ids=combo_id)
def test_every_container_has_requests_and_a_memory_limit(rendered, answers):
    specs = pod_specs(rendered(**answers))
    expected = {"scheduler", "api-server", "dag-processor", "triggerer", "statsd"}
    expected.add("task-pod" if answers["executor"] == "KubernetesExecutor" else "worker")
    assert expected <= set(specs), f"no rendered pod for {expected - set(specs)}"
    checked = 0
    for component, spec in specs.items():
        for container in all_containers(spec):
            where = f"{combo_id(answers)}: {component}/{container['name']}"
            resources = container.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            assert {"cpu", "memory"} <= set(requests), f"{where}: requests {requests}"
            assert "memory" in limits, f"{where}: no memory limit"
            assert "cpu" not in limits, f"{where}: a CPU limit throttles on idle nodes"
            assert quantity(requests["memory"]) <= quantity(limits["memory"]), where
            checked += 1
    assert checked >= 12


@pytest.mark.parametrize("answers", SIZE_COMBINATIONS, ids=combo_id)
def test_docs_show_the_numbers_that_render(baked, rendered, answers):
    repo = baked(**answers)
    specs = pod_specs(rendered(**answers))
    rows = re.findall(
        r"^\| (\w+) \| (\S+) \| (\S+) \| (\S+) \| .+\|$",
        (repo / "docs" / "production.md").read_text(),
        re.MULTILINE,
    )
    documented = {name: numbers for name, *numbers in rows if name in DOC_ROWS}
    present = {row for row, (component, _) in DOC_ROWS.items() if component in specs}
    present -= {"gitSync"} if answers["dag_source"] != "git-sync" else set()
    assert set(documented) == present, f"docs rows {sorted(documented)}, pods {sorted(present)}"
    for row, (cpu, memory, limit) in documented.items():
        component, name = DOC_ROWS[row]
        container = next(c for c in all_containers(specs[component]) if c["name"] == name)
        resources = container["resources"]
        assert [resources["requests"]["cpu"], resources["requests"]["memory"]] == [cpu, memory], row
        assert resources["limits"]["memory"] == limit, row


def test_production_asks_for_more_than_small(rendered):
    def scheduler_memory(size: str) -> float:
        specs = pod_specs(rendered(size=size, executor="CeleryExecutor", dag_source="s3-sync"))
        return quantity(specs["scheduler"]["containers"][0]["resources"]["requests"]["memory"])

    assert scheduler_memory("production") > scheduler_memory("small")


@pytest.mark.parametrize("answers", SIZE_COMBINATIONS, ids=combo_id)
def test_control_components_survive_a_drain_and_a_zone(rendered, answers):
    docs = rendered(**answers)
    pods = workloads(docs)
    budgets = named(docs, "PodDisruptionBudget")
    classes = named(docs, "PriorityClass")
    production = answers["size"] == "production"
    for component in REPLICATED:
        workload = pods[component]
        spec = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [
            b
            for b in budgets.values()
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        if not production:
            assert workload["spec"]["replicas"] == 1, component
            assert not covering and not spec.get("priorityClassName"), component
            continue
        assert workload["spec"]["replicas"] == 2, component
        assert [b["spec"].get("maxUnavailable") for b in covering] == [1], component
        zone = [c for c in spec.get("topologySpreadConstraints") or [] if c["topologyKey"] == ZONE]
        assert zone, f"{component}: not spread over zones"
        assert zone[0]["whenUnsatisfiable"] == "DoNotSchedule"
        # The spread must count this component's own pods, not every Airflow pod.
        assert zone[0]["labelSelector"]["matchLabels"].items() <= labels.items()
        assert zone[0]["labelSelector"]["matchLabels"]["component"] == component
        assert spec["priorityClassName"] in classes, f"{component}: priority class not created"
    if production:
        assert pods["dag-processor"]["spec"]["template"]["spec"]["priorityClassName"] in classes
        (priority,) = classes.values()
        assert 0 < priority["value"] < 1_000_000_000  # below the system-* classes
    else:
        assert not classes and not budgets


# --- A way in: ui_access -------------------------------------------------------------------------

CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/0f0e0d0c-1b1a-2d2c-3f3e-4a4b4c4d4e4f"
ALB = {
    "ui_access": "alb",
    "alb_certificate_arn": CERTIFICATE,
    "ui_hostname": "airflow.data.example",
}
UI_COMBINATIONS = [
    {"size": s, "executor": e, **access}
    for s in SIZES
    for e in EXECUTORS
    for access in ({"ui_access": "port-forward"}, ALB)
]
ALB_ANNOTATION = "alb.ingress.kubernetes.io/"


def ui_id(answers: dict) -> str:
    return "-".join(v for k, v in answers.items() if k in ("size", "executor", "ui_access"))


@pytest.mark.parametrize("answers", UI_COMBINATIONS, ids=ui_id)
def test_the_api_server_is_reached_only_as_answered(rendered, answers):
    docs = rendered(**answers)
    ingresses = of_kind(docs, "Ingress")
    if answers["ui_access"] == "port-forward":
        assert not ingresses, "port-forward exposes nothing"
        return
    (ingress,) = ingresses
    annotations = {
        k.removeprefix(ALB_ANNOTATION): v
        for k, v in ingress["metadata"]["annotations"].items()
        if k.startswith(ALB_ANNOTATION)
    }
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert annotations["scheme"] == "internal"  # the default answer
    assert annotations["certificate-arn"] == CERTIFICATE
    assert annotations["ssl-redirect"] == "443"
    assert {"HTTPS": 443} in json.loads(annotations["listen-ports"])
    assert annotations["target-type"] == "ip"  # the chart's Service is ClusterIP
    # The load balancer checks the path the chart itself probes the API server on.
    (api_server,) = [w for c, w in workloads(docs).items() if c == "api-server"]
    probe = api_server["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert annotations["healthcheck-path"] == probe["path"] == "/api/v2/monitor/health"
    # Every rule routes the answered host to a Service port that exists.
    services = named(docs, "Service")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == answers["ui_hostname"]
    for path in rule["http"]["paths"]:
        backend = path["backend"]["service"]
        ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
        assert backend["port"]["name"] in ports
    config = airflow_config(docs)
    assert config["api"]["base_url"] == f"https://{answers['ui_hostname']}"


def test_an_internet_facing_load_balancer_is_only_by_answer(rendered):
    docs = rendered(**ALB, alb_scheme="internet-facing")
    (ingress,) = of_kind(docs, "Ingress")
    assert ingress["metadata"]["annotations"][ALB_ANNOTATION + "scheme"] == "internet-facing"


# --- Autoscaling ---------------------------------------------------------------------------------

# API groups of the kinds the deploy role's EKS access policy (AmazonEKSAdminPolicy) covers.
BUILT_IN_GROUPS = {
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
}
CLUSTER_SCOPED = {"Namespace", "StorageClass", "PriorityClass", "IngressClass"}


def api_group(doc: dict) -> str:
    return doc["apiVersion"].rpartition("/")[0]


@pytest.mark.parametrize(
    "answers",
    [
        {"executor": e, "workers_min": lo, "workers_max": hi}
        for e in EXECUTORS
        for lo, hi in (("0", "3"), ("2", "12"))
    ],
    ids=combo_id,
)
def test_celery_workers_scale_with_keda_between_the_answers(rendered, answers):
    docs = rendered(**answers)
    scaled = of_kind(docs, "ScaledObject")
    if answers["executor"] == "KubernetesExecutor":
        assert not scaled, "no workers to scale: every task is its own pod"
        return
    (scaler,) = scaled
    spec = scaler["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        int(answers["workers_min"]),
        int(answers["workers_max"]),
    )
    target = spec["scaleTargetRef"]
    (worker,) = [
        w for w in of_kind(docs, target["kind"]) if w["metadata"]["name"] == target["name"]
    ]
    assert "replicas" not in worker["spec"], (
        "a fixed replica count would fight KEDA on every deploy"
    )
    container = next(
        c
        for c in worker["spec"]["template"]["spec"]["containers"]
        if c["name"] == target["envSourceContainerName"]
    )
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["metadata"]["connectionFromEnv"] in {e["name"] for e in container["env"]}
    query = trigger["metadata"]["query"]
    assert "'queued'" in query and "'running'" in query


@pytest.mark.parametrize(
    "answers",
    [{"executor": e} for e in EXECUTORS]
    + [{"executor": "KubernetesExecutor", "metrics_scrape": "servicemonitor"}],
    ids=combo_id,
)
def test_the_deploy_role_may_apply_every_custom_resource_rendered(rendered, answers):
    """AmazonEKSAdminPolicy covers built-in kinds only; k8s/ must grant the rest to its group."""
    docs = rendered(**answers)
    custom = {
        (api_group(d), d["kind"])
        for d in docs
        if api_group(d) not in BUILT_IN_GROUPS and d["kind"] not in CLUSTER_SCOPED
    }
    if answers["executor"] == "CeleryExecutor":
        assert ("keda.sh", "ScaledObject") in custom
    if answers.get("metrics_scrape") == "servicemonitor":
        assert {
            ("monitoring.coreos.com", "ServiceMonitor"),
            ("monitoring.coreos.com", "PrometheusRule"),
        } <= custom
    roles = named(docs, "Role")
    granted = {
        (group, resource)
        for binding in of_kind(docs, "RoleBinding")
        if any(s["kind"] == "Group" for s in binding["subjects"])
        and binding["roleRef"]["name"] in roles
        for rule in roles[binding["roleRef"]["name"]]["rules"]
        if {"create", "update", "patch", "delete", "get"} <= set(rule["verbs"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    for group, kind in custom:
        assert (group, kind.lower() + "s") in granted, (
            f"the deploy role may not apply {group}/{kind}"
        )


# --- Metrics -------------------------------------------------------------------------------------

# Airflow metric names (Airflow's metrics reference) that the rules and dashboard read and the
# chart's StatsD mappings leave alone: the exporter publishes them with dots as underscores.
AIRFLOW_METRICS = {
    "dag_processing.import_errors",
    "dag_processing.total_parse_time",
    "ti_failures",
    "executor.queued_tasks",
    "executor.running_tasks",
}
REQUIRED_ALERTS = {"AirflowSchedulerDown", "AirflowDagImportErrors", "AirflowTasksStuckQueued"}
REQUIRED_PANELS = {
    "Scheduler heartbeats",
    "DAG parse time",
    "Queued and running tasks",
    "Task failures",
    "Pool slots",
}
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "increase",
    "absent",
    "by",
    "and",
    "or",
}


def mapping_matches(mapping: dict, metric: str) -> bool:
    """statsd_exporter's rule: a glob where `*` is one dot-free part, or a regex."""
    if mapping.get("match_type") == "regex":
        return re.fullmatch(mapping["match"], metric) is not None
    pattern = r"\.".join(
        "[^.]+" if part == "*" else re.escape(part) for part in mapping["match"].split(".")
    )
    return re.fullmatch(pattern, metric) is not None


def exported_metric_names() -> set[str]:
    mappings = yaml.safe_load(chart_file("files/statsd-mappings.yml"))["mappings"]
    names = {m["name"] for m in mappings}
    for metric in AIRFLOW_METRICS:
        statsd = f"airflow.{metric}"
        renamed = [m["name"] for m in mappings if mapping_matches(m, statsd)]
        assert not renamed, f"{statsd} is mapped to {renamed}; use that name"
        names.add(re.sub(r"[^A-Za-z0-9_]", "_", statsd))
    return names


def check_promql(expr: str, where: str) -> None:
    """No promtool offline: brackets balance, every function is known, every metric exists."""
    depth = 0
    for char in expr:
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        assert depth >= 0, f"{where}: unbalanced {expr!r}"
    assert depth == 0, f"{where}: unbalanced {expr!r}"
    functions = set(re.findall(r"\b([a-z_]+)\s*\(", expr))
    assert functions <= PROMQL_WORDS, f"{where}: unknown {functions - PROMQL_WORDS}"
    metrics = set(re.findall(r"\bairflow_[a-z0-9_]+", expr))
    assert metrics, f"{where}: reads no Airflow metric"
    unknown = metrics - exported_metric_names()
    assert not unknown, f"{where}: the StatsD exporter publishes no {sorted(unknown)}"


@pytest.mark.parametrize(
    "answers",
    [
        {"executor": e, "metrics_scrape": m}
        for e in EXECUTORS
        for m in ("annotations", "servicemonitor")
    ],
    ids=combo_id,
)
def test_metrics_reach_prometheus_with_alerts(baked, rendered, answers):
    repo, docs = baked(**answers), rendered(**answers)
    statsd = named(docs, "Service")["airflow-statsd"]
    scrape_port = next(p for p in statsd["spec"]["ports"] if p["name"] == "statsd-scrape")
    assert airflow_config(docs)["metrics"]["statsd_host"] == statsd["metadata"]["name"]
    rules_file = repo / "monitoring" / "alert-rules.yaml"
    monitors = of_kind(docs, "ServiceMonitor")
    if answers["metrics_scrape"] == "annotations":
        annotations = statsd["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(scrape_port["port"])
        assert not monitors and not of_kind(docs, "PrometheusRule")
        groups = yaml.safe_load(rules_file.read_text())["groups"]
    else:
        (monitor,) = monitors
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= statsd["metadata"]["labels"].items()
        )
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["statsd-scrape"]
        (rule,) = of_kind(docs, "PrometheusRule")
        assert not rules_file.exists(), "one copy of the rules: k8s/prometheusrule.yaml"
        groups = rule["spec"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    for rule in rules:
        check_promql(rule["expr"], rule["alert"])
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]


def test_the_dashboard_shows_what_the_issue_asks_on_exported_metrics(default_repo):
    dashboard = json.loads((default_repo / "monitoring" / "airflow-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert REQUIRED_PANELS <= {p["title"] for p in panels}
    assert len({p["id"] for p in panels}) == len(panels)
    (variable,) = dashboard["templating"]["list"]
    for panel in panels:
        assert panel["datasource"]["uid"] == f"${{{variable['name']}}}"
        for target in panel["targets"]:
            check_promql(target["expr"], panel["title"])
    legends = [t["legendFormat"] for p in panels for t in p["targets"]]
    assert "{{pool}} used" in legends  # Grafana's own templating survived generation


# --- NetworkPolicies -----------------------------------------------------------------------------

NAMESPACE = "airflow"  # the default answer


class Peer:
    """One end of a connection: a pod (labels in a namespace) or an address outside the cluster."""

    def __init__(
        self, labels: dict | None = None, namespace: str = NAMESPACE, ip: str | None = None
    ):
        self.labels, self.namespace, self.ip = labels or {}, namespace, ip


def selects(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression  # the only operator we use
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def peer_matches(rule_peer: dict, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        return peer.ip is not None and ipaddress.ip_address(peer.ip) in ipaddress.ip_network(
            rule_peer["ipBlock"]["cidr"]
        )
    if peer.ip is not None:
        return False  # an address outside the cluster is no pod of any namespace
    if "namespaceSelector" in rule_peer:
        namespace_ok = selects(
            rule_peer["namespaceSelector"], {"kubernetes.io/metadata.name": peer.namespace}
        )
    else:
        namespace_ok = peer.namespace == NAMESPACE
    return namespace_ok and selects(rule_peer.get("podSelector", {}), peer.labels)


def port_matches(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(
        int(p["port"]) == port and p.get("protocol", "TCP") == protocol for p in ports
    )


def allowed(docs: list[dict], source: Peer, target: Peer, port: int, protocol: str = "TCP") -> bool:
    """Kubernetes semantics: a direction is open unless a policy selects the pod for it; then
    only what some rule of those policies allows gets through. Both ends must agree."""
    policies = of_kind(docs, "NetworkPolicy")

    def side(pod: Peer, direction: str, other: Peer) -> bool:
        if pod.ip is not None:
            return True  # outside the cluster: no policy applies
        mine = [
            p["spec"]
            for p in policies
            if direction.capitalize() in p["spec"]["policyTypes"]
            and selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not mine:
            return True
        key = "from" if direction == "ingress" else "to"
        return any(
            port_matches(rule, port, protocol)
            and (key not in rule or any(peer_matches(peer, other) for peer in rule[key]))
            for spec in mine
            for rule in spec.get(direction, [])
        )

    return side(source, "egress", target) and side(target, "ingress", source)


def pod(component: str) -> Peer:
    return Peer({"tier": "airflow", "component": component, "release": "airflow"})


@pytest.mark.parametrize("answers", UI_COMBINATIONS, ids=ui_id)
def test_only_what_must_talk_talks(rendered, answers):
    docs = rendered(**answers)
    celery = answers["executor"] == "CeleryExecutor"
    worker, scheduler, api = pod("worker"), pod("scheduler"), pod("api-server")
    triggerer, parser, statsd, redis = (
        pod("triggerer"),
        pod("dag-processor"),
        pod("statsd"),
        pod("redis"),
    )
    stranger = Peer({"app": "something-else"}, namespace="default")
    load_balancer = Peer(ip="10.0.12.34")
    database = Peer(ip="10.0.200.5")
    # Redis (Celery): the workers and the scheduler, nobody else.
    if celery:
        for source in (worker, scheduler):
            assert allowed(docs, source, redis, 6379), source.labels
        for source in (api, triggerer, parser, stranger):
            assert not allowed(docs, source, redis, 6379), source.labels
    # The workers' (or task pods') log server: the API server alone.
    assert allowed(docs, api, worker, 8793)
    for source in (scheduler, triggerer, parser, stranger):
        assert not allowed(docs, source, worker, 8793), source.labels
    # The API server: Airflow's own pods (Execution API), the load balancer only with alb.
    for source in (worker, triggerer, parser, scheduler):
        assert allowed(docs, source, api, 8080), source.labels
    assert not allowed(docs, stranger, api, 8080)
    assert allowed(docs, load_balancer, api, 8080) == (answers["ui_access"] == "alb")
    # Nothing else gets in anywhere; Prometheus reaches only StatsD's metrics port.
    assert not allowed(docs, worker, parser, 8080)
    assert not allowed(docs, stranger, scheduler, 8793)
    assert allowed(docs, Peer({"app": "prometheus"}, namespace="monitoring"), statsd, 9102)
    assert not allowed(docs, stranger, statsd, 9125, "UDP")
    assert allowed(docs, worker, statsd, 9125, "UDP")
    # The scheduler and API server reach the database's port and nothing else outside.
    for source in (scheduler, api):
        assert allowed(docs, source, database, 5432)
        assert not allowed(docs, source, Peer(ip="203.0.113.9"), 25)
    assert allowed(docs, scheduler, redis, 6379) == celery
    # Workers run DAG code: their way out stays open.
    assert allowed(docs, worker, Peer(ip="203.0.113.9"), 3306)


# --- make validate -------------------------------------------------------------------------------

VALIDATE_CASES = [
    # (answers, file, text to find, replacement, rule id)
    (
        {"size": "small"},
        "helm/values.yaml",
        'scheduler:\n  resources:\n    requests:\n      cpu: "250m"\n',
        "scheduler:\n  resources:\n    requests:\n",
        "resources-missing",
    ),
    (
        {"executor": "KubernetesExecutor"},
        "helm/values.yaml",
        "\nworkers:\n  kubernetes:\n",
        "\nworkers:\n  keda:\n    enabled: true\n  kubernetes:\n",
        "keda-executor",
    ),
    (
        ALB,
        "helm/values.yaml",
        '      alb.ingress.kubernetes.io/ssl-redirect: "443"\n',
        "",
        "ingress-tls",
    ),
    ({"size": "production"}, "k8s/priorityclass.yaml", None, None, "priorityclass-missing"),
    (
        {"size": "small"},
        "helm/values.yaml",
        '      from:\n        - podSelector:\n            matchLabels:\n              tier: airflow\n              release: "airflow"\n',
        "      from: []\n",
        "api-server-unreachable",
    ),
    (
        {"metrics_scrape": "servicemonitor"},
        "k8s/servicemonitor.yaml",
        "    - port: statsd-scrape\n",
        "    - port: http\n",
        "servicemonitor-target",
    ),
    (
        {"executor": "CeleryExecutor"},
        "k8s/deploy-extensions-rbac.yaml",
        '    name: "airflow-gitops-deploy"\n',
        '    name: "platform-deployers"\n',
        "deploy-group-unbound",
    ),
    (
        {"metrics_scrape": "servicemonitor", "executor": "KubernetesExecutor"},
        "stack.yaml",
        '  deploy_kubernetes_group: "airflow-gitops-deploy"\n',
        '  deploy_kubernetes_group: "airflow-deployers"\n',
        "deploy-group-unbound",
    ),
    # metrics_backend cloudwatch: the dashboard and alarms read where the agent writes, and
    # alarms stay within what the deploy role may put.
    (
        {"metrics_backend": "cloudwatch"},
        "monitoring/cloudwatch-dashboard.json",
        '"Airflow/airflow-gitops",\n            "airflow_scheduler_heartbeat"',
        '"Airflow/other",\n            "airflow_scheduler_heartbeat"',
        "cloudwatch-dashboard",
    ),
    (
        {"metrics_backend": "cloudwatch"},
        "monitoring/cloudwatch-dashboard.json",
        '"widgets": [',
        '"widgets": [[',
        "syntax",
    ),
    (
        {"metrics_backend": "cloudwatch"},
        "monitoring/cloudwatch-alarms.json",
        '"AlarmName": "airflow-gitops-scheduler-down"',
        '"AlarmName": "scheduler-down"',
        "cloudwatch-alarms",
    ),
    (
        {"metrics_backend": "cloudwatch"},
        "monitoring/cloudwatch-alarms.json",
        '"Namespace": "Airflow/airflow-gitops"',
        '"Namespace": "CWAgent"',
        "cloudwatch-alarms",
    ),
    (
        {"metrics_backend": "cloudwatch"},
        "monitoring/cloudwatch-alarms.json",
        '"AlarmName": "airflow-gitops-dag-import-errors",',
        '"AlarmName": "airflow-gitops-dag-import-errors",\n    "AlarmActions": '
        '["arn:aws:automate:eu-west-1:ec2:terminate"],',
        "cloudwatch-alarms",
    ),
    (
        {"metrics_backend": "cloudwatch"},
        "monitoring/cloudwatch-alarms.json",
        '"AlarmName": "airflow-gitops-dag-import-errors",',
        '"AlarmName": "airflow-gitops-dag-import-errors",\n    "AlarmState": "OK",',
        "cloudwatch-alarms",
    ),
    (
        {"metrics_backend": "cloudwatch"},
        "monitoring/cloudwatch-alarms.json",
        None,
        None,
        "cloudwatch-alarms",
    ),
]


@pytest.mark.parametrize(
    "case", VALIDATE_CASES, ids=[f"{c[-1]}-{i}" for i, c in enumerate(VALIDATE_CASES)]
)
def test_validate_catches_an_edit_that_undoes_the_shape(baked, tmp_path, case):
    answers, relative, find, replace, rule = case
    repo = shutil.copytree(baked(**answers), tmp_path / "repo")
    assert run_make(repo, "validate").returncode == 0  # as generated: clean
    path = repo / relative
    if find is None:
        path.unlink()
    else:
        text = path.read_text()
        assert find in text, f"{relative} no longer has {find!r}"
        path.write_text(text.replace(find, replace, 1))
    result = run_make(repo, "validate", check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    rules = set(re.findall(r"\[([a-z0-9-]+)\]$", result.stdout, re.MULTILINE))
    assert rules == {rule}, result.stdout


# --- The matrix: size x executor x ui_access ----------------------------------------------------


@pytest.mark.parametrize("answers", UI_COMBINATIONS, ids=ui_id)
def test_each_size_executor_and_way_in_renders_its_shape(rendered, answers):
    docs = rendered(**answers)
    production = answers["size"] == "production"
    celery = answers["executor"] == "CeleryExecutor"
    pods = workloads(docs)
    specs = pod_specs(docs)
    for component, spec in specs.items():
        for container in all_containers(spec):
            requests = (container.get("resources") or {}).get("requests") or {}
            assert {"cpu", "memory"} <= set(requests), f"{component}/{container['name']}"
    assert {pods[c]["spec"]["replicas"] for c in REPLICATED} == {2 if production else 1}
    budgets = {
        b["spec"]["selector"]["matchLabels"]["component"]
        for b in of_kind(docs, "PodDisruptionBudget")
    }
    assert budgets == (set(REPLICATED) if production else set())
    assert len(of_kind(docs, "ScaledObject")) == (1 if celery else 0)
    assert ("task-pod" in specs) == (not celery)
    assert len(of_kind(docs, "Ingress")) == (1 if answers["ui_access"] == "alb" else 0)
    assert "airflow-default-deny-ingress" in named(docs, "NetworkPolicy")


# --- Done when: one production bake, everything at once ------------------------------------------

PRODUCTION = {"size": "production", "metrics_scrape": "servicemonitor", **ALB}


def test_a_production_bake_is_sized_replicated_elastic_reachable_and_observed(rendered):
    docs = rendered(**PRODUCTION)
    specs = pod_specs(docs)
    unsized = [
        f"{component}/{c['name']}"
        for component, spec in specs.items()
        for c in all_containers(spec)
        if not {"cpu", "memory"} <= set((c.get("resources") or {}).get("requests") or {})
    ]
    assert not unsized
    pods = workloads(docs)
    budgets = of_kind(docs, "PodDisruptionBudget")
    for component in REPLICATED:
        assert pods[component]["spec"]["replicas"] == 2
        assert any(b["spec"]["selector"]["matchLabels"]["component"] == component for b in budgets)
    (scaler,) = of_kind(docs, "ScaledObject")
    assert scaler["spec"]["scaleTargetRef"]["name"] == "airflow-worker"
    (ingress,) = of_kind(docs, "Ingress")
    assert ingress["metadata"]["annotations"][ALB_ANNOTATION + "certificate-arn"] == CERTIFICATE
    assert of_kind(docs, "ServiceMonitor") and of_kind(docs, "PrometheusRule")
    policies = named(docs, "NetworkPolicy")
    assert {"airflow-redis-policy", "airflow-worker-policy", "airflow-default-deny-ingress"} <= set(
        policies
    )


# --- Metrics to CloudWatch (metrics_backend cloudwatch) --------------------------------------

CLOUDWATCH_COMBINATIONS = [
    {"metrics_backend": "cloudwatch", "executor": e, "aws_pod_credentials": c}
    for e in EXECUTORS
    for c in ("irsa", "pod-identity")
]
AGENT = "airflow-cloudwatch-agent"  # the default release's agent (templates/names.jinja)
# The same Airflow metrics as the Prometheus backend reads, plus the scheduler's heartbeat, named
# as the CloudWatch agent publishes them: the StatsD name's parts joined with "_".
CLOUDWATCH_METRICS = {
    "airflow_" + m.replace(".", "_") for m in AIRFLOW_METRICS | {"scheduler_heartbeat"}
}
REQUIRED_ALARMS = {"scheduler-down", "dag-import-errors", "tasks-stuck-queued"}


@pytest.mark.parametrize("answers", CLOUDWATCH_COMBINATIONS, ids=combo_id)
def test_metrics_reach_cloudwatch_through_a_locked_down_agent(baked, rendered, answers):
    repo, docs = baked(**answers), rendered(**answers)
    stack = yaml.safe_load((repo / "stack.yaml").read_text())
    metrics = stack["metrics"]
    # The chart's exporter is gone and Airflow's StatsD client aims at the agent's Service.
    assert "airflow-statsd" not in named(docs, "Service")
    assert not [d for d in docs if (d["metadata"].get("labels") or {}).get("component") == "statsd"]
    assert not of_kind(docs, "ServiceMonitor", "PrometheusRule")
    config = airflow_config(docs)["metrics"]
    service = named(docs, "Service")[AGENT]
    [statsd_port] = service["spec"]["ports"]
    assert config["statsd_on"] == "True"
    assert config["statsd_host"] == AGENT
    assert int(config["statsd_port"]) == statsd_port["port"] and statsd_port["protocol"] == "UDP"
    # Airflow sends only what the dashboard and alarms read (its own test: re.findall of each
    # comma-separated pattern in the lower-cased name), not the per-DAG and per-task names that
    # would each be a billed custom metric.
    patterns = config["metrics_allow_list"].split(",")

    def sent(name: str) -> bool:
        return any(re.findall(p.strip().lower(), name.lower()) for p in patterns)

    read = AIRFLOW_METRICS | {"scheduler_heartbeat", "pool.open_slots.default_pool"}
    assert all(sent(name) for name in read), [n for n in read if not sent(n)]
    for name in (
        "dag.example_dag.hello.duration",
        "ti.finish.example_dag.hello.success",
        "dagrun.duration.success.example_dag",
        "pool.open_slots",  # the tagged twin of pool.open_slots.<pool>: one series for all pools
        "executor.open_slots",
    ):
        assert not sent(name), name
    # The agent: pinned, non-root, read-only root, no capabilities, sized, writing only emptyDirs.
    deployment = named(docs, "Deployment")[AGENT]
    spec = deployment["spec"]["template"]["spec"]
    assert selects(
        {"matchLabels": service["spec"]["selector"]},
        deployment["spec"]["template"]["metadata"]["labels"],
    )
    [container] = spec["containers"]
    image, tag = container["image"].rsplit(":", 1)
    assert image == "public.ecr.aws/cloudwatch-agent/cloudwatch-agent" and re.fullmatch(
        r"[0-9.]+b?[0-9]*", tag
    )
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] > 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and set(resources["limits"]) == {
        "memory"
    }
    rows = dict(
        (name, numbers)
        for name, *numbers in re.findall(
            r"^\| (\w+) \| (\S+) \| (\S+) \| (\S+) \| .+\|$",
            (repo / "docs" / "production.md").read_text(),
            re.MULTILINE,
        )
    )
    assert "statsd" not in rows  # no exporter, no row for it
    assert rows["cloudwatchAgent"] == [
        resources["requests"]["cpu"],
        resources["requests"]["memory"],
        resources["limits"]["memory"],
    ]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount.get("readOnly") or "emptyDir" in volumes[mount["name"]], mount
    assert container["ports"][0]["containerPort"] == statsd_port["port"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RUN_WITH_IRSA"] == "True"  # the pod's token, never IMDS or a credentials file
    # Its configuration: StatsD on that port into the one namespace its role may write.
    config_map = named(docs, "ConfigMap")[AGENT]
    agent = json.loads(config_map["data"]["cwagentconfig.json"])
    assert agent["metrics"]["namespace"] == metrics["namespace"]
    assert agent["agent"]["region"] == stack["aws"]["region"]
    statsd = agent["metrics"]["metrics_collected"]["statsd"]
    assert statsd["service_address"] == f":{statsd_port['port']}"
    assert statsd["metrics_aggregation_interval"] == 60
    # Its identity: IRSA annotation or a Pod Identity association, with a trust for this SA only.
    account = named(docs, "ServiceAccount")[AGENT]
    assert spec["serviceAccountName"] == AGENT == metrics["agent_service_account"]
    role_arn = f"arn:aws:iam::{stack['aws']['account_id']}:role/{metrics['agent_role']}"
    annotations = account["metadata"].get("annotations", {})
    if answers["aws_pod_credentials"] == "irsa":
        assert annotations["eks.amazonaws.com/role-arn"] == role_arn
    else:
        assert "eks.amazonaws.com/role-arn" not in annotations
    trust = (repo / "iam" / "cloudwatch-agent-trust.json").read_text()
    assert f"{stack['airflow']['namespace']}" in trust and AGENT in trust
    # Only Airflow's pods reach it, on its UDP port.
    agent_pod = Peer(deployment["spec"]["template"]["metadata"]["labels"])
    for source in ("scheduler", "worker", "dag-processor", "triggerer", "api-server"):
        assert allowed(docs, pod(source), agent_pod, statsd_port["port"], "UDP"), source
    stranger = Peer({"app": "something-else"}, namespace="default")
    assert not allowed(docs, stranger, agent_pod, statsd_port["port"], "UDP")
    assert not allowed(docs, pod("worker"), agent_pod, 8080)


def test_the_agent_role_may_put_metrics_into_its_namespace_only(baked):
    repo = baked(metrics_backend="cloudwatch")
    namespace = yaml.safe_load((repo / "stack.yaml").read_text())["metrics"]["namespace"]
    policy = json.loads((repo / "iam" / "cloudwatch-agent-policy.json").read_text())
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "cloudwatch:PutMetricData"
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": namespace}}
    assert not namespace.startswith("AWS/")


def test_the_deploy_role_writes_only_this_projects_dashboard_and_alarms(baked):
    repo = baked(metrics_backend="cloudwatch")
    stack = yaml.safe_load((repo / "stack.yaml").read_text())
    account, region, metrics = stack["aws"]["account_id"], stack["aws"]["region"], stack["metrics"]
    policy = json.loads((repo / "iam" / "deploy-role-policy.json").read_text())
    writes = {
        a: s
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        if a.startswith("cloudwatch:")
    }
    assert set(writes) == {"cloudwatch:PutDashboard", "cloudwatch:PutMetricAlarm"}
    assert writes["cloudwatch:PutDashboard"]["Resource"] == (
        f"arn:aws:cloudwatch::{account}:dashboard/{metrics['dashboard']}"
    )
    alarms = writes["cloudwatch:PutMetricAlarm"]
    assert (
        alarms["Resource"]
        == f"arn:aws:cloudwatch:{region}:{account}:alarm:{metrics['alarm_prefix']}*"
    )
    assert alarms["Condition"] == {
        "ForAllValues:StringLike": {"cloudwatch:AlarmActions": f"arn:aws:sns:{region}:{account}:*"}
    }
    # The prometheus backend's deploy role holds no CloudWatch right at all.
    plain = (baked() / "iam" / "deploy-role-policy.json").read_text()
    assert "cloudwatch:" not in plain


def test_cloudwatch_dashboard_and_alarms_read_what_the_agent_writes(baked):
    repo = baked(metrics_backend="cloudwatch")
    metrics = yaml.safe_load((repo / "stack.yaml").read_text())["metrics"]
    namespace = metrics["namespace"]
    dashboard = json.loads((repo / "monitoring" / "cloudwatch-dashboard.json").read_text())
    widgets = dashboard["widgets"]
    assert REQUIRED_PANELS <= {w["properties"]["title"] for w in widgets}
    read = set()
    for widget in widgets:
        for line in widget["properties"]["metrics"]:
            if isinstance(line[0], dict):  # a SEARCH expression over one namespace
                assert f"{{{namespace}," in line[0]["expression"]
                read |= set(re.findall(r"airflow_[a-z_]+", line[0]["expression"]))
            else:
                assert line[0] == namespace and line[2:4] in (
                    ["metric_type", "gauge"],
                    ["metric_type", "counter"],
                )
                read.add(line[1])
    assert CLOUDWATCH_METRICS <= read
    alarms = json.loads((repo / "monitoring" / "cloudwatch-alarms.json").read_text())
    names = {a["AlarmName"].removeprefix(metrics["alarm_prefix"]) for a in alarms}
    assert names == REQUIRED_ALARMS
    for alarm in alarms:
        assert alarm["AlarmName"].startswith(metrics["alarm_prefix"])
        stats = [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
        for metric in [alarm] if "MetricName" in alarm else stats:
            assert metric["Namespace"] == namespace and metric["MetricName"] in CLOUDWATCH_METRICS
    by_name = {a["AlarmName"].removeprefix(metrics["alarm_prefix"]): a for a in alarms}
    # A scheduler that stops sending heartbeats sends nothing: missing data must alarm.
    assert by_name["scheduler-down"]["TreatMissingData"] == "breaching"

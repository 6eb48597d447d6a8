"""Task logs in S3, asserted on what the real chart renders (issue 15).

Each combination is baked and rendered by its own `make manifests` (tests/helm_chart.py). The
expected bucket, prefix, roles and ServiceAccounts are read from the bake's stack.yaml and
iam/ documents, never from our values file: what is checked is that the objects helm produced
agree with the facts and the IAM that bootstrap writes.
"""

from __future__ import annotations

import json

import pytest
import yaml
from helm_chart import render
from test_chart_render import airflow_config, named, of_kind, pod_specs

IRSA = "eks.amazonaws.com/role-arn"
MODES = ["s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle"]
COMBINATIONS = [
    {"dag_source": m, "executor": e}
    for m in MODES
    for e in ("CeleryExecutor", "KubernetesExecutor")
] + [{"dag_source": "git-sync", "airflow_release": "af3", "namespace": "data-airflow"}]


def combo_id(answers: dict) -> str:
    return "-".join(answers.values())


@pytest.fixture(scope="module")
def rendered(baked):
    cache: dict[tuple, tuple] = {}

    def _rendered(**answers: str):
        key = tuple(sorted(answers.items()))
        if key not in cache:
            repo = baked(**answers)
            stack = yaml.safe_load((repo / "stack.yaml").read_text())
            cache[key] = (repo, stack, render(repo))
        return cache[key]

    return _rendered


def log_writers(specs: dict, answers: dict) -> list[str]:
    """Components that run tasks or triggers, so write task logs."""
    task_runner = "task-pod" if answers.get("executor") == "KubernetesExecutor" else "worker"
    return ["triggerer", task_runner]


def trust_subjects(repo, trust_file: str) -> set[str]:
    document = json.loads((repo / "iam" / trust_file).read_text())
    subjects = set()
    for statement in document["Statement"]:
        for key, value in statement["Condition"]["StringEquals"].items():
            if key.endswith(":sub"):
                subjects.update(value if isinstance(value, list) else [value])
    return subjects


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combo_id)
def test_airflow_writes_task_logs_to_the_log_bucket_prefix(rendered, answers):
    _, stack, docs = rendered(**answers)
    logging = airflow_config(docs)["logging"]
    assert logging["remote_logging"] == "True"
    wanted = f"s3://{stack['logs']['bucket']}/{stack['logs']['prefix']}"
    assert logging["remote_base_log_folder"] == wanted
    # No connection: the pod's own IRSA role (an aws_default someone creates can't take over).
    assert logging["remote_log_conn_id"] == ""
    # Never the DAG bucket: the pods that write logs must not be able to write DAGs.
    if "bucket" in stack["dags"]:
        assert stack["dags"]["bucket"] != stack["logs"]["bucket"]


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combo_id)
def test_no_log_claim_remains(rendered, answers):
    _, _, docs = rendered(**answers)
    claims = [c["metadata"]["name"] for c in of_kind(docs, "PersistentVolumeClaim")]
    assert not [c for c in claims if "log" in c], claims
    for workload in of_kind(docs, "StatefulSet"):
        templates = [
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        ]
        assert "logs" not in templates, workload["metadata"]["name"]
    for component, spec in pod_specs(docs).items():
        for volume in spec.get("volumes") or []:
            if volume["name"] == "logs":
                assert "emptyDir" in volume, f"{component}: logs volume {volume}"


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combo_id)
def test_log_writers_and_the_api_server_run_as_their_irsa_roles(rendered, answers):
    repo, stack, docs = rendered(**answers)
    logs, namespace = stack["logs"], stack["airflow"]["namespace"]
    accounts = named(docs, "ServiceAccount")
    specs = pod_specs(docs)
    account_id = stack["aws"]["account_id"]
    writer_trust = (
        "dag-reader-trust.json"
        if stack["dags"]["source"] in ("s3-sync", "s3-bundle")
        else "airflow-worker-trust.json"
    )
    for component in log_writers(specs, answers):
        name = specs[component]["serviceAccountName"]
        assert name == logs["writer_service_account"], component
        role = accounts[name]["metadata"]["annotations"][IRSA]
        assert role == f"arn:aws:iam::{account_id}:role/{logs['writer_role']}", component
        assert f"system:serviceaccount:{namespace}:{name}" in trust_subjects(repo, writer_trust)
    api = specs["api-server"]["serviceAccountName"]
    assert api == logs["reader_service_account"]
    role = accounts[api]["metadata"]["annotations"][IRSA]
    assert role == f"arn:aws:iam::{account_id}:role/{logs['reader_role']}"
    assert trust_subjects(repo, "api-server-trust.json") == {
        f"system:serviceaccount:{namespace}:{api}"
    }
    # The chart's own ServiceAccounts for these pods would carry no role: none is rendered.
    release = stack["airflow"]["release"]
    for chart_default in ("triggerer", "worker", "worker-kubernetes"):
        chart_name = f"{release}-{chart_default}"
        if chart_name != logs["writer_service_account"]:
            assert chart_name not in accounts, chart_name


@pytest.mark.parametrize("answers", COMBINATIONS[:2], ids=combo_id)
def test_airflow_resolves_connections_from_this_projects_secrets_prefixes(rendered, answers):
    repo, stack, docs = rendered(**answers)
    secrets = airflow_config(docs)["secrets"]
    assert secrets["backend"] == (
        "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
    )
    kwargs = json.loads(secrets["backend_kwargs"])
    assert kwargs["connections_prefix"] == stack["secrets"]["connections_prefix"]
    assert kwargs["variables_prefix"] == stack["secrets"]["variables_prefix"]
    assert kwargs["config_prefix"] is None
    assert kwargs["region_name"] == stack["aws"]["region"]
    # The pods that resolve them may read exactly those prefixes.
    policy = json.loads((repo / "iam" / "secrets-read-policy.json").read_text())
    arn = f"arn:aws:secretsmanager:{stack['aws']['region']}:{stack['aws']['account_id']}:secret:"
    [statement] = policy["Statement"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert sorted(statement["Resource"]) == sorted(
        f"{arn}{stack['secrets'][k]}/*" for k in ("connections_prefix", "variables_prefix")
    )

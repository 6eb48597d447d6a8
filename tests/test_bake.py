"""Bake every supported combination and check what comes out, file by file and across files."""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from helm_chart import chart_defaults, chart_schema


MODES = ["s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle"]
EXECUTORS = ["CeleryExecutor", "KubernetesExecutor"]
S3_MODES = {"s3-sync", "s3-bundle"}

# Every DAG mode with every executor, both sync images, then answers that move other levers.
SUPPORTED = (
    [dict(dag_source=m, executor=e) for m in MODES for e in EXECUTORS]
    + [dict(dag_source="s3-sync", executor=e, s3_sync_image="aws-cli") for e in EXECUTORS]
    + [
        dict(
            github_oidc_subject="immutable",
            github_owner_id="1234567",
            github_repository_id="89012345",
        ),
        dict(
            namespace="data-airflow",
            airflow_release="af3",
            project="team-dags",
            aws_region="us-east-2",
        ),
        dict(
            dag_source="git-sync",
            git_repo_url="https://github.com/example-org/dags.git",
            git_known_hosts="",
        ),
        dict(dag_source="efs", efs_throughput_mode="bursting", efs_volume_size="20Gi"),
        dict(dag_source="s3-bundle", dag_prefix="teams/data/dags", sync_interval_seconds="120"),
        dict(
            size="production",
            executor="CeleryExecutor",
            ui_access="alb",
            alb_scheme="internet-facing",
            alb_certificate_arn="arn:aws:acm:eu-west-1:123456789012:certificate/0f0e0d0c-1b1a-2d2c-3f3e-4a4b4c4d4e4f",
        ),
        dict(
            size="production",
            executor="KubernetesExecutor",
            dag_source="git-sync",
            metrics_scrape="servicemonitor",
        ),
        # Metrics to CloudWatch, with each kind of pod credentials; metrics_scrape is then moot.
        dict(
            metrics_backend="cloudwatch", executor="CeleryExecutor", metrics_scrape="servicemonitor"
        ),
        dict(
            metrics_backend="cloudwatch",
            executor="KubernetesExecutor",
            dag_source="efs",
            aws_pod_credentials="pod-identity",
        ),
    ]
)


def combo_id(answers: dict) -> str:
    return "-".join(f"{v}" for v in answers.values()) or "defaults"


# Template text that reached a generated file: what a file copied without rendering
# (`_copy_without_render`) would carry if it used a variable, a derived name or a tag.
UNRENDERED = re.compile(
    r"\{\{-? *(cookiecutter|names|sizes|c)\.|cookiecutter\.[a-z_]+ *\}\}|\{#-? "
    r"|\{%-? *(if|elif|else|endif|for|endfor|set|raw|import|from|include|macro|filter)\b"
)


def load_all(repo: Path) -> dict[str, list]:
    """Every YAML and JSON file of the repo, parsed: relative path -> list of documents."""
    parsed = {}
    for path in sorted(repo.rglob("*")):
        if path.suffix in {".yaml", ".yml"}:
            parsed[str(path.relative_to(repo))] = list(yaml.safe_load_all(path.read_text()))
        elif path.suffix == ".json":
            parsed[str(path.relative_to(repo))] = [json.loads(path.read_text())]
    return parsed


@lru_cache(maxsize=1)
def chart_contract():
    schema, defaults = chart_schema(), chart_defaults()
    return Draft7Validator(schema), defaults


def merged(base: dict, overrides: dict) -> dict:
    """Helm's merge of a values file over the chart's defaults: maps merge, the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def containers_in_values(values: dict):
    """(where, container) for every container our values add to any pod."""
    for component in ("dagProcessor", "triggerer", "scheduler", "apiServer"):
        yield from _containers(values.get(component, {}), component)
    workers = values.get("workers", {})
    for flavour in ("celery", "kubernetes"):
        yield from _containers(workers.get(flavour, {}), f"workers.{flavour}")


def _containers(section: dict, where: str):
    for key in ("extraContainers", "extraInitContainers"):
        for container in section.get(key) or []:
            yield f"{where}.{key}", container


@pytest.fixture(params=SUPPORTED, ids=combo_id)
def case(request, baked):
    repo = baked(**request.param)
    stack = yaml.safe_load((repo / "stack.yaml").read_text())
    values = yaml.safe_load((repo / "helm" / "values.yaml").read_text())
    return request.param, repo, stack, values


def test_every_yaml_and_json_file_parses(case):
    _, repo, _, _ = case
    parsed = load_all(repo)
    assert "stack.yaml" in parsed and "helm/values.yaml" in parsed
    assert any(name.startswith("iam/") for name in parsed)


def test_no_unrendered_template_text(case):
    _, repo, _, _ = case
    for path in repo.rglob("*"):
        if path.is_file() and path.suffix not in {".pyc"}:
            text = path.read_text(errors="replace")
            assert not UNRENDERED.search(text), (
                f"unrendered template text in {path.relative_to(repo)}"
            )
            assert "S3_SYNC_IMAGE_TAG" not in text, (
                f"unpinned sync image tag in {path.relative_to(repo)}"
            )


def test_unused_files_are_gone_and_no_empty_folders(case):
    answers, repo, stack, _ = case
    mode = stack["dags"]["source"]
    present = {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()}
    prometheus = stack["metrics"]["backend"] == "prometheus"
    monitor = prometheus and answers.get("metrics_scrape") == "servicemonitor"
    expect = {
        "k8s/serviceaccounts.yaml": True,  # the API server reads task logs in every mode
        "iam/airflow-worker-trust.json": mode not in S3_MODES,
        "iam/dag-read-policy.json": mode in S3_MODES,
        "iam/dag-reader-trust.json": mode in S3_MODES,
        "k8s/efs-pvc.yaml": mode == "efs",
        "k8s/efs-storageclass.yaml": mode == "efs",
        "iam/efs-csi-driver-policy.json": mode == "efs",
        "iam/efs-csi-driver-trust.json": mode == "efs",
        "k8s/priorityclass.yaml": answers.get("size") == "production",
        "k8s/deploy-extensions-rbac.yaml": stack["airflow"]["executor"] == "CeleryExecutor"
        or monitor,
        "k8s/servicemonitor.yaml": monitor,
        "k8s/prometheusrule.yaml": monitor,
        "monitoring/alert-rules.yaml": prometheus and not monitor,
        "monitoring/airflow-dashboard.json": prometheus,
        "k8s/cloudwatch-agent.yaml": not prometheus,
        "iam/cloudwatch-agent-policy.json": not prometheus,
        "iam/cloudwatch-agent-trust.json": not prometheus,
        "monitoring/cloudwatch-dashboard.json": not prometheus,
        "monitoring/cloudwatch-alarms.json": not prometheus,
    }
    for name, wanted in expect.items():
        assert (name in present) == wanted, (
            f"{name} {'missing' if wanted else 'left over'} in {mode}"
        )
    own_image = mode == "s3-sync" and stack["dags"].get("sync_image") == "own-image"
    assert any(p.startswith("images/s3-sync/") for p in present) == own_image
    aws_cli = mode == "s3-sync" and stack["dags"].get("sync_image") == "aws-cli"
    assert any(p.startswith("images/aws-cli/") for p in present) == aws_cli
    empty = [p for p in repo.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert not empty, f"empty folders left: {empty}"


def test_values_fit_the_official_chart_schema(case):
    """What helm itself checks: our overrides merged over the chart's defaults, against its schema."""
    _, _, _, values = case
    validator, defaults = chart_contract()
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message[:200]}"
        for e in validator.iter_errors(merged(defaults, values))
    ]
    assert errors == []


def test_dags_reach_every_component_that_reads_them(case):
    _, repo, stack, values = case
    mode, executor = stack["dags"]["source"], stack["airflow"]["executor"]
    worker_key = "kubernetes" if executor == "KubernetesExecutor" else "celery"
    readers = {
        "dagProcessor": values.get("dagProcessor", {}),
        "triggerer": values.get("triggerer", {}),
        f"workers.{worker_key}": values.get("workers", {}).get(worker_key, {}),
    }
    assert values["executor"] == executor
    if mode == "s3-sync":
        for name, section in readers.items():
            inits = [
                c for c in section.get("extraInitContainers", []) if c["name"] == "s3-sync-init"
            ]
            assert inits, f"{name} has no first-sync init container"
            mounts = {(m["name"], m["mountPath"]) for m in section.get("extraVolumeMounts", [])}
            assert ("s3-dags", stack["dags"]["mount_path"]) in mounts, (
                f"{name} does not mount the DAGs"
            )
            assert "s3-dags" in {v["name"] for v in section.get("extraVolumes", [])}
            sidecars = [c for c in section.get("extraContainers", []) if c["name"] == "s3-sync"]
            # Task pods sync once and must not keep a sidecar running after the task.
            assert bool(sidecars) == (name != "workers.kubernetes"), name
        assert values["config"]["core"]["dags_folder"].startswith(stack["dags"]["mount_path"])
    elif mode == "git-sync":
        git = values["dags"]["gitSync"]
        assert git["enabled"] is True
        assert git["repo"] == stack["dags"]["git"]["repo_url"]
        assert git["subPath"] == stack["dags"]["git"]["subdir"]
        if git["repo"].startswith(("git@", "ssh://")):
            assert git["knownHosts"].strip() and git["sshKeySecret"]
    elif mode == "efs":
        # Mounted read-only by every reader; the chart's dags.persistence would mount it writable.
        assert "persistence" not in values.get("dags", {})
        for name, section in readers.items():
            volume = section["extraVolumes"][0]["persistentVolumeClaim"]
            assert volume == {"claimName": stack["dags"]["efs"]["claim"], "readOnly": True}, name
            assert section["extraVolumeMounts"][0]["readOnly"] is True, name
    else:
        bundles = values["dagProcessor"]["dagBundleConfigList"]
        classpath = {
            "git-bundle": "airflow.providers.git.bundles.git.GitDagBundle",
            "s3-bundle": "airflow.providers.amazon.aws.bundles.s3.S3DagBundle",
        }[mode]
        assert [b["classpath"] for b in bundles] == [classpath]


def test_names_agree_across_files(case):
    _, repo, stack, values = case
    manifests = [
        d for name, docs in load_all(repo).items() if name.startswith("k8s/") for d in docs if d
    ]
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in manifests:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    namespace = stack["airflow"]["namespace"]
    assert set(by_kind["Namespace"]) == {namespace}
    for kind, docs in by_kind.items():
        for doc in docs.values():
            if kind not in {"Namespace", "StorageClass", "PriorityClass"}:  # cluster-scoped
                assert doc["metadata"]["namespace"] == namespace, (
                    f"{kind} {doc['metadata']['name']}"
                )

    # Every ServiceAccount a pod uses exists: either the chart creates it, or k8s/ has it.
    service_accounts = by_kind.get("ServiceAccount", {})
    for section in _service_account_sections(values):
        if section.get("create") is False:
            assert section.get("name") in service_accounts, (
                f"ServiceAccount {section.get('name')} missing in k8s/"
            )

    mode = stack["dags"]["source"]
    if mode in S3_MODES:
        account = stack["aws"]["account_id"]
        bucket, prefix = stack["dags"]["bucket"], stack["dags"]["prefix"]
        # The reader (triggerer, workers, task pods) and the dag-processor's parser: one role.
        readers = [
            service_accounts[stack["dags"][key]]
            for key in ("reader_service_account", "parser_service_account")
        ]
        role_arn = f"arn:aws:iam::{account}:role/{stack['dags']['reader_role']}"
        trust = json.loads((repo / "iam" / "dag-reader-trust.json").read_text())
        condition = trust["Statement"][0]["Condition"]["StringEquals"]
        if stack["aws"]["pod_credentials"] == "irsa":
            for reader in readers:
                assert reader["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role_arn
            assert condition["EKS_OIDC_ISSUER:sub"] == [
                f"system:serviceaccount:{namespace}:{r['metadata']['name']}" for r in readers
            ]
            assert condition["EKS_OIDC_ISSUER:aud"] == "sts.amazonaws.com"
        else:
            assert condition["aws:RequestTag/kubernetes-service-account"] == [
                r["metadata"]["name"] for r in readers
            ]
        policy = json.loads((repo / "iam" / "dag-read-policy.json").read_text())
        resources = {
            r
            for s in policy["Statement"]
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        }
        assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{prefix}/*"}
        if mode == "s3-sync":
            for where, container in containers_in_values(values):
                text = json.dumps(container)
                assert bucket in text and prefix in text, where
        else:
            kwargs = values["dagProcessor"]["dagBundleConfigList"][0]["kwargs"]
            assert (kwargs["bucket_name"], kwargs["prefix"]) == (bucket, prefix)
    if mode == "efs":
        claim = values["dagProcessor"]["extraVolumes"][0]["persistentVolumeClaim"]["claimName"]
        assert claim == stack["dags"]["efs"]["claim"]
        pvc = by_kind["PersistentVolumeClaim"][claim]
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        assert pvc["spec"]["storageClassName"] in by_kind["StorageClass"]
        assert (
            by_kind["StorageClass"][pvc["spec"]["storageClassName"]]["provisioner"]
            == "efs.csi.aws.com"
        )


def _service_account_sections(values: dict):
    for component in ("dagProcessor", "triggerer", "scheduler", "apiServer"):
        if "serviceAccount" in values.get(component, {}):
            yield values[component]["serviceAccount"]
    for flavour in ("celery", "kubernetes"):
        section = values.get("workers", {}).get(flavour, {})
        if "serviceAccount" in section:
            yield section["serviceAccount"]


def test_deploy_trust_pins_repository_and_environment(case):
    answers, repo, stack, _ = case
    trust = json.loads((repo / "iam" / "deploy-role-trust.json").read_text())
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    github = stack["github"]
    if github["oidc_subject"] == "immutable":
        owner, name = github["repository"].split("/")
        repo_part = f"{owner}@{github['owner_id']}/{name}@{github['repository_id']}"
    else:
        repo_part = github["repository"]
    workflow = (
        f"{github['repository']}/.github/workflows/deploy.yml@refs/heads/{github['deploy_branch']}"
    )
    assert condition == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": f"repo:{repo_part}:environment:{github['environment']}:job_workflow_ref:{workflow}",
    }


def test_security_defaults(case):
    _, repo, _, values = case
    pod = values["securityContexts"]["pod"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert values["securityContexts"]["containers"]["capabilities"]["drop"] == ["ALL"]
    assert values["postgresql"]["enabled"] is False, (
        "the bundled PostgreSQL ships a default password"
    )
    for where, container in containers_in_values(values):
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (
            f"{where}: {image}"
        )
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"], where
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == [
            "ALL"
        ], where
    committed = "\n".join(p.read_text(errors="replace") for p in repo.rglob("*") if p.is_file())
    assert not re.search(r"AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY|postgres:postgres", committed)


def test_answers_are_recorded_for_regeneration(case):
    answers, repo, _, _ = case
    recorded = json.loads((repo / ".cookiecutter.json").read_text())["cookiecutter"]
    for key, value in answers.items():
        assert recorded[key] == value
    assert not any(key.startswith("_") for key in recorded)

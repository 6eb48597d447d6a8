"""What a running cluster needs, asserted on the objects the real chart renders.

Each combination is baked, then rendered by its own `make manifests` with the chart package the
project carries (tests/chart/) and the helm the deploy pins: k8s/ plus `helm template` with the
release arguments `deploy-chart` upgrades with. Nothing here reads our values file: only the
Deployments, StatefulSets, the KubernetesExecutor pod template, Roles and claims that helm
produced, which is what the API server would be sent.
"""

from __future__ import annotations

import configparser
import json

import pytest
import yaml

MODES = ["s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle"]
EXECUTORS = ["CeleryExecutor", "KubernetesExecutor"]
COMBINATIONS = (
    [{"dag_source": m, "executor": e} for m in MODES for e in EXECUTORS]
    + [{"dag_source": "s3-sync", "executor": e, "s3_sync_image": "aws-cli"} for e in EXECUTORS]
    # Another release and namespace: every name the chart derives must still line up.
    + [{"dag_source": m, "airflow_release": "af3", "namespace": "data-airflow"} for m in MODES]
)
DAG_FOLDER = "/opt/airflow/dags"
SYNC_CONTAINERS = ("s3-sync", "git-sync")  # containers that write DAGs (everything else reads)
GIT_SYNC_IMAGE_USER = 65533  # git-sync's Dockerfile: USER 65533:65533


def combo_id(answers: dict) -> str:
    return "-".join(answers.values())


def of_kind(docs: list[dict], *kinds: str) -> list[dict]:
    return [d for d in docs if d.get("kind") in kinds]


def named(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in of_kind(docs, kind)}


def airflow_config(docs: list[dict]) -> configparser.ConfigParser:
    config_map = next(d for d in of_kind(docs, "ConfigMap") if "airflow.cfg" in d.get("data", {}))
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(config_map["data"]["airflow.cfg"])
    return parser


def task_pod_template(docs: list[dict]) -> dict | None:
    for config_map in of_kind(docs, "ConfigMap"):
        text = config_map.get("data", {}).get("pod_template_file.yaml")
        if text:
            return yaml.safe_load(text)
    return None


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    """component label -> pod spec, for every workload and the KubernetesExecutor pod template."""
    specs = {}
    for workload in of_kind(docs, "Deployment", "StatefulSet", "Job"):
        template = workload["spec"]["template"]
        specs[template["metadata"]["labels"].get("component", workload["metadata"]["name"])] = (
            template["spec"]
        )
    template = task_pod_template(docs)
    if template is not None:
        specs["task-pod"] = template["spec"]
    return specs


def dag_readers(docs: list[dict], answers: dict) -> dict[str, dict]:
    """The pods that read DAG files in Airflow 3: dag-processor, triggerer, workers or task pods."""
    specs = pod_specs(docs)
    wanted = ["dag-processor", "triggerer"]
    wanted.append("task-pod" if answers.get("executor") == "KubernetesExecutor" else "worker")
    missing = [c for c in wanted if c not in specs]
    assert not missing, f"no rendered pod for {missing}"
    return {c: specs[c] for c in wanted}


def airflow_container(spec: dict) -> dict:
    """The pod's Airflow process: the first container (the chart puts it first)."""
    return spec["containers"][0]


def init_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers") or []  # the task pod template renders `null` when empty


def all_containers(spec: dict) -> list[dict]:
    return init_containers(spec) + spec["containers"]


def volumes(spec: dict) -> dict[str, dict]:
    return {v["name"]: v for v in spec.get("volumes") or []}


def dag_mount(container: dict) -> dict | None:
    return next(
        (m for m in container.get("volumeMounts") or [] if m["mountPath"] == DAG_FOLDER), None
    )


# --- DAGs reach every reader --------------------------------------------------------------------


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combo_id)
def test_dags_reach_every_component_that_reads_them(rendered, answers):
    docs = rendered(**answers)
    source = answers["dag_source"]
    claims = named(docs, "PersistentVolumeClaim")
    for component, spec in dag_readers(docs, answers).items():
        where = f"{combo_id(answers)}: {component}"
        if source in ("git-bundle", "s3-bundle"):
            continue  # the bundle is fetched by Airflow itself; checked through airflow.cfg below
        mount = dag_mount(airflow_container(spec))
        assert mount, f"{where}: nothing mounted at {DAG_FOLDER}"
        volume = volumes(spec)[mount["name"]]
        writers = [
            c
            for c in all_containers(spec)
            if any(
                m["name"] == mount["name"] and not m.get("readOnly")
                for m in c.get("volumeMounts") or []
            )
            and c["name"].startswith(SYNC_CONTAINERS)
        ]
        if source == "efs":
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert claim in claims, f"{where}: mounts claim {claim!r}, which nothing creates"
            assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"], where
            continue
        assert "emptyDir" in volume, f"{where}: DAG volume {volume}"
        init = [c for c in writers if c in init_containers(spec)]
        assert init, f"{where}: no init container fills the DAG volume before Airflow starts"
        sidecars = [c for c in writers if c in spec["containers"]]
        if component == "task-pod":
            assert not sidecars, f"{where}: a sidecar would keep the task pod alive after its task"
        else:
            assert sidecars, f"{where}: nothing keeps the DAG volume current"
    if source in ("git-bundle", "s3-bundle"):
        config = airflow_config(docs)
        bundles = json.loads(config["dag_processor"]["dag_bundle_config_list"])
        classpath = {
            "git-bundle": "airflow.providers.git.bundles.git.GitDagBundle",
            "s3-bundle": "airflow.providers.amazon.aws.bundles.s3.S3DagBundle",
        }[source]
        assert [b["classpath"] for b in bundles] == [classpath]
    if source == "s3-sync":
        # Airflow reads the published snapshot, never the folder the agent writes into.
        assert airflow_config(docs)["core"]["dags_folder"] == f"{DAG_FOLDER}/current"


@pytest.mark.parametrize(
    "answers", [c for c in COMBINATIONS if c["dag_source"] == "git-sync"], ids=combo_id
)
def test_git_sync_runs_as_its_image_user(rendered, answers):
    containers = [
        c
        for spec in pod_specs(rendered(**answers)).values()
        for c in all_containers(spec)
        if c["name"].startswith("git-sync")
    ]
    assert len(containers) >= 5  # dag-processor, triggerer, workers or task pods (init + sidecar)
    for container in containers:
        context = container["securityContext"]
        assert context["runAsUser"] == GIT_SYNC_IMAGE_USER, container["name"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize(
    "answers", [c for c in COMBINATIONS if c["dag_source"] == "git-bundle"], ids=combo_id
)
def test_git_bundle_pins_the_host_key(rendered, answers):
    docs = rendered(**answers)
    config_maps = named(docs, "ConfigMap")
    for component, spec in dag_readers(docs, answers).items():
        mount = next(
            m for m in airflow_container(spec)["volumeMounts"] if m["name"] == "git-known-hosts"
        )
        source = volumes(spec)["git-known-hosts"]["configMap"]["name"]
        assert source in config_maps, f"{component}: ConfigMap {source!r} is not created"
        host, key_type, _key = config_maps[source]["data"]["known_hosts"].split()[:3]
        assert (host, key_type) == ("github.com", "ssh-ed25519")
        assert mount["readOnly"] is True and mount["mountPath"] == "/opt/airflow/git-known-hosts"
        # Every reader fetches the bundle itself, so each one resolves the git connection.
        env = {e["name"]: e for e in airflow_container(spec).get("env", [])}
        connection = env["AIRFLOW_CONN_GIT_DAGS"]["valueFrom"]["secretKeyRef"]
        release = answers.get("airflow_release", "airflow")
        assert (connection["name"], connection["key"]) == (
            f"{release}-git-connection",
            "connection",
        )


# --- read-only DAGs, storage, identities -----------------------------------------------------------


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combo_id)
def test_dag_volumes_are_read_only_in_every_airflow_container(rendered, answers):
    for component, spec in pod_specs(rendered(**answers)).items():
        pod_volumes = volumes(spec)
        for container in all_containers(spec):
            if container["name"].startswith(SYNC_CONTAINERS):
                continue
            mount = dag_mount(container)
            if mount is None:
                continue
            assert mount.get("readOnly") is True, f"{component}/{container['name']} may write DAGs"
            claim = pod_volumes[mount["name"]].get("persistentVolumeClaim")
            if claim:
                assert claim.get("readOnly") is True, (
                    f"{component}: the DAG claim is attached writable"
                )


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combo_id)
def test_every_claim_names_a_storage_class_the_repo_creates(rendered, answers):
    docs = rendered(**answers)
    classes = set(named(docs, "StorageClass"))
    claims = [(c["metadata"]["name"], c["spec"]) for c in of_kind(docs, "PersistentVolumeClaim")]
    for stateful_set in of_kind(docs, "StatefulSet"):
        claims += [
            (f"{stateful_set['metadata']['name']}/{t['metadata']['name']}", t["spec"])
            for t in stateful_set["spec"].get("volumeClaimTemplates", [])
        ]
    # Task logs live in S3 (no log claims), so only the Celery broker and the EFS DAG volume
    # claim storage; a KubernetesExecutor repo with another DAG source has none.
    if answers.get("executor") != "KubernetesExecutor" or answers["dag_source"] == "efs":
        assert claims, "the combination renders no claim at all"
    for name, spec in claims:
        assert spec.get("storageClassName") in classes, (
            f"claim {name} names StorageClass {spec.get('storageClassName')!r}; the repo creates {sorted(classes)}"
        )
    provisioners = {c["provisioner"] for c in named(docs, "StorageClass").values()}
    assert "ebs.csi.aws.com" in provisioners
    ebs = next(
        c for c in named(docs, "StorageClass").values() if c["provisioner"] == "ebs.csi.aws.com"
    )
    assert ebs["parameters"] == {"type": "gp3", "encrypted": "true"}
    assert ebs["volumeBindingMode"] == "WaitForFirstConsumer"  # a volume in the pod's own zone


def _can_launch_pods(role: dict) -> bool:
    for rule in role.get("rules", []):
        resources, verbs = set(rule.get("resources", [])), set(rule.get("verbs", []))
        if resources & {"pods", "*"} and verbs & {"create", "*"}:
            return True
        if resources & {"pods/exec", "*"}:
            return True
    return False


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combo_id)
def test_the_dag_processor_cannot_launch_or_exec_into_pods(rendered, answers):
    docs = rendered(**answers)
    account = pod_specs(docs)["dag-processor"].get("serviceAccountName")
    roles = {**named(docs, "Role"), **named(docs, "ClusterRole")}
    bindings = of_kind(docs, "RoleBinding", "ClusterRoleBinding")
    assert bindings, "the chart rendered no RoleBinding: the check below would prove nothing"
    for binding in bindings:
        subjects = {s["name"] for s in binding.get("subjects", []) if s["kind"] == "ServiceAccount"}
        if account in subjects:
            role = roles[binding["roleRef"]["name"]]
            assert not _can_launch_pods(role), (
                f"dag-processor ServiceAccount {account!r} is bound to {role['metadata']['name']}"
            )
    # ...while the accounts that must launch pods still can (the check above is not vacuous).
    launcher = next(b for b in bindings if _can_launch_pods(roles[b["roleRef"]["name"]]))
    assert launcher["subjects"]


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combo_id)
def test_every_service_account_and_claim_a_pod_references_exists(rendered, answers):
    docs = rendered(**answers)
    accounts, claims = set(named(docs, "ServiceAccount")), set(named(docs, "PersistentVolumeClaim"))
    config_maps, secrets = set(named(docs, "ConfigMap")), set(named(docs, "Secret"))
    for component, spec in pod_specs(docs).items():
        account = spec.get("serviceAccountName")
        assert account in accounts, f"{component}: ServiceAccount {account!r} is not created"
        for volume in spec.get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (
                    f"{component}: {volume}"
                )
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{component}: {volume}"
            if "secret" in volume and volume["secret"]["secretName"] not in secrets:
                # Secrets the team creates by hand (deploy key): named in stack.yaml, never rendered.
                assert answers["dag_source"] == "git-sync", f"{component}: {volume}"


@pytest.mark.parametrize(
    "answers",
    [c for c in COMBINATIONS if c["dag_source"] in ("s3-sync", "s3-bundle")],
    ids=combo_id,
)
def test_s3_readers_run_as_irsa_service_accounts(rendered, answers):
    docs = rendered(**answers)
    accounts = named(docs, "ServiceAccount")
    used = set()
    for component, spec in dag_readers(docs, answers).items():
        account = accounts[spec["serviceAccountName"]]
        role = account["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
        assert role.endswith(":role/airflow-gitops-dag-reader"), (
            f"{component}: {account['metadata']}"
        )
        used.add(spec["serviceAccountName"])
    # The dag-processor has an identity of its own; the others share the launcher one.
    assert len(used) == 2


@pytest.mark.parametrize("answers", COMBINATIONS[:2] + COMBINATIONS[-1:], ids=combo_id)
def test_validate_checks_the_rendered_pods_as_admission_would(baked, rendered, answers):
    """`validate --rendered` (the pull-request workflow runs it on the same stream) passes on
    what the chart renders, and refuses a rendered pod the namespace's Pod Security forbids."""
    import subprocess
    import sys

    repo = baked(**answers)
    rendered(**answers)  # writes build/manifests.yaml
    stream = repo / "build" / "manifests.yaml"
    command = [sys.executable, "-m", "airflow_gitops", "validate", "--rendered", str(stream)]
    clean = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    bad = repo.parent / "with-host-path.yaml"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "debug", "namespace": "airflow"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.37"}],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        },
    }
    bad.write_text(stream.read_text() + "---\n" + yaml.safe_dump(pod))
    command[-1] = str(bad)
    refused = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "hostPath volumes" in refused.stdout and "[pod-security]" in refused.stdout

"""The commands the workflows run: render, image-tag, ci-facts, ensure-secrets, efs-publish,
manifests. Each test builds the small repository it needs in a tmp dir; AWS is a moto server on
127.0.0.1 and kubectl/helm are fakes that record their calls."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import io
from pathlib import Path

import boto3
import pytest
import yaml

from airflow_gitops import ci_facts, cluster_secrets, efs_publish, image_tag, manifests, render
from airflow_gitops.errors import ToolkitError, UsageError
from airflow_gitops.local_aws import aws_env, moto_server

from repos import REPO  # the default bake

REGION = "eu-west-1"
REPOSITORY = "demo/s3-sync"
REGISTRY = f"123456789012.dkr.ecr.{REGION}.amazonaws.com"

STACK = {
    "project": "demo",
    "github": {"repository": "o/demo", "deploy_branch": "main", "environment": "production"},
    "aws": {"account_id": "123456789012", "region": REGION, "deploy_role": "demo-deploy"},
    "eks": {"cluster_name": "c1"},
    "airflow": {
        "namespace": "airflow",
        "release": "airflow",
        "chart_version": "1.22.0",
        "version": "3.2.2",
        "executor": "CeleryExecutor",
    },
    "dags": {"source": "s3-sync", "sync_image": "own-image"},
    "images": {"s3_sync_repository": REPOSITORY, "airflow": "apache/airflow:3.2.2"},
}
VALUES = f"""\
# a comment that must survive
dagProcessor:
  extraInitContainers: &init
    - name: s3-sync-init
      image: "{REGISTRY}/{REPOSITORY}:placeholder-tag"
  extraContainers:
    - name: s3-sync
      image: "{REGISTRY}/{REPOSITORY}:src-0000000000000000"
triggerer:
  extraInitContainers: *init
fernetKeySecretName: airflow-fernet-key
apiSecretKeySecretName: airflow-api-secret-key
jwtSecretName: airflow-jwt-secret
data:
  metadataSecretName: airflow-metadata-db
"""
DOCKERFILE = """\
FROM python:3.13.7-slim-bookworm
COPY requirements.txt /tmp/requirements.txt
COPY agent/ /app/agent/
COPY --from=builder /x /y
COPY ["one.py", "/app/"]
"""
STORAGE_CLASS = """\
# filled at deploy time
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: airflow-efs-dags
provisioner: efs.csi.aws.com
parameters:
  provisioningMode: efs-ap
  fileSystemId: ""
"""


def make_repo(root: Path, stack: dict | None = None) -> Path:
    (root / "helm").mkdir(parents=True)
    (root / "k8s").mkdir()
    (root / "images" / "s3-sync").mkdir(parents=True)
    (root / "agent" / "__pycache__").mkdir(parents=True)
    (root / "stack.yaml").write_text(yaml.safe_dump(stack or STACK))
    (root / "helm" / "values.yaml").write_text(VALUES)
    (root / "k8s" / "namespace.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: airflow\n"
    )
    (root / "images" / "s3-sync" / "Dockerfile").write_text(DOCKERFILE)
    (root / "requirements.txt").write_text("boto3==1\n")
    (root / "agent" / "main.py").write_text("print('agent')\n")
    (root / "agent" / "__pycache__" / "main.cpython-312.pyc").write_bytes(b"debris")
    (root / "one.py").write_text("x = 1\n")
    (root / "dags").mkdir()
    (root / "dags" / "a.py").write_text("A = 1\n")
    return root


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


# --- image-tag -------------------------------------------------------------------------------


def test_image_sources_come_from_the_dockerfile(repo):
    sources = [p.as_posix() for p in image_tag.image_sources(repo)]
    assert sources == ["agent/main.py", "images/s3-sync/Dockerfile", "one.py", "requirements.txt"]


def test_image_tag_changes_with_sources_only(repo):
    tag = image_tag.sync_image_tag(repo)
    assert tag.startswith("src-") and len(tag) == 20
    (repo / "dags" / "a.py").write_text("A = 2\n")  # not an image source
    (repo / "agent" / "__pycache__" / "main.cpython-312.pyc").write_bytes(b"other debris")
    assert image_tag.sync_image_tag(repo) == tag
    (repo / "agent" / "main.py").write_text("print('changed')\n")
    assert image_tag.sync_image_tag(repo) != tag


def test_image_tag_missing_copy_source_is_a_clean_error(repo):
    (repo / "one.py").unlink()
    with pytest.raises(ToolkitError, match="COPY source 'one.py' does not exist"):
        image_tag.sync_image_tag(repo)


def test_the_real_dockerfile_sources_exist_when_the_image_is_used():
    if not (REPO / image_tag.DOCKERFILE).exists():
        pytest.skip("no s3-sync image in this mode")
    assert image_tag.sync_image_tag(REPO).startswith("src-")


# --- render ----------------------------------------------------------------------------------


def test_render_pins_every_sync_image_and_keeps_the_rest(repo):
    render.render(repo, repo / "build", offline=True)
    tag = image_tag.sync_image_tag(repo)
    out = (repo / "build" / "values.yaml").read_text()
    assert out == VALUES.replace("placeholder-tag", tag).replace("src-0000000000000000", tag)
    assert (repo / "build" / "k8s" / "namespace.yaml").read_text() == (
        repo / "k8s" / "namespace.yaml"
    ).read_text()


def test_render_leaves_values_alone_without_own_image(repo):
    stack = {**STACK, "dags": {"source": "efs"}}
    (repo / "stack.yaml").write_text(yaml.safe_dump(stack))
    render.render(repo, repo / "build", offline=True)
    assert (repo / "build" / "values.yaml").read_text() == VALUES


def test_render_refuses_values_without_the_sync_image(repo):
    (repo / "helm" / "values.yaml").write_text("executor: CeleryExecutor\n")
    with pytest.raises(ToolkitError, match="no container uses image"):
        render.render(repo, repo / "build", offline=True)
    assert not (repo / "build" / "values.yaml").exists()  # nothing half-written


@pytest.fixture(scope="module")
def moto():
    with moto_server() as server, aws_env(server, REGION):
        yield server


def test_render_fills_the_efs_file_system_id(repo, moto):
    moto.reset()
    stack = {**STACK, "dags": {"source": "efs", "efs": {"creation_token": "demo-dags"}}}
    (repo / "stack.yaml").write_text(yaml.safe_dump(stack))
    (repo / "k8s" / "efs-storageclass.yaml").write_text(STORAGE_CLASS)
    efs = boto3.client("efs", region_name=REGION)
    fs_id = efs.create_file_system(CreationToken="demo-dags")["FileSystemId"]
    efs.create_file_system(CreationToken="someone-else")
    render.render(repo, repo / "build")
    text = (repo / "build" / "k8s" / "efs-storageclass.yaml").read_text()
    assert yaml.safe_load(text)["parameters"]["fileSystemId"] == fs_id
    assert "# filled at deploy time" in text
    assert (repo / "k8s" / "efs-storageclass.yaml").read_text() == STORAGE_CLASS


def test_render_without_the_file_system_says_run_apply(repo, moto):
    moto.reset()
    stack = {**STACK, "dags": {"source": "efs", "efs": {"creation_token": "demo-dags"}}}
    (repo / "stack.yaml").write_text(yaml.safe_dump(stack))
    (repo / "k8s" / "efs-storageclass.yaml").write_text(STORAGE_CLASS)
    with pytest.raises(ToolkitError, match="not found in eu-west-1; run `make apply` first"):
        render.render(repo, repo / "build")


# --- ci-facts --------------------------------------------------------------------------------


def test_ci_facts(repo):
    facts = ci_facts.ci_facts(STACK, repo)
    assert facts["deploy_role_arn"] == "arn:aws:iam::123456789012:role/demo-deploy"
    assert facts["environment"] == "production"
    assert facts["sync_image_tag"] == image_tag.sync_image_tag(repo)
    assert facts["ecr_registry"] == REGISTRY


def test_ci_facts_refuses_a_value_that_would_inject_outputs(repo):
    stack = {**STACK, "github": {**STACK["github"], "environment": "prod\nevil=1"}}
    with pytest.raises(UsageError, match="spans lines"):
        ci_facts.ci_facts(stack, repo)


def test_ci_facts_writes_github_output(tmp_path):
    output = tmp_path / "out"
    env = {**os.environ, "GITHUB_OUTPUT": str(output)}
    subprocess.run(
        [sys.executable, "-m", "airflow_gitops", "ci-facts"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    lines = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert lines["chart_version"] and lines["namespace"] and lines["deploy_branch"]


# --- fake kubectl ----------------------------------------------------------------------------

FAKE_KUBECTL = r"""
import json, os, subprocess, sys
state = os.environ["FAKE_KUBE_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps(args) + "\n")
secrets = os.path.join(state, "secrets")
os.makedirs(secrets, exist_ok=True)
if args[:2] == ["get", "secret"]:
    path = os.path.join(secrets, args[2] + ".json")
    if not os.path.exists(path):
        sys.stderr.write('Error from server (NotFound): secrets "%s" not found\n' % args[2])
        sys.exit(1)
    sys.stdout.write(open(path).read())
elif args[:2] == ["create", "--filename"]:
    doc = json.load(sys.stdin)
    if doc["kind"] == "Secret":
        data = {k: "eA==" for k in doc.get("stringData", {})}
        json.dump({**doc, "data": data}, open(os.path.join(secrets, doc["metadata"]["name"] + ".json"), "w"))
        open(os.path.join(state, "values.txt"), "a").write(json.dumps(doc["stringData"]) + "\n")
elif args[:2] == ["get", "pvc"]:
    polls = os.path.join(state, "pvc-polls")
    n = int(open(polls).read()) if os.path.exists(polls) else 0
    open(polls, "w").write(str(n + 1))
    if n < int(os.environ.get("FAKE_PVC_MISSING_POLLS", "0")):
        sys.stderr.write('Error from server (NotFound): persistentvolumeclaims "%s" not found\n' % args[2])
        sys.exit(1)
    print("persistentvolumeclaim/" + args[2])
elif args[0] == "exec":
    script_args = args[args.index("--") + 1:]
    env = {**os.environ, "DAGS_ROOT": os.path.join(state, "volume")}
    os.makedirs(env["DAGS_ROOT"], exist_ok=True)
    sys.exit(subprocess.run(script_args, stdin=sys.stdin, env=env).returncode)
"""


@pytest.fixture
def kube(tmp_path, monkeypatch):
    state = tmp_path / "kube"
    state.mkdir()
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("KUBECTL", str(fake))
    monkeypatch.setenv("FAKE_KUBE_STATE", str(state))
    return state


def calls(state: Path) -> list[list[str]]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def put_secret(state: Path, name: str, data: dict) -> None:
    (state / "secrets").mkdir(exist_ok=True)
    (state / "secrets" / f"{name}.json").write_text(json.dumps({"data": data}))


# --- ensure-secrets --------------------------------------------------------------------------


def test_ensure_secrets_creates_missing_keys_once_and_never_logs_them(kube, capsys):
    values = yaml.safe_load(VALUES)
    put_secret(kube, "airflow-metadata-db", {"connection": "eA=="})
    cluster_secrets.ensure_secrets("airflow", values)
    created = [json.loads(line) for line in (kube / "values.txt").read_text().splitlines()]
    assert [sorted(c) for c in created] == [["fernet-key"], ["api-secret-key"], ["jwt-secret"]]
    printed = capsys.readouterr().out
    for value in created:
        assert next(iter(value.values())) not in printed
        assert all(next(iter(value.values())) not in " ".join(c) for c in calls(kube))
    import base64

    assert len(base64.urlsafe_b64decode(created[0]["fernet-key"])) == 32
    cluster_secrets.ensure_secrets("airflow", values)  # second run: nothing created
    assert len((kube / "values.txt").read_text().splitlines()) == 3


def test_ensure_secrets_fails_clearly_without_the_database_secret(kube):
    with pytest.raises(
        ToolkitError,
        match=r"airflow/airflow-metadata-db .*does not exist.*kubectl create secret generic",
    ):
        cluster_secrets.ensure_secrets("airflow", yaml.safe_load(VALUES))
    assert not (kube / "values.txt").exists()


def test_ensure_secrets_wants_the_connection_key(kube):
    put_secret(kube, "airflow-metadata-db", {"url": "eA=="})
    with pytest.raises(ToolkitError, match="has no key 'connection'"):
        cluster_secrets.ensure_secrets("airflow", yaml.safe_load(VALUES))


# --- efs-publish -----------------------------------------------------------------------------


def efs_stack():
    return {**STACK, "dags": {"source": "efs", "efs": {"claim": "airflow-dags"}}}


def test_efs_publish_swaps_a_complete_snapshot(repo, kube):
    (repo / "dags" / "sub").mkdir()
    (repo / "dags" / "sub" / "b.py").write_text("B = 1\n")
    efs_publish.publish(efs_stack(), repo / "dags", "10s", out=lambda _: None)
    volume = kube / "volume"
    current = volume / "current"
    assert current.is_symlink() and os.readlink(current).startswith("snapshots/")
    assert (current / "a.py").read_text() == "A = 1\n"
    assert (current / "sub" / "b.py").read_text() == "B = 1\n"
    assert (volume / ".airflowignore").read_text().splitlines() == ["snapshots/", ".current-*"]
    names = [c[0] for c in calls(kube)]
    assert names == ["get", "wait", "create", "wait", "exec", "delete"]
    pod = calls(kube)[2]
    assert pod[:2] == ["create", "--filename"]


def test_efs_publish_waits_for_the_claim_the_first_deploy_creates(repo, kube, monkeypatch):
    monkeypatch.setenv("FAKE_PVC_MISSING_POLLS", "3")
    slept, messages = [], []
    efs_publish.publish(efs_stack(), repo / "dags", "10s", out=messages.append, sleep=slept.append)
    assert len(slept) == 3 and messages[0].startswith("waiting for PVC airflow/airflow-dags")
    assert ((kube / "volume" / "current") / "a.py").read_text() == "A = 1\n"


def test_efs_publish_gives_up_on_a_claim_that_never_appears(repo, kube, monkeypatch):
    monkeypatch.setenv("FAKE_PVC_MISSING_POLLS", "1000")
    with pytest.raises(ToolkitError, match=r"PVC airflow/airflow-dags does not exist after 60 s"):
        efs_publish.publish(
            efs_stack(),
            repo / "dags",
            "10s",
            out=lambda _: None,
            claim_timeout=60,
            sleep=lambda _: None,
        )
    assert [c[0] for c in calls(kube)] == ["get"] * 5  # never a pod for a missing volume


def test_efs_publish_unchanged_files_publish_nothing_and_old_snapshots_are_pruned(repo, kube):
    messages = []
    for n in range(5):
        (repo / "dags" / "a.py").write_text(f"A = {n}\n")
        efs_publish.publish(efs_stack(), repo / "dags", "10s", out=messages.append)
    efs_publish.publish(efs_stack(), repo / "dags", "10s", out=messages.append)
    assert messages[-1].startswith("unchanged")
    snapshots = [p for p in (kube / "volume" / "snapshots").iterdir()]
    assert len(snapshots) == efs_publish.KEEP_SNAPSHOTS
    assert ((kube / "volume" / "current") / "a.py").read_text() == "A = 4\n"


def test_efs_publisher_pod_is_hardened():
    pod = efs_publish.publisher_pod("p", "airflow", "airflow-dags", "apache/airflow:3.2.2")
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec["activeDeadlineSeconds"] <= 900 and spec["automountServiceAccountToken"] is False


def test_dag_archive_skips_debris(repo):
    (repo / "dags" / "__pycache__").mkdir()
    (repo / "dags" / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"x")
    archive, digest = efs_publish.dag_archive(repo / "dags")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.getnames() == ["a.py"]
    assert efs_publish.dag_archive(repo / "dags")[1] == digest


# --- manifests -------------------------------------------------------------------------------


def test_manifests_redacts_secrets_and_sorts(repo, tmp_path, monkeypatch):
    helm = tmp_path / "helm"
    helm.write_text(
        "#!/bin/sh\n"
        "cat <<'EOF'\n"
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: airflow-redis-password\n"
        "data:\n  password: c2VjcmV0\n"
        "---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: airflow-api-server\n"
        "  annotations:\n    checksum/config: abc\n    keep: me\n"
        "EOF\n"
    )
    helm.chmod(0o755)
    monkeypatch.setenv("HELM", str(helm))
    text = manifests.manifest_stream(repo, offline=True)
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["Deployment", "Namespace", "Secret"]
    assert docs[2]["data"] == {"password": "<redacted>"}
    assert docs[0]["metadata"]["annotations"] == {"keep": "me"}

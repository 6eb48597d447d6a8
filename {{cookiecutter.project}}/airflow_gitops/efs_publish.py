"""``efs-publish``: put dags/ onto the EFS volume as one atomic snapshot (efs mode).

A short-lived pod mounts the DAGs claim (the same PVC every Airflow pod mounts), receives
dags/ as a tar stream over ``kubectl exec`` and publishes it the way the s3-sync agent does:
unpack into ``snapshots/<id>`` first, then swap the ``current`` symlink with one rename, so a
reader sees the old set or the new set of files, never half a file or a mix. The three newest
snapshots are kept (a parse that started a moment ago still finds its files); an identical set
of files is not published again.

Why a pod of our own rather than ``kubectl cp`` into the dag-processor: it needs no running
Airflow (the first deploy, a crash-looping scheduler), Airflow's pods mount the DAGs read-only,
and the pod carries the hardened security context and deletes itself within 15 minutes even if
CI dies. It runs the Airflow image the chart already pulled (stack.yaml images.airflow).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tarfile
import time
from pathlib import Path
from typing import Any

from airflow_gitops.errors import ToolkitError, UsageError
from airflow_gitops.kube import kubectl
from airflow_gitops.stack import REPO_ROOT, load_stack

KEEP_SNAPSHOTS = 3
# On a repository's first push, sync-dags.yml starts while deploy.yml is still creating the file
# system and the claim (make apply, then k8s/); the publisher waits for the claim that long.
CLAIM_TIMEOUT_SECONDS = 900  # inside sync-dags.yml's 20-minute job timeout
CLAIM_POLL_SECONDS = 15
POD_DEADLINE_SECONDS = 900
VOLUME_PATH = "/dags"

# Runs in the pod as uid 50000: $1 is the snapshot id, $2 the digest of the files, the tar on stdin.
PUBLISH_SCRIPT = r"""
set -eu
root="${DAGS_ROOT:-/dags}" id="$1" digest="$2"
if [ -f "$root/current/.source-digest" ] && [ "$(cat "$root/current/.source-digest")" = "$digest" ]; then
  cat >/dev/null
  echo "unchanged: current already holds these files"
  exit 0
fi
mkdir -p "$root/snapshots"
incoming="$root/snapshots/.incoming-$id"
rm -rf "$incoming"
mkdir "$incoming"
tar -xf - -C "$incoming" --no-same-owner --no-same-permissions
printf '%s\n' "$digest" >"$incoming/.source-digest"
mv "$incoming" "$root/snapshots/$id"
ln -sfn "snapshots/$id" "$root/.current-$id"
mv -T "$root/.current-$id" "$root/current"
# Airflow reads current/; if dags_folder is the volume root, these keep it off the snapshots.
printf 'snapshots/\n.current-*\n' >"$root/.airflowignore"
ls -1 "$root/snapshots" | grep -v '^\.' | sort -r | tail -n +KEEP | while read -r old; do
  rm -rf "${root:?}/snapshots/$old"
done
echo "published snapshots/$id"
""".replace("KEEP", str(KEEP_SNAPSHOTS + 1))


def add_arguments(parser) -> None:
    parser.add_argument("--dags", default="dags", help="DAG folder (default: dags)")
    parser.add_argument("--timeout", default="300s", help="how long to wait for the pod")
    parser.add_argument(
        "--claim-timeout",
        type=int,
        default=CLAIM_TIMEOUT_SECONDS,
        help="seconds to wait for the DAGs claim to exist (default: "
        f"{CLAIM_TIMEOUT_SECONDS}; the first deploy creates it)",
    )


def dag_archive(dag_folder: Path) -> tuple[bytes, str]:
    """(tar of ``dag_folder``, sha256 of its paths and contents); build debris left out."""
    buffer = io.BytesIO()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(dag_folder.rglob("*")):
            rel = path.relative_to(dag_folder)
            if "__pycache__" in rel.parts or path.suffix == ".pyc" or not path.is_file():
                continue
            data = path.read_bytes()
            info = tarfile.TarInfo(rel.as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
            digest.update(rel.as_posix().encode() + b"\0" + hashlib.sha256(data).digest())
    return buffer.getvalue(), digest.hexdigest()


def publisher_pod(name: str, namespace: str, claim: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "dag-publisher",
                "app.kubernetes.io/managed-by": "airflow-gitops",
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": POD_DEADLINE_SECONDS,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 50000,
                "runAsGroup": 0,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "publisher",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", str(POD_DEADLINE_SECONDS)],
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "64Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "volumeMounts": [{"name": "dags", "mountPath": VOLUME_PATH}],
                }
            ],
            "volumes": [{"name": "dags", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def _check(result, what: str) -> str:
    if result.returncode != 0:
        raise ToolkitError(f"{what}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def wait_for_claim(namespace: str, claim: str, timeout: float, out=print, sleep=time.sleep) -> None:
    """Until the claim exists: `kubectl wait` fails at once on one that is not there yet."""
    waited = 0.0
    while True:
        result = kubectl("get", "pvc", claim, "--namespace", namespace, "--output", "name")
        if result.returncode == 0:
            return
        if "NotFound" not in result.stderr and "not found" not in result.stderr:
            _check(result, f"PVC {namespace}/{claim}")
        if waited >= timeout:
            raise ToolkitError(
                f"PVC {namespace}/{claim} does not exist after {int(waited)} s: deploy.yml creates "
                "it from k8s/efs-pvc.yaml; run the deploy, then re-run this workflow"
            )
        if waited == 0:
            out(f"waiting for PVC {namespace}/{claim} (the first deploy creates it)")
        sleep(CLAIM_POLL_SECONDS)
        waited += CLAIM_POLL_SECONDS


def publish(
    stack: dict[str, Any],
    dag_folder: Path,
    timeout: str,
    out=print,
    claim_timeout: float = CLAIM_TIMEOUT_SECONDS,
    sleep=time.sleep,
) -> None:
    try:
        namespace = stack["airflow"]["namespace"]
        release = stack["airflow"]["release"]
        claim = stack["dags"]["efs"]["claim"]
        image = stack["images"]["airflow"]
    except (KeyError, TypeError) as exc:
        raise UsageError(f"stack.yaml: {exc} is missing (efs mode); run `make validate`") from None
    archive, digest = dag_archive(dag_folder)
    suffix = os.environ.get("GITHUB_RUN_ID") or secrets.token_hex(4)
    name = f"{release}-dag-publisher-{suffix}"[:63].rstrip("-")
    snapshot = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + digest[:12]
    wait_for_claim(namespace, claim, claim_timeout, out, sleep)
    _check(
        kubectl(
            "wait",
            "--namespace",
            namespace,
            "--for=jsonpath={.status.phase}=Bound",
            f"pvc/{claim}",
            f"--timeout={timeout}",
        ),
        f"PVC {namespace}/{claim} not Bound (is the EFS CSI driver installed? `make apply`)",
    )
    pod = json.dumps(publisher_pod(name, namespace, claim, image))
    _check(kubectl("create", "--filename", "-", stdin=pod), f"create pod {namespace}/{name}")
    try:
        _check(
            kubectl(
                "wait",
                "--namespace",
                namespace,
                "--for=condition=Ready",
                f"pod/{name}",
                f"--timeout={timeout}",
            ),
            f"pod {namespace}/{name} not Ready",
        )
        result = kubectl(
            "exec",
            "--namespace",
            namespace,
            "--stdin",
            name,
            "--",
            "sh",
            "-c",
            PUBLISH_SCRIPT,
            "publish",
            snapshot,
            digest,
            stdin=archive,
        )
        out(_check(result, f"publish into {namespace}/{claim}").strip())
    finally:
        kubectl(
            "delete", "pod", name, "--namespace", namespace, "--wait=false", "--ignore-not-found"
        )


def run(args) -> int:
    dag_folder = (REPO_ROOT / args.dags).resolve()
    if not dag_folder.is_dir():
        raise UsageError(f"{args.dags}: no such folder")
    publish(load_stack(), dag_folder, args.timeout, claim_timeout=args.claim_timeout)
    return 0

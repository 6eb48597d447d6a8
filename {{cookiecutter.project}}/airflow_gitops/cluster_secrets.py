"""``ensure-secrets``: the in-cluster Secrets helm/values.yaml names, never committed.

- The fernet key, the API secret key and the JWT secret must stay the same across upgrades
  (a new fernet key makes stored connections unreadable), so the deploy workflow creates each
  once with random values when it is absent, and never touches an existing one.
- The metadata database connection is yours (README: "Secrets"). When it is missing the deploy
  stops here with the command that creates it, instead of pods crash-looping after helm.

kubectl runs with the current kubeconfig (``aws eks update-kubeconfig`` in the workflow).
Secret values never reach the log or the command line.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

from airflow_gitops.errors import ToolkitError, UsageError
from airflow_gitops.kube import kubectl
from airflow_gitops.stack import REPO_ROOT, load_stack

# values.yaml key -> (key inside the Secret the chart reads, generator of a fresh value)
GENERATED: dict[str, tuple[str, Callable[[], str]]] = {
    "fernetKeySecretName": (
        "fernet-key",
        lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
    ),
    "apiSecretKeySecretName": ("api-secret-key", lambda: secrets.token_urlsafe(32)),
    "jwtSecretName": ("jwt-secret", lambda: secrets.token_urlsafe(48)),
}
METADATA_KEY = "connection"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--values", default="helm/values.yaml", help="values file naming the Secrets"
    )


def read_secret(namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret as a dict, or None when it does not exist."""
    result = kubectl("get", "secret", name, "--namespace", namespace, "--output", "json")
    if result.returncode == 0:
        return json.loads(result.stdout)
    if "NotFound" in result.stderr or "not found" in result.stderr:
        return None
    raise ToolkitError(f"Secret {namespace}/{name}: kubectl get failed: {result.stderr.strip()}")


def create_secret(
    namespace: str,
    name: str,
    key: str,
    value: str,
    extra: dict[str, str] | None = None,
    note: str = "random value, created once by deploy",
) -> str:
    """Create the Secret from stdin (not argv); 'created', or 'ok' if another run won the race."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "airflow-gitops"},
            "annotations": {"airflow-gitops/generated": note},
        },
        "stringData": {**(extra or {}), key: value},
    }
    result = kubectl("create", "--filename", "-", stdin=json.dumps(manifest))
    if result.returncode == 0:
        return "created"
    if "AlreadyExists" in result.stderr or "already exists" in result.stderr:
        return "ok"
    raise ToolkitError(f"Secret {namespace}/{name}: kubectl create failed: {result.stderr.strip()}")


def secret_names(values: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    generated = {k: values[k] for k in GENERATED if isinstance(values.get(k), str) and values[k]}
    metadata = (values.get("data") or {}).get("metadataSecretName")
    return generated, metadata


def ensure_secrets(namespace: str, values: dict[str, Any], out=print) -> None:
    generated, metadata = secret_names(values)
    if metadata:
        secret = read_secret(namespace, metadata)
        if secret is None or METADATA_KEY not in (secret.get("data") or {}):
            problem = "does not exist" if secret is None else f"has no key {METADATA_KEY!r}"
            raise ToolkitError(
                f"Secret {namespace}/{metadata} (helm/values.yaml data.metadataSecretName) {problem}. "
                f"Create it once: kubectl create secret generic {metadata} --namespace {namespace} "
                f"--from-literal={METADATA_KEY}='postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB'"
            )
        out(f"ok      Secret {namespace}/{metadata} (metadata database; yours)")
    for values_key, name in generated.items():
        key, generate = GENERATED[values_key]
        if read_secret(namespace, name) is not None:
            out(f"ok      Secret {namespace}/{name}")
            continue
        state = create_secret(namespace, name, key, generate())
        out(f"{state:<7} Secret {namespace}/{name} ({key}: random, kept across upgrades)")


def run(args) -> int:
    import yaml

    stack = load_stack()
    path = Path(args.values)
    path = path if path.is_absolute() else REPO_ROOT / path
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read ({exc}); run `make validate`") from None
    namespace = (stack.get("airflow") or {}).get("namespace")
    if not namespace:
        raise UsageError("stack.yaml: airflow.namespace is missing; run `make validate`")
    ensure_secrets(namespace, values)
    return 0

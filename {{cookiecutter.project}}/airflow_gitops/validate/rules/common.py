"""Small helpers the rules share: safe access to parsed data and the chart's structure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

S3_MODES = ("s3-sync", "s3-bundle")
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"

# Where each pod's settings live in the chart 1.22.0 values. Worker settings fall back from
# workers.celery / workers.kubernetes to the (deprecated) workers.* keys, as the chart does.
COMPONENTS = {
    "dagProcessor": (("dagProcessor",),),
    "triggerer": (("triggerer",),),
    "scheduler": (("scheduler",),),
    "apiServer": (("apiServer",),),
    "workers.celery": (("workers", "celery"), ("workers",)),
    "workers.kubernetes": (("workers", "kubernetes"), ("workers",)),
}
COMPONENT_LABEL = {
    "dagProcessor": "dag-processor",
    "triggerer": "triggerer",
    "scheduler": "scheduler",
    "apiServer": "api-server",
    "workers.celery": "Celery workers",
    "workers.kubernetes": "KubernetesExecutor task pods",
}


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def setting(values, component: str, key: str):
    """(value, path) of ``key`` for a component, following the chart's fallbacks; unset -> None."""
    bases = COMPONENTS[component]
    for base in bases:
        value = values.get(*base, key)
        if value not in (None, [], {}):
            return value, base + (key,)
    return None, bases[0] + (key,)


def service_account(values, component: str) -> dict:
    """The component's effective serviceAccount: create (default true), name, annotations, path."""
    result = {
        "create": True,
        "name": None,
        "annotations": {},
        "path": COMPONENTS[component][0] + ("serviceAccount",),
    }
    found_path = None
    for field in ("create", "name", "annotations"):
        for base in COMPONENTS[component]:
            value = values.get(*base, "serviceAccount", field)
            if value is not None:
                result[field] = value
                found_path = found_path or base + ("serviceAccount",)
                break
    if found_path:
        result["path"] = found_path
    return result


def dag_readers(repo) -> list[str]:
    """The components that read DAG files for this executor (Airflow 3: not the scheduler)."""
    values = repo.values
    executor = as_str(values.get("executor")) or as_str(repo.fact("airflow", "executor"))
    readers = ["dagProcessor"]
    if values.get("triggerer", "enabled") is not False:
        readers.append("triggerer")
    if "CeleryExecutor" in executor or not executor:
        readers.append("workers.celery")
    if "KubernetesExecutor" in executor:
        readers.append("workers.kubernetes")
    return readers


def walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every node under ``node``, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, path + (index,))


def is_ssh_url(url: str) -> bool:
    return url.startswith("ssh://") or (
        "@" in url.split("/")[0] and ":" in url and "://" not in url
    )


def role_name_from_arn(arn: str) -> tuple[str, str] | None:
    """(account, role name) of arn:aws:iam::<account>:role/<path/><name>, else None."""
    parts = arn.split(":", 5)
    if (
        len(parts) != 6
        or parts[0] != "arn"
        or parts[2] != "iam"
        or not parts[5].startswith("role/")
    ):
        return None
    return parts[4], parts[5].rsplit("/", 1)[-1]

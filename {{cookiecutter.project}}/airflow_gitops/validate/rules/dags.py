"""DAG files reach every pod that reads them, in the configured mode; S3 readers have IRSA.

Airflow 3 parses DAGs in the dag-processor and runs them on Celery workers or
KubernetesExecutor task pods; the triggerer needs them too. The scheduler and the api-server
do not read DAG files.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import (
    COMPONENT_LABEL,
    COMPONENTS,
    IRSA_ANNOTATION,
    S3_MODES,
    as_dict,
    as_list,
    as_str,
    dag_readers,
    service_account,
    setting,
)
from airflow_gitops.validate.rules.names import k8s_service_accounts

BUNDLE_CLASSPATHS = {
    "git-bundle": "airflow.providers.git.bundles.git.GitDagBundle",
    "s3-bundle": "airflow.providers.amazon.aws.bundles.s3.S3DagBundle",
}
DEFAULT_DAGS_FOLDER = "/opt/airflow/dags"  # the chart's airflowHome + /dags


def check(repo) -> Iterator[Finding]:
    source = repo.fact("dags", "source")
    values = repo.values
    if values.get("dagProcessor", "enabled") is False:
        yield values.finding(
            ("dagProcessor", "enabled"),
            "Airflow 3 parses DAGs only in the dag-processor; it must stay enabled",
            "dags-not-delivered",
        )
    if source == "s3-sync":
        yield from _s3_sync(repo)
    elif source == "git-sync":
        yield from _git_sync(repo)
    elif source == "efs":
        yield from _efs(repo)
    elif source in BUNDLE_CLASSPATHS:
        yield from _bundle(repo, source)
    if source in S3_MODES:
        yield from _s3_readers_have_irsa(repo)


def _component_anchor(values, component: str) -> tuple:
    """Where to report about a component: its key if the values have it, else the top."""
    for base in COMPONENTS[component]:
        if values.get(*base) is not None:
            return base
    return ()


def _label(component: str) -> str:
    dotted = ".".join(COMPONENTS[component][0])
    name = COMPONENT_LABEL[component]
    return name if name == dotted else f"{name} ({dotted})"


def _missing(repo, component: str, what: str, rule: str = "dags-not-delivered") -> Finding:
    """At the component's key in helm/values.yaml; with no such section, at stack.yaml's dags.source."""
    values = repo.values
    base = _component_anchor(values, component)
    label = _label(component)
    if not base:
        return repo.stack.finding(
            ("dags", "source"),
            f"dags.source is {repo.fact('dags', 'source')}, but helm/values.yaml has no "
            f"{'.'.join(COMPONENTS[component][0])} section: {label}: {what}",
            rule,
        )
    return values.finding(base, f"{label}: {what}", rule, at_key=True)


def _mounts_volume(container: dict, volume: str, writable: bool) -> bool:
    for mount in as_list(container.get("volumeMounts")):
        mount = as_dict(mount)
        if mount.get("name") == volume and (not writable or mount.get("readOnly") is not True):
            return True
    return False


def _s3_sync(repo) -> Iterator[Finding]:
    values = repo.values
    mount_path = as_str(repo.fact("dags", "mount_path")) or DEFAULT_DAGS_FOLDER
    dags_folder = as_str(values.get("config", "core", "dags_folder")) or posixpath.join(
        as_str(values.get("airflowHome")) or "/opt/airflow", "dags"
    )
    for component in dag_readers(repo):
        volumes = {
            as_dict(v).get("name"): as_dict(v)
            for v in as_list(setting(values, component, "extraVolumes")[0])
        }
        mounts = [as_dict(m) for m in as_list(setting(values, component, "extraVolumeMounts")[0])]
        dag_mount = next(
            (m for m in mounts if m.get("mountPath") == mount_path and m.get("name") in volumes),
            None,
        )
        if dag_mount is None:
            yield _missing(
                repo,
                component,
                f"no DAG volume mounted at {mount_path} (extraVolumes + extraVolumeMounts)",
            )
            continue
        volume = dag_mount["name"]
        if not (dags_folder == mount_path or dags_folder.startswith(mount_path.rstrip("/") + "/")):
            yield values.finding(
                ("config", "core", "dags_folder"),
                f"dags_folder {dags_folder!r} is outside the synced volume at {mount_path}",
                "dags-not-delivered",
            )
        inits = [as_dict(c) for c in as_list(setting(values, component, "extraInitContainers")[0])]
        sidecars = [as_dict(c) for c in as_list(setting(values, component, "extraContainers")[0])]
        if not any(_mounts_volume(c, volume, writable=True) for c in inits):
            yield _missing(
                repo,
                component,
                f"no init container fills the DAG volume {volume!r} before Airflow starts",
            )
        syncing_sidecar = any(_mounts_volume(c, volume, writable=True) for c in sidecars)
        if component == "workers.kubernetes":
            if syncing_sidecar:
                yield _missing(
                    repo,
                    component,
                    "a sync sidecar keeps each task pod running after its task ends; use only the init container",
                    "dags-task-pod-sidecar",
                )
        elif not syncing_sidecar:
            yield _missing(
                repo,
                component,
                f"no sidecar keeps the DAG volume {volume!r} current (extraContainers)",
            )
    # Airflow 3's scheduler and api-server never read DAG files; a sync there is the old recipe
    # (apache/airflow#13735) and gives those pods S3 access and DAG code they should not have.
    for component in ("scheduler", "apiServer"):
        for key in ("extraContainers", "extraInitContainers"):
            for index, container in enumerate(as_list(values.get(component, key))):
                container = as_dict(container)
                looks_like_sync = (
                    "sync" in as_str(container.get("name"))
                    or "s3-sync" in as_str(container.get("image"))
                    or "aws-cli" in as_str(container.get("image"))
                )
                if looks_like_sync:
                    yield values.finding(
                        (component, key, index),
                        f"{COMPONENT_LABEL[component]} does not read DAG files in Airflow 3; sync DAGs into "
                        "the dag-processor, workers/task pods and triggerer instead",
                        "dags-sync-misplaced",
                    )


def _git_sync(repo) -> Iterator[Finding]:
    values = repo.values
    git = values.get("dags", "gitSync")
    if as_dict(git).get("enabled") is not True:
        path = (
            ("dags", "gitSync", "enabled")
            if "enabled" in as_dict(git)
            else (("dags", "gitSync") if git else ())
        )
        yield values.finding(
            path,
            "stack.yaml says git-sync, but dags.gitSync.enabled is not true: no pod gets DAGs",
            "dags-not-delivered",
            at_key=bool(path),
        )
    elif not as_str(as_dict(git).get("repo")):
        yield values.finding(
            ("dags", "gitSync"), "dags.gitSync.repo is empty", "dags-not-delivered", at_key=True
        )


def _efs(repo) -> Iterator[Finding]:
    """Every DAG reader mounts the EFS claim of k8s/ read-only; only `efs-publish` writes."""
    values = repo.values
    claim = as_str(repo.fact("dags", "efs", "claim"))
    mount_path = as_str(repo.fact("dags", "mount_path")) or DEFAULT_DAGS_FOLDER
    if as_dict(values.get("dags", "persistence")).get("enabled") is True:
        yield values.finding(
            ("dags", "persistence", "enabled"),
            "the chart mounts dags.persistence read-write into every Airflow container (read-only "
            "only with git-sync); mount the EFS claim through extraVolumes with readOnly instead",
            "dags-volume-writable",
        )
    for component in dag_readers(repo):
        volume_list, volumes_path = setting(values, component, "extraVolumes")
        mount_list, mounts_path = setting(values, component, "extraVolumeMounts")
        volumes = {
            as_dict(v).get("name"): (i, as_dict(v)) for i, v in enumerate(as_list(volume_list))
        }
        mounts = list(enumerate(as_dict(m) for m in as_list(mount_list)))
        found = next(
            (
                (i, m)
                for i, m in mounts
                if m.get("mountPath") == mount_path and m.get("name") in volumes
            ),
            None,
        )
        if found is None:
            yield _missing(
                repo,
                component,
                f"no DAG volume mounted at {mount_path} (extraVolumes + extraVolumeMounts)",
            )
            continue
        mount_index, mount = found
        volume_index, volume = volumes[mount["name"]]
        pvc = as_dict(volume.get("persistentVolumeClaim"))
        pvc_path = volumes_path + (volume_index, "persistentVolumeClaim")
        label = _label(component)
        if pvc.get("claimName") != claim:
            yield values.finding(
                pvc_path + ("claimName",) if "claimName" in pvc else volumes_path + (volume_index,),
                f"{label}: the volume at {mount_path} is not the EFS claim {claim!r} of k8s/",
                "dags-not-delivered",
            )
        elif pvc.get("readOnly") is not True:
            yield values.finding(
                pvc_path + ("readOnly",) if "readOnly" in pvc else pvc_path + ("claimName",),
                f"{label}: the DAG claim is attached writable; set readOnly: true on the "
                "volume's persistentVolumeClaim (only efs-publish writes DAGs)",
                "dags-volume-writable",
            )
        elif mount.get("readOnly") is not True:
            mpath = mounts_path + (mount_index,)
            yield values.finding(
                mpath + ("readOnly",) if "readOnly" in mount else mpath + ("mountPath",),
                f"{label}: the DAG volume is mounted writable; set readOnly: true on the mount "
                "(only efs-publish writes DAGs)",
                "dags-volume-writable",
            )


def _bundle(repo, source: str) -> Iterator[Finding]:
    values = repo.values
    classpath = BUNDLE_CLASSPATHS[source]
    bundles = as_list(values.get("dagProcessor", "dagBundleConfigList"))
    matching = [i for i, b in enumerate(bundles) if as_dict(b).get("classpath") == classpath]
    if not matching:
        path = (
            ("dagProcessor", "dagBundleConfigList")
            if bundles
            else (("dagProcessor",) if values.get("dagProcessor") else ())
        )
        got = ", ".join(repr(as_dict(b).get("classpath")) for b in bundles) or "none"
        yield values.finding(
            path,
            f"stack.yaml says {source}, but no DAG bundle uses {classpath} (found: {got})",
            "dags-not-delivered",
            at_key=bool(path),
        )
        return
    if source == "git-bundle":
        secrets = {as_dict(s).get("envName") for s in as_list(values.get("secret"))}
        for index in matching:
            conn = as_dict(as_dict(bundles[index]).get("kwargs")).get("git_conn_id")
            if conn and f"AIRFLOW_CONN_{str(conn).upper()}" not in secrets:
                yield values.finding(
                    ("dagProcessor", "dagBundleConfigList", index, "kwargs", "git_conn_id"),
                    f"connection {conn!r} is not provided: add a `secret:` entry with envName AIRFLOW_CONN_{str(conn).upper()}",
                    "bundle-connection-missing",
                )


def _s3_readers_have_irsa(repo) -> Iterator[Finding]:
    if repo.fact("aws", "pod_credentials", default="irsa") == "pod-identity":
        return  # the role comes from the Pod Identity associations bootstrap makes
    values = repo.values
    existing = k8s_service_accounts(repo)
    for component in dag_readers(repo):
        if not _component_anchor(values, component):
            continue  # no section at all: dags-not-delivered already says so
        account = service_account(values, component)
        path = account["path"]
        if account["create"] is False:
            name = account["name"]
            if not name or name not in existing:
                continue  # sa-unnamed / sa-missing already say so
            if IRSA_ANNOTATION not in as_dict(existing[name].get("metadata", "annotations")):
                yield existing[name].finding(
                    ("metadata", "name"),
                    f"{_label(component)}: reads DAGs from S3 as ServiceAccount {name!r}, which has no {IRSA_ANNOTATION} annotation",
                    "s3-reader-irsa",
                )
        elif IRSA_ANNOTATION not in as_dict(account["annotations"]):
            yield values.finding(
                path if values.get(*path) is not None else _component_anchor(values, component),
                f"{_label(component)}: reads DAGs from S3 but runs as a chart-created ServiceAccount "
                f"without an IRSA role; set serviceAccount.create: false and name: "
                f"{repo.fact('dags', 'reader_service_account')!r}",
                "s3-reader-irsa",
                at_key=True,
            )

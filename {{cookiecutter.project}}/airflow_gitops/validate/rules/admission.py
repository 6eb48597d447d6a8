"""What the Kubernetes API or the chart would refuse, or accept and never run, predicted here.

helm and the API server only say so at deploy time, after merge (and `helm --atomic` then rolls
back): the namespace's Pod Security level, requests above limits, apiVersions EKS no longer
serves, StorageClass provisioners that do not exist (the claim stays Pending), Celery without a
broker, two DAG bundles with one name, a dags_folder that bypasses the DAG mode, a known-hosts
entry for another host than the git URL, a git DAG folder that is not in the repository.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import as_dict, as_list, as_str, walk

POD_SECURITY_LABEL = "pod-security.kubernetes.io/enforce"
# Pod Security Standards, baseline: what it refuses that a values file or manifest can ask for.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}

# apiVersion -> (Kubernetes release that removed it, what to use). Every EKS version in
# support (1.30 and later) serves none of these.
REMOVED_API_VERSIONS = {
    "extensions/v1beta1": ("1.22", "apps/v1 or networking.k8s.io/v1"),
    "apps/v1beta1": ("1.16", "apps/v1"),
    "apps/v1beta2": ("1.16", "apps/v1"),
    "networking.k8s.io/v1beta1": ("1.22", "networking.k8s.io/v1"),
    "rbac.authorization.k8s.io/v1beta1": ("1.22", "rbac.authorization.k8s.io/v1"),
    "admissionregistration.k8s.io/v1beta1": ("1.22", "admissionregistration.k8s.io/v1"),
    "apiextensions.k8s.io/v1beta1": ("1.22", "apiextensions.k8s.io/v1"),
    "apiregistration.k8s.io/v1beta1": ("1.22", "apiregistration.k8s.io/v1"),
    "certificates.k8s.io/v1beta1": ("1.22", "certificates.k8s.io/v1"),
    "coordination.k8s.io/v1beta1": ("1.22", "coordination.k8s.io/v1"),
    "scheduling.k8s.io/v1beta1": ("1.22", "scheduling.k8s.io/v1"),
    "storage.k8s.io/v1beta1": ("1.22", "storage.k8s.io/v1"),
    "batch/v1beta1": ("1.25", "batch/v1"),
    "policy/v1beta1": ("1.25", "policy/v1 (PodSecurityPolicy: Pod Security admission labels)"),
    "autoscaling/v2beta1": ("1.25", "autoscaling/v2"),
    "discovery.k8s.io/v1beta1": ("1.25", "discovery.k8s.io/v1"),
    "events.k8s.io/v1beta1": ("1.25", "events.k8s.io/v1"),
    "node.k8s.io/v1beta1": ("1.25", "node.k8s.io/v1"),
    "autoscaling/v2beta2": ("1.26", "autoscaling/v2"),
    "flowcontrol.apiserver.k8s.io/v1beta1": ("1.26", "flowcontrol.apiserver.k8s.io/v1"),
    "flowcontrol.apiserver.k8s.io/v1beta2": ("1.29", "flowcontrol.apiserver.k8s.io/v1"),
    "flowcontrol.apiserver.k8s.io/v1beta3": ("1.32", "flowcontrol.apiserver.k8s.io/v1"),
}

# Provisioners that exist on EKS (the AWS CSI drivers and EKS Auto Mode's block storage); any
# other name leaves every claim of the class Pending.
KNOWN_PROVISIONERS = (
    "ebs.csi.aws.com",
    "efs.csi.aws.com",
    "fsx.csi.aws.com",
    "fsx.openzfs.csi.aws.com",
    "s3.csi.aws.com",
    "ebs.csi.eks.amazonaws.com",
    "kubernetes.io/aws-ebs",
    "kubernetes.io/no-provisioner",
)

_QUANTITY = re.compile(
    r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)
_SUFFIX = {
    None: 1,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity(value) -> float | None:
    """A Kubernetes quantity (cpu: 500m, memory: 256Mi) as a number; None when it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    return float(match.group(1)) * _SUFFIX[match.group(2)] if match else None


def check(repo) -> Iterator[Finding]:
    documents = ([repo.values] if repo.values else []) + list(repo.manifests)
    level = _pod_security_level(repo)
    for doc in documents:
        if level in ("baseline", "restricted"):
            yield from _baseline(doc, level)
        yield from _requests_within_limits(doc)
    for doc in repo.manifests:
        yield from _api_version(doc)
    for doc in repo.by_kind("StorageClass"):
        yield from _provisioner(doc)
    yield from _claims_name_known_classes(repo, documents)
    if repo.values and repo.stack:
        yield from _broker(repo)
        yield from _bundle_names(repo)
        yield from _dags_folder(repo)
        yield from _known_hosts(repo)
        yield from _git_subdir(repo)


def _pod_security_level(repo) -> str | None:
    namespace = repo.fact("airflow", "namespace")
    for doc in repo.by_kind("Namespace"):
        if doc.get("metadata", "name") == namespace:
            return as_dict(doc.get("metadata", "labels")).get(POD_SECURITY_LABEL)
    return None


def _baseline(doc, level: str) -> Iterator[Finding]:
    why = f"the namespace enforces Pod Security {level!r}, which refuses"
    for path, value in walk(doc.data):
        if not path or not isinstance(path[-1], str):
            continue
        key = path[-1]
        if key == "hostPath" and isinstance(value, dict):
            yield doc.finding(
                path,
                f"{why} hostPath volumes: the pod is never created; use an emptyDir, a "
                "ConfigMap or a PersistentVolumeClaim",
                "pod-security",
                at_key=True,
            )
        elif key in ("hostNetwork", "hostPID", "hostIPC") and value is True:
            yield doc.finding(path, f"{why} {key}: true", "pod-security")
        elif key == "hostPort" and isinstance(value, int) and not isinstance(value, bool) and value:
            yield doc.finding(path, f"{why} host ports", "pod-security")
        elif key == "add" and len(path) > 1 and path[-2] == "capabilities":
            for index, capability in enumerate(as_list(value)):
                if (
                    isinstance(capability, str)
                    and capability.upper().removeprefix("CAP_") not in BASELINE_CAPABILITIES
                ):
                    yield doc.finding(
                        path + (index,), f"{why} adding the capability {capability}", "pod-security"
                    )
        elif (
            key == "type"
            and len(path) > 1
            and path[-2] in ("seccompProfile", "appArmorProfile")
            and value == "Unconfined"
        ):
            yield doc.finding(path, f"{why} an Unconfined {path[-2]}", "pod-security")
        elif key == "procMount" and value not in (None, "Default"):
            yield doc.finding(path, f"{why} procMount {value!r}", "pod-security")


def _requests_within_limits(doc) -> Iterator[Finding]:
    for path, value in walk(doc.data):
        if not path or path[-1] != "resources" or not isinstance(value, dict):
            continue
        requests, limits = as_dict(value.get("requests")), as_dict(value.get("limits"))
        for name, request in requests.items():
            if name not in limits:
                continue
            asked, cap = quantity(request), quantity(limits[name])
            if asked is not None and cap is not None and asked > cap:
                yield doc.finding(
                    path + ("requests", name),
                    f"{name} request {request} is above its limit "
                    f"{limits[name]}: the API server refuses the pod",
                    "resource-limits",
                )
        for section in (requests, limits):
            for name, amount in section.items():
                if quantity(amount) is None:
                    where = path + ("requests" if section is requests else "limits", name)
                    yield doc.finding(
                        where,
                        f"{name} {amount!r} is not a Kubernetes quantity (e.g. 500m, 256Mi)",
                        "resource-limits",
                    )


def _api_version(doc) -> Iterator[Finding]:
    version = doc.get("apiVersion")
    if version in REMOVED_API_VERSIONS:
        removed, instead = REMOVED_API_VERSIONS[version]
        yield doc.finding(
            ("apiVersion",),
            f"{version} was removed in Kubernetes {removed}; no EKS version in "
            f"support serves it: use {instead}",
            "api-removed",
        )


def _provisioner(doc) -> Iterator[Finding]:
    name = doc.get("provisioner")
    if isinstance(name, str) and name not in KNOWN_PROVISIONERS:
        close = difflib.get_close_matches(name, KNOWN_PROVISIONERS, n=1, cutoff=0.6)
        hint = (
            f"; did you mean {close[0]!r}?"
            if close
            else f" (known: {', '.join(KNOWN_PROVISIONERS[:3])}, ...)"
        )
        yield doc.finding(
            ("provisioner",),
            f"no provisioner {name!r} runs on EKS, so every claim of this class "
            f"stays Pending{hint}",
            "storageclass-provisioner",
        )


def _claims_name_known_classes(repo, documents: list) -> Iterator[Finding]:
    """Every storageClassName (values, claims, volume claim templates) is a StorageClass of k8s/:
    EKS 1.30+ has no default class, and a class nobody creates leaves the claim Pending."""
    classes = {doc.get("metadata", "name") for doc in repo.by_kind("StorageClass")}
    for doc in documents:
        for path, value in walk(doc.data):
            if (
                path
                and path[-1] == "storageClassName"
                and isinstance(value, str)
                and value
                and value not in classes
            ):
                known = ", ".join(sorted(map(str, classes))) or "none"
                yield doc.finding(
                    path,
                    f"StorageClass {value!r} is not in k8s/ (k8s/ has: {known}); the claim would "
                    "stay Pending",
                    "storageclass-missing",
                )


def _broker(repo) -> Iterator[Finding]:
    values = repo.values
    executor = as_str(values.get("executor")) or as_str(repo.fact("airflow", "executor"))
    if "Celery" not in executor or values.get("redis", "enabled") is not False:
        return
    if values.get("data", "brokerUrl") or values.get("data", "brokerUrlSecretName"):
        return
    yield values.finding(
        ("redis", "enabled"),
        f"{executor} needs a broker, but redis.enabled is false and neither "
        "data.brokerUrl nor data.brokerUrlSecretName is set: workers never get a task",
        "executor-broker",
    )


def _bundle_names(repo) -> Iterator[Finding]:
    values = repo.values
    seen: dict = {}
    for index, bundle in enumerate(as_list(values.get("dagProcessor", "dagBundleConfigList"))):
        name = as_dict(bundle).get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            yield values.finding(
                ("dagProcessor", "dagBundleConfigList", index, "name"),
                f"bundle name {name!r} is also bundle {seen[name]}'s; Airflow refuses the list",
                "bundle-name-duplicate",
            )
        seen.setdefault(name, index)


def _dags_folder(repo) -> Iterator[Finding]:
    values = repo.values
    folder = values.get("config", "core", "dags_folder")
    source = repo.fact("dags", "source")
    mount = as_str(repo.fact("dags", "mount_path")).rstrip("/")
    if not isinstance(folder, str) or not mount:
        return
    path = ("config", "core", "dags_folder")
    if source == "s3-sync":
        from airflow_gitops.dagsync.agent import CURRENT

        expected = f"{mount}/{CURRENT}"
        if folder.rstrip("/") != expected:
            yield values.finding(
                path,
                f"dags_folder {folder!r} is not {expected!r}, the link the sync agent swaps to "
                "each complete snapshot: Airflow would read half-synced files",
                "dags-folder",
            )
    elif source in ("efs", "git-sync") and not (folder == mount or folder.startswith(mount + "/")):
        yield values.finding(
            path,
            f"dags_folder {folder!r} is outside {mount}, where the {source} DAGs are mounted",
            "dags-folder",
        )


def git_host(url: str) -> str | None:
    """The host of git@host:path, ssh://[user@]host[:port]/path or https://host/path."""
    match = re.match(r"^(?:[\w.-]+@)?([A-Za-z0-9.-]+):(?!//)", url) or re.match(
        r"^[a-z+]+://(?:[^@/]+@)?(\[[^\]]+\]|[A-Za-z0-9.-]+)", url
    )
    return match.group(1).strip("[]") if match else None


def _known_hosts(repo) -> Iterator[Finding]:
    values = repo.values
    git = as_dict(values.get("dags", "gitSync"))
    host = git_host(as_str(git.get("repo")))
    text = as_str(git.get("knownHosts"))
    if git.get("enabled") is not True or not host or not text.strip():
        return
    hosts = set()
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0].startswith("|"):
            return  # a hashed entry: which host it is for cannot be read
        first = (
            fields[1] if fields[0].startswith("@") and len(fields) > 1 else fields[0]
        )  # @cert-authority
        hosts.update(re.sub(r"^\[(.*)\](:\d+)?$", r"\1", h) for h in first.split(","))
    if host not in hosts:
        yield values.finding(
            ("dags", "gitSync", "knownHosts"),
            f"knownHosts has keys for {', '.join(sorted(hosts)) or 'no host'}, "
            f"not for {host!r} of dags.gitSync.repo: git-sync refuses to connect",
            "gitsync-known-hosts",
        )


def _git_subdir(repo) -> Iterator[Finding]:
    """The DAG folder exists, when the git URL is this repository (another one cannot be seen)."""
    github_repo = as_str(repo.fact("github", "repository")).lower()
    git = as_dict(repo.fact("dags", "git"))
    url = as_str(git.get("repo_url")).lower().removesuffix(".git")
    if not github_repo or not url.endswith((":" + github_repo, "/" + github_repo)):
        return
    values = repo.values
    candidates = [(repo.stack, ("dags", "git", "subdir"), git.get("subdir"))]
    if as_dict(values.get("dags", "gitSync")).get("enabled") is True:
        candidates.append(
            (values, ("dags", "gitSync", "subPath"), values.get("dags", "gitSync", "subPath"))
        )
    for index, bundle in enumerate(as_list(values.get("dagProcessor", "dagBundleConfigList"))):
        kwargs = as_dict(as_dict(bundle).get("kwargs"))
        if "subdir" in kwargs:
            candidates.append(
                (
                    values,
                    ("dagProcessor", "dagBundleConfigList", index, "kwargs", "subdir"),
                    kwargs["subdir"],
                )
            )
    for doc, path, subdir in candidates:
        if (
            isinstance(subdir, str)
            and subdir.strip("/")
            and not (repo.root / subdir.strip("/")).is_dir()
        ):
            yield doc.finding(
                path,
                f"{subdir!r} is not a folder of this repository ({repo.fact('github', 'repository')}), "
                "so no DAG is found",
                "dags-subdir-missing",
            )


def check_rendered(path: str, text: str) -> Iterator[Finding]:
    """What admission would refuse among the objects helm actually renders (`make manifests`):
    the chart's own containers too, not only what our values and k8s/ ask for. The Pod Security
    level is the label of the Namespace in the same stream (it carries k8s/)."""
    from airflow_gitops.validate.loader import parse_text

    parsed = parse_text(path, text)
    yield from parsed.findings
    levels = {
        as_dict(doc.get("metadata", "labels")).get(POD_SECURITY_LABEL)
        for doc in parsed.documents
        if isinstance(doc.data, dict) and doc.data.get("kind") == "Namespace"
    }
    level = next((lvl for lvl in ("restricted", "baseline") if lvl in levels), None)
    for doc in parsed.documents:
        if not isinstance(doc.data, dict):
            continue
        if level:
            yield from _baseline(doc, level)
        yield from _requests_within_limits(doc)
        yield from _api_version(doc)

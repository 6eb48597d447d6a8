"""Names that must agree across files: namespace, ServiceAccounts, IRSA roles and their trust,
claims and storage classes, the bucket and prefix, and the facts stack.yaml states."""

from __future__ import annotations

from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import (
    IRSA_ANNOTATION,
    S3_MODES,
    as_dict,
    as_list,
    as_str,
    role_name_from_arn,
    walk,
)

IRSA_SUBJECT = "system:serviceaccount:"


def check(repo) -> Iterator[Finding]:
    yield from _namespace(repo)
    yield from _service_accounts(repo)
    yield from _irsa(repo)
    yield from _claims(repo)
    yield from _bucket_and_prefix(repo)
    yield from _stack_facts(repo)


def _stack_finding(repo, path, message, rule):
    return repo.stack.finding(path, message, rule)


# --- namespace -------------------------------------------------------------------------------


def _namespace(repo) -> Iterator[Finding]:
    namespace = repo.fact("airflow", "namespace")
    if not isinstance(namespace, str):
        return
    namespaces = repo.by_kind("Namespace")
    if not namespaces:
        yield _stack_finding(
            repo,
            ("airflow", "namespace"),
            f"k8s/ has no Namespace {namespace!r}",
            "namespace-mismatch",
        )
    for doc in namespaces:
        name = doc.get("metadata", "name")
        if name != namespace:
            yield doc.finding(
                ("metadata", "name"),
                f"Namespace {name!r} is not stack.yaml's airflow.namespace {namespace!r}",
                "namespace-mismatch",
            )
    for doc in repo.manifests:
        value = doc.get("metadata", "namespace")
        if isinstance(value, str) and value != namespace:
            yield doc.finding(
                ("metadata", "namespace"),
                f"{doc.get('kind')} {doc.get('metadata', 'name')!r} is in namespace {value!r}; "
                f"stack.yaml's airflow.namespace is {namespace!r}",
                "namespace-mismatch",
            )


# --- ServiceAccounts -------------------------------------------------------------------------


def k8s_service_accounts(repo) -> dict:
    """name -> document of every ServiceAccount in k8s/ in Airflow's namespace."""
    namespace = repo.fact("airflow", "namespace")
    return {
        doc.get("metadata", "name"): doc
        for doc in repo.by_kind("ServiceAccount")
        if doc.get("metadata", "namespace") in (namespace, None)
    }


def _service_accounts(repo) -> Iterator[Finding]:
    values = repo.values
    existing = k8s_service_accounts(repo)
    for path, node in walk(values.data):
        if not path or path[-1] != "serviceAccount" or not isinstance(node, dict):
            continue
        if node.get("create") is not False:
            continue
        where = ".".join(str(p) for p in path)
        name = node.get("name")
        if not name:
            yield values.finding(
                path + ("create",),
                f"{where}.create is false but no name is set: these pods run as the namespace's "
                "'default' ServiceAccount (no IRSA role); set name to a ServiceAccount in k8s/",
                "sa-unnamed",
            )
        elif name not in existing:
            known = ", ".join(sorted(map(str, existing))) or "none"
            yield values.finding(
                path + ("name",),
                f"ServiceAccount {name!r} is not in k8s/ and the chart does not create it "
                f"(create: false); k8s/ has: {known}",
                "sa-missing",
            )
    for fact in ("reader_service_account", "parser_service_account"):
        account = repo.fact("dags", fact)
        if (
            repo.fact("dags", "source") in S3_MODES
            and isinstance(account, str)
            and account not in existing
        ):
            yield _stack_finding(
                repo, ("dags", fact), f"ServiceAccount {account!r} is not in k8s/", "sa-missing"
            )


# --- IRSA: annotation <-> role <-> trust document <-> subject ---------------------------------


def trust_subjects(doc) -> list[tuple[tuple, str]]:
    """(path, value) of every :sub the trust document pins with StringEquals."""
    found = []
    for index, statement in enumerate(as_list(doc.get("Statement"))):
        equals = as_dict(as_dict(as_dict(statement).get("Condition")).get("StringEquals"))
        for key, value in equals.items():
            if str(key).endswith(":sub"):
                for item_index, item in enumerate(value if isinstance(value, list) else [value]):
                    path = ("Statement", index, "Condition", "StringEquals", key)
                    found.append((path + ((item_index,) if isinstance(value, list) else ()), item))
    return found


def trust_file_for_role(repo, role: str) -> str:
    """iam/<role without the project prefix>-trust.json: the file `apply` reads for that role."""
    project = repo.fact("project")
    short = (
        role[len(project) + 1 :]
        if isinstance(project, str) and role.startswith(project + "-")
        else role
    )
    return f"iam/{short}-trust.json"


def managed_roles(repo) -> set:
    """The IAM roles this repository makes (`make apply`/`bootstrap`): stack.yaml's *_role facts.
    A ServiceAccount may also use a role made elsewhere (say, for a secrets backend); its
    trust is then not in iam/, and asking for one would be advice apply never follows."""
    found = set()
    for path, value in walk(repo.stack.data if repo.stack else {}):
        if (
            path
            and isinstance(path[-1], str)
            and path[-1].endswith("_role")
            and isinstance(value, str)
        ):
            found.add(value)
    return found


def _irsa(repo) -> Iterator[Finding]:
    account = repo.fact("aws", "account_id")
    managed = managed_roles(repo)
    namespace = repo.fact("airflow", "namespace")
    for name, doc in k8s_service_accounts(repo).items():
        annotations = as_dict(doc.get("metadata", "annotations"))
        arn = annotations.get(IRSA_ANNOTATION)
        if arn is None:
            continue
        apath = ("metadata", "annotations", IRSA_ANNOTATION)
        parsed = role_name_from_arn(as_str(arn))
        if parsed is None:
            yield doc.finding(
                apath,
                f"{arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
                "irsa-mismatch",
            )
            continue
        role_account, role = parsed
        if role_account != account:
            yield doc.finding(
                apath,
                f"role account {role_account} is not stack.yaml's aws.account_id {account}",
                "irsa-mismatch",
            )
        if name in (
            repo.fact("dags", "reader_service_account"),
            repo.fact("dags", "parser_service_account"),
        ) and role != repo.fact("dags", "reader_role", default=role):
            yield doc.finding(
                apath,
                f"role {role!r} is not stack.yaml's dags.reader_role {repo.fact('dags', 'reader_role')!r}",
                "irsa-mismatch",
            )
        subject = f"{IRSA_SUBJECT}{doc.get('metadata', 'namespace') or namespace}:{name}"
        trust_path = trust_file_for_role(repo, role)
        trust = repo.iam.get(trust_path)
        if trust is None and role not in managed:
            continue  # a role made outside this repository: its trust is not ours to check
        if trust is None:
            elsewhere = [
                p for p, d in repo.iam.items() if any(v == subject for _, v in trust_subjects(d))
            ]
            hint = f" ({elsewhere[0]} trusts this ServiceAccount: rename it)" if elsewhere else ""
            yield doc.finding(
                apath,
                f"role {role!r} has no trust policy {trust_path} in iam/{hint}",
                "irsa-mismatch",
            )
            continue
        subjects = trust_subjects(trust)
        if not any(value == subject for _, value in subjects):
            irsa = [
                (p, v) for p, v in subjects if isinstance(v, str) and v.startswith(IRSA_SUBJECT)
            ]
            target = irsa[0][0] if irsa else ("Statement",)
            got = ", ".join(repr(v) for _, v in irsa) or "no ServiceAccount"
            yield trust.finding(
                target,
                f"role {role!r} is used by ServiceAccount {subject!r} (k8s/), but this trust policy admits {got}",
                "irsa-mismatch",
            )
    # ServiceAccounts the chart creates, annotated in values: same role <-> trust checks; the
    # subject is checked when the name is set (otherwise the chart derives it from the release).
    values = repo.values
    for path, node in walk(values.data):
        if (
            not path
            or path[-1] != "serviceAccount"
            or not isinstance(node, dict)
            or node.get("create") is False
        ):
            continue
        arn = as_dict(node.get("annotations")).get(IRSA_ANNOTATION)
        if arn is None:
            continue
        apath = path + ("annotations", IRSA_ANNOTATION)
        parsed = role_name_from_arn(as_str(arn))
        if parsed is None:
            yield values.finding(
                apath,
                f"{arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
                "irsa-mismatch",
            )
            continue
        role_account, role = parsed
        if role_account != account:
            yield values.finding(
                apath,
                f"role account {role_account} is not stack.yaml's aws.account_id {account}",
                "irsa-mismatch",
            )
        trust = repo.iam.get(trust_file_for_role(repo, role))
        if trust is None and role not in managed:
            continue  # made outside this repository
        if trust is None:
            yield values.finding(
                apath,
                f"role {role!r} has no trust policy {trust_file_for_role(repo, role)} in iam/",
                "irsa-mismatch",
            )
        elif node.get("name"):
            subject = f"{IRSA_SUBJECT}{namespace}:{node['name']}"
            if not any(value == subject for _, value in trust_subjects(trust)):
                yield values.finding(
                    apath,
                    f"{trust_file_for_role(repo, role)} does not admit {subject!r}",
                    "irsa-mismatch",
                )
    # Every IRSA subject in Airflow's namespace names a ServiceAccount that exists.
    existing = k8s_service_accounts(repo)
    for path, doc in repo.iam.items():
        for spath, value in trust_subjects(doc):
            if not isinstance(value, str) or not value.startswith(IRSA_SUBJECT):
                continue
            sub_namespace, _, sa_name = value[len(IRSA_SUBJECT) :].partition(":")
            if sub_namespace == "kube-system":
                continue  # add-on ServiceAccounts (EFS CSI driver) live there, made by EKS
            if sub_namespace != namespace:
                yield doc.finding(
                    spath,
                    f"subject namespace {sub_namespace!r} is not stack.yaml's airflow.namespace {namespace!r}",
                    "namespace-mismatch",
                )
            elif sa_name not in existing:
                yield doc.finding(spath, f"ServiceAccount {sa_name!r} is not in k8s/", "sa-missing")


# --- claims and storage classes ----------------------------------------------------------------


def _claims(repo) -> Iterator[Finding]:
    values = repo.values
    claims = {d.get("metadata", "name"): d for d in repo.by_kind("PersistentVolumeClaim")}
    classes = {d.get("metadata", "name") for d in repo.by_kind("StorageClass")}
    known = ", ".join(sorted(map(str, claims))) or "none"
    for section in ("dags", "logs"):
        persistence = as_dict(values.get(section, "persistence"))
        claim = persistence.get("existingClaim")
        if persistence.get("enabled") is True and claim and claim not in claims:
            yield values.finding(
                (section, "persistence", "existingClaim"),
                f"PersistentVolumeClaim {claim!r} is not in k8s/ (k8s/ has: {known})",
                "pvc-missing",
            )
    for path, node in walk(values.data):
        if path and path[-1] == "persistentVolumeClaim" and isinstance(node, dict):
            claim = node.get("claimName")
            if claim and claim not in claims:
                yield values.finding(
                    path + ("claimName",),
                    f"PersistentVolumeClaim {claim!r} is not in k8s/ (k8s/ has: {known})",
                    "pvc-missing",
                )
    efs = as_dict(repo.fact("dags", "efs"))
    if repo.fact("dags", "source") != "efs" or not efs:
        return
    claim_name, class_name = efs.get("claim"), efs.get("storage_class")
    if claim_name not in claims:
        yield _stack_finding(
            repo,
            ("dags", "efs", "claim"),
            f"PersistentVolumeClaim {claim_name!r} is not in k8s/ (k8s/ has: {known})",
            "pvc-missing",
        )
    else:
        doc = claims[claim_name]
        modes = as_list(doc.get("spec", "accessModes"))
        if "ReadWriteMany" not in modes:
            yield doc.finding(
                ("spec", "accessModes"),
                "the DAG claim must be ReadWriteMany: pods on several nodes mount it",
                "pvc-access-mode",
            )
        storage_class = doc.get("spec", "storageClassName")
        if storage_class != class_name:
            yield doc.finding(
                ("spec", "storageClassName") if storage_class else ("spec",),
                f"storageClassName {storage_class!r} is not stack.yaml's dags.efs.storage_class {class_name!r}",
                "storageclass-missing",
            )
        elif class_name not in classes:
            yield doc.finding(
                ("spec", "storageClassName"),
                f"StorageClass {class_name!r} is not in k8s/",
                "storageclass-missing",
            )
    existing = values.get("dags", "persistence", "existingClaim")
    if existing and existing != claim_name and existing in claims:
        yield values.finding(
            ("dags", "persistence", "existingClaim"),
            f"claim {existing!r} is not stack.yaml's dags.efs.claim {claim_name!r}",
            "stack-mismatch",
        )


# --- bucket and prefix -----------------------------------------------------------------------


def _s3_arns(doc):
    """(path, bucket, key or None) of every S3 ARN in a policy's Resource fields."""
    for index, statement in enumerate(as_list(doc.get("Statement"))):
        resource = as_dict(statement).get("Resource")
        items = resource if isinstance(resource, list) else [resource]
        for item_index, arn in enumerate(items):
            if isinstance(arn, str) and arn.startswith("arn:aws:s3:::"):
                bucket, _, key = arn[len("arn:aws:s3:::") :].partition("/")
                path = ("Statement", index, "Resource") + (
                    (item_index,) if isinstance(resource, list) else ()
                )
                yield path, bucket, key if "/" in arn[len("arn:aws:s3:::") :] else None


def _bucket_and_prefix(repo) -> Iterator[Finding]:
    if repo.fact("dags", "source") not in S3_MODES:
        return
    bucket = repo.fact("dags", "bucket")
    prefix = as_str(repo.fact("dags", "prefix")).strip("/")
    if not isinstance(bucket, str):
        return
    reader_policy = repo.iam.get("iam/dag-read-policy.json")
    if reader_policy is None:
        yield _stack_finding(
            repo,
            ("dags", "bucket"),
            "iam/dag-read-policy.json (the DAG readers' S3 permissions) is missing",
            "missing-file",
        )
    for path, doc in repo.iam.items():
        if path.endswith("-trust.json"):
            continue
        for arn_path, arn_bucket, key in _s3_arns(doc):
            # A bucket other than dags.bucket: rules/facts.py (DAG_BUCKET_POLICIES) reports it.
            in_reader_policy = (
                arn_bucket == bucket and key is not None and path == "iam/dag-read-policy.json"
            )
            if (
                in_reader_policy
                and prefix
                and not (key == f"{prefix}/*" or key.startswith(prefix + "/"))
            ):
                yield doc.finding(
                    arn_path,
                    f"object ARN key {key!r} is outside stack.yaml's dags.prefix {prefix!r}",
                    "prefix-mismatch",
                )
    if reader_policy is not None:
        for index, statement in enumerate(as_list(reader_policy.get("Statement"))):
            for op, conditions in as_dict(as_dict(statement).get("Condition")).items():
                values = as_dict(conditions).get("s3:prefix")
                if values is None or op == "Null":  # Null tests presence (HeadBucket has none)
                    continue
                # The bucket's top level only (S3DagBundle's check_for_prefix): "" with "/".
                if values == "" and as_dict(conditions).get("s3:delimiter") == "/":
                    continue
                for item_index, value in enumerate(
                    values if isinstance(values, list) else [values]
                ):
                    if (
                        isinstance(value, str)
                        and prefix
                        and not (value == prefix or value.startswith(prefix + "/"))
                    ):
                        path = ("Statement", index, "Condition", op, "s3:prefix") + (
                            (item_index,) if isinstance(values, list) else ()
                        )
                        yield reader_policy.finding(
                            path,
                            f"s3:prefix {value!r} is outside stack.yaml's dags.prefix {prefix!r}",
                            "prefix-mismatch",
                        )
    yield from _values_bucket(repo, bucket, prefix)


def _values_bucket(repo, bucket: str, prefix: str) -> Iterator[Finding]:
    values = repo.values
    for path, node in walk(values.data):
        if not path:
            continue
        key = path[-1]
        if key == "args" and isinstance(node, list):
            for index, arg in enumerate(node[:-1]):
                value = node[index + 1]
                if arg == "--bucket" and isinstance(value, str) and value != bucket:
                    yield values.finding(
                        path + (index + 1,),
                        f"--bucket {value!r} is not stack.yaml's dags.bucket {bucket!r}",
                        "bucket-mismatch",
                    )
                if arg == "--prefix" and isinstance(value, str) and value.strip("/") != prefix:
                    yield values.finding(
                        path + (index + 1,),
                        f"--prefix {value!r} is not stack.yaml's dags.prefix {prefix!r}",
                        "prefix-mismatch",
                    )
        elif key == "env" and isinstance(node, list):
            for index, item in enumerate(node):
                item = as_dict(item)
                value = item.get("value")
                if item.get("name") == "BUCKET" and isinstance(value, str) and value != bucket:
                    yield values.finding(
                        path + (index, "value"),
                        f"BUCKET {value!r} is not stack.yaml's dags.bucket {bucket!r}",
                        "bucket-mismatch",
                    )
                if (
                    item.get("name") == "PREFIX"
                    and isinstance(value, str)
                    and value.strip("/") != prefix
                ):
                    yield values.finding(
                        path + (index, "value"),
                        f"PREFIX {value!r} is not stack.yaml's dags.prefix {prefix!r}",
                        "prefix-mismatch",
                    )
        elif key == "kwargs" and isinstance(node, dict):
            if "bucket_name" in node and node["bucket_name"] != bucket:
                yield values.finding(
                    path + ("bucket_name",),
                    f"bucket_name {node['bucket_name']!r} is not stack.yaml's dags.bucket {bucket!r}",
                    "bucket-mismatch",
                )
            if "prefix" in node and as_str(node["prefix"]).strip("/") != prefix:
                yield values.finding(
                    path + ("prefix",),
                    f"prefix {node['prefix']!r} is not stack.yaml's dags.prefix {prefix!r}",
                    "prefix-mismatch",
                )


# --- facts stated in stack.yaml --------------------------------------------------------------


def _stack_facts(repo) -> Iterator[Finding]:
    values = repo.values
    executor = repo.fact("airflow", "executor")
    if "executor" in values.data and values.get("executor") != executor:
        yield values.finding(
            ("executor",),
            f"executor {values.get('executor')!r} is not stack.yaml's airflow.executor {executor!r}",
            "stack-mismatch",
        )
    version = repo.fact("airflow", "version")
    for key in ("airflowVersion", "defaultAirflowTag"):
        if key in values.data and values.get(key) != version:
            yield values.finding(
                (key,),
                f"{key} {values.get(key)!r} is not stack.yaml's airflow.version {version!r}",
                "stack-mismatch",
            )
    image = repo.fact("images", "airflow")
    if (
        isinstance(image, str)
        and isinstance(version, str)
        and ":" in image
        and image.rsplit(":", 1)[1] != version
    ):
        yield _stack_finding(
            repo,
            ("images", "airflow"),
            f"images.airflow {image!r} is not tagged with airflow.version {version!r}",
            "stack-mismatch",
        )
    mount = repo.fact("dags", "mount_path")
    mount_path = values.get("dags", "mountPath")
    if mount_path and mount_path != mount:
        yield values.finding(
            ("dags", "mountPath"),
            f"dags.mountPath {mount_path!r} is not stack.yaml's dags.mount_path {mount!r}",
            "stack-mismatch",
        )
    git = as_dict(repo.fact("dags", "git"))
    source = repo.fact("dags", "source")
    if source == "git-sync" and git:
        for key, fact in (
            ("repo", "repo_url"),
            ("branch", "branch"),
            ("subPath", "subdir"),
            ("sshKeySecret", "ssh_key_secret"),
        ):
            value = values.get("dags", "gitSync", key)
            if key in as_dict(values.get("dags", "gitSync")) and fact in git and value != git[fact]:
                yield values.finding(
                    ("dags", "gitSync", key),
                    f"dags.gitSync.{key} {value!r} is not stack.yaml's dags.git.{fact} {git[fact]!r}",
                    "stack-mismatch",
                )
    if source == "git-bundle" and git:
        for index, bundle in enumerate(as_list(values.get("dagProcessor", "dagBundleConfigList"))):
            kwargs = as_dict(as_dict(bundle).get("kwargs"))
            for key, fact in (
                ("git_conn_id", "connection_id"),
                ("tracking_ref", "branch"),
                ("subdir", "subdir"),
            ):
                if key in kwargs and fact in git and kwargs[key] != git[fact]:
                    yield values.finding(
                        ("dagProcessor", "dagBundleConfigList", index, "kwargs", key),
                        f"{key} {kwargs[key]!r} is not stack.yaml's dags.git.{fact} {git[fact]!r}",
                        "stack-mismatch",
                    )

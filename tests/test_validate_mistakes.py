"""`make validate` passes on every baked mode and catches realistic mistakes at their line.

Each mistake is a text edit of one file in a copy of a baked repo, the way a user makes it in a
pull request. The check asserts the rule id AND the line: a finding anywhere else is not enough.
Several come from the chart's own issues, e.g. apache/airflow#13735 (an s3-sync sidecar on the
scheduler only, `:latest`, no IRSA), #26474 (the scheduler no longer reads DAGs), #10623
(persistence pointing at a claim nobody created).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import PYTHON, run_make

BAKES = {
    **{
        f"{mode}-{executor[:-8].lower()}": dict(dag_source=mode, executor=executor)
        for mode in ("s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle")
        for executor in ("CeleryExecutor", "KubernetesExecutor")
    },
    "s3-sync-awscli-celery": dict(dag_source="s3-sync", s3_sync_image="aws-cli", executor="CeleryExecutor"),
    "s3-sync-awscli-kubernetes": dict(dag_source="s3-sync", s3_sync_image="aws-cli", executor="KubernetesExecutor"),
}

FINDING = re.compile(r"^(?P<path>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.*) \[(?P<rule>[a-z0-9-]+)\]$")


@pytest.mark.parametrize("name", list(BAKES))
def test_every_mode_passes_validate(baked, name):
    result = run_make(baked(**BAKES[name]), "validate")
    assert re.search(r"^validate: 0 findings in \d+ files$", result.stdout, re.M), result.stdout


@dataclass
class Mistake:
    id: str
    bake: str  # key of BAKES
    file: str
    old: str  # replaced once; must be in the file
    new: str
    rule: str
    at: str | None = None  # text on the expected line of the edited file (default: new)
    offset: int = 0  # lines below `at`
    message: str | None = None  # substring the message must contain
    expect_file: str | None = None  # when the finding is in another file than the edited one
    also: list = field(default_factory=list)  # more (file, old, new) edits, same mistake


BUCKET = "airflow-gitops-dags-123456789012-eu-west-1"
KNOWN_HOSTS = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
READER_SA = '    create: false\n    name: "airflow-dag-reader"\n'
# The triggerer's block up to its ServiceAccount (no log claim: task logs go to S3).
TRIGGERER = "triggerer:\n  persistence:\n    enabled: false\n  serviceAccount:\n"
SUB = ('"EKS_OIDC_ISSUER:sub": ["system:serviceaccount:airflow:airflow-dag-reader", '
       '"system:serviceaccount:airflow:airflow-dag-parser"],')
AUD = '\n          "EKS_OIDC_ISSUER:aud": "sts.amazonaws.com"'

MISTAKES = [
    # --- names that must agree across files ---
    Mistake("wrong-pvc-name", "efs-celery", "helm/values.yaml",
            'existingClaim: "airflow-dags"', 'existingClaim: "efs-claim"', "pvc-missing"),
    Mistake("sa-create-false-without-name", "s3-sync-celery", "helm/values.yaml",
            TRIGGERER + READER_SA, TRIGGERER + "    create: false\n",
            "sa-unnamed", at="triggerer:", offset=4),
    Mistake("sa-not-in-k8s", "s3-bundle-kubernetes", "helm/values.yaml",
            TRIGGERER + READER_SA,
            TRIGGERER + '    create: false\n    name: "airflow-triggerer"\n',
            "sa-missing", at='name: "airflow-triggerer"'),
    Mistake("bucket-mismatch-in-policy", "s3-sync-celery", "iam/dag-read-policy.json",
            f'"arn:aws:s3:::{BUCKET}"', '"arn:aws:s3:::airflow-gitops-dags"', "bucket-mismatch"),
    Mistake("bucket-mismatch-in-sync-args", "s3-sync-kubernetes", "helm/values.yaml",
            f'args: ["--bucket", "{BUCKET}", "--prefix", "dags", "--dest", "/opt/airflow/dags", "--once"]',
            f'args: ["--bucket", "{BUCKET}-old", "--prefix", "dags", "--dest", "/opt/airflow/dags", "--once"]',
            "bucket-mismatch"),
    Mistake("prefix-mismatch-in-bundle", "s3-bundle-celery", "helm/values.yaml",
            'prefix: "dags"', 'prefix: "dag"', "prefix-mismatch"),
    Mistake("namespace-mismatch", "s3-sync-celery", "k8s/serviceaccounts.yaml",
            'namespace: "airflow"', 'namespace: "default"', "namespace-mismatch"),
    Mistake("irsa-role-in-other-account", "s3-sync-celery", "k8s/serviceaccounts.yaml",
            "arn:aws:iam::123456789012:role/", "arn:aws:iam::210987654321:role/", "irsa-mismatch",
            at="eks.amazonaws.com/role-arn"),
    Mistake("trust-subject-wrong-service-account", "s3-bundle-celery", "iam/dag-reader-trust.json",
            "system:serviceaccount:airflow:airflow-dag-reader", "system:serviceaccount:airflow:airflow-worker",
            "irsa-mismatch"),
    Mistake("executor-differs-from-stack", "git-sync-celery", "helm/values.yaml",
            'executor: "CeleryExecutor"', 'executor: "KubernetesExecutor"', "stack-mismatch"),
    Mistake("efs-claim-read-write-once", "efs-kubernetes", "k8s/efs-pvc.yaml",
            "    - ReadWriteMany", "    - ReadWriteOnce", "pvc-access-mode", at="accessModes:"),
    Mistake("efs-claim-unknown-storage-class", "efs-celery", "k8s/efs-pvc.yaml",
            'storageClassName: "airflow-efs-dags"', 'storageClassName: "efs-sc"', "storageclass-missing"),
    # --- DAGs reach every pod that reads them ---
    Mistake("sync-sidecar-only-on-scheduler", "s3-sync-celery", "helm/values.yaml",
            "dagProcessor:\n  enabled: true\n", "scheduler:\n", "dags-sync-misplaced",
            at="  extraContainers: &s3-sync-sidecar", offset=1,
            also=[("helm/values.yaml", "  extraContainers: *s3-sync-sidecar\n", ""),
                  ("helm/values.yaml", "    extraContainers: *s3-sync-sidecar\n", "")]),
    Mistake("triggerer-without-sidecar", "s3-sync-celery", "helm/values.yaml",
            "  extraInitContainers: *s3-sync-init\n  extraContainers: *s3-sync-sidecar\n",
            "  extraInitContainers: *s3-sync-init\n", "dags-not-delivered", at="triggerer:",
            message="triggerer"),
    Mistake("task-pods-without-init-container", "s3-sync-awscli-kubernetes", "helm/values.yaml",
            "    extraInitContainers: *s3-sync-init\n", "", "dags-not-delivered", at="  kubernetes:",
            message="task pods"),
    Mistake("sidecar-on-task-pods", "s3-sync-kubernetes", "helm/values.yaml",
            "    extraInitContainers: *s3-sync-init\n",
            "    extraInitContainers: *s3-sync-init\n    extraContainers: *s3-sync-sidecar\n",
            "dags-task-pod-sidecar", at="  kubernetes:"),
    Mistake("git-sync-disabled", "git-sync-kubernetes", "helm/values.yaml",
            "  gitSync:\n    enabled: true", "  gitSync:\n    enabled: false", "dags-not-delivered",
            at="    enabled: false"),
    Mistake("efs-persistence-without-claim", "efs-celery", "helm/values.yaml",
            '    existingClaim: "airflow-dags"\n', "", "dags-not-delivered", at="  persistence:"),
    Mistake("bundle-classpath-typo", "git-bundle-celery", "helm/values.yaml",
            "classpath: airflow.providers.git.bundles.git.GitDagBundle",
            "classpath: airflow.providers.git.bundle.GitDagBundle", "dags-not-delivered",
            at="  dagBundleConfigList:"),
    Mistake("bundle-connection-not-provided", "git-bundle-kubernetes", "helm/values.yaml",
            'envName: "AIRFLOW_CONN_GIT_DAGS"', 'envName: "AIRFLOW_CONN_GIT_DEFAULT"',
            "bundle-connection-missing", at='git_conn_id: "git_dags"'),
    Mistake("s3-reader-without-irsa", "s3-bundle-celery", "helm/values.yaml",
            "    serviceAccount:\n      create: false\n      name: \"airflow-dag-reader\"\n",
            "    replicas: 2\n", "s3-reader-irsa", at="  celery:"),
    # --- task logs, secrets backend, Airflow image (issue 15) ---
    Mistake("log-folder-in-the-dag-bucket", "s3-sync-celery", "helm/values.yaml",
            '"s3://airflow-gitops-logs-123456789012/logs"', f'"s3://{BUCKET}/logs"',
            "log-location", message="logs.bucket/logs.prefix"),
    Mistake("log-policy-whole-bucket", "efs-kubernetes", "iam/task-log-write-policy.json",
            "airflow-gitops-logs-123456789012/logs/*", "airflow-gitops-logs-123456789012/*",
            "log-location", at='"Resource": "arn:aws:s3:::airflow-gitops-logs-123456789012/*"'),
    Mistake("triggerer-log-claim", "git-bundle-celery", "helm/values.yaml",
            "triggerer:\n  persistence:\n    enabled: false\n",
            "triggerer:\n  persistence:\n    enabled: true\n", "log-claim", at="    enabled: true"),
    Mistake("celery-log-claim-by-default", "s3-sync-celery", "helm/values.yaml",
            "  celery:\n    persistence:\n      enabled: false\n", "  celery:\n", "log-claim",
            at="workers:", message="the chart: true"),
    Mistake("secrets-prefix-of-another-project", "s3-bundle-kubernetes", "helm/values.yaml",
            "airflow/airflow-gitops/connections", "airflow/other/connections", "secrets-prefix",
            at="backend_kwargs:"),
    Mistake("secrets-policy-every-project", "git-sync-kubernetes", "iam/secrets-read-policy.json",
            "secret:airflow/airflow-gitops/variables/*", "secret:airflow/*", "secrets-prefix",
            at='"Resource": ['),
    Mistake("airflow-image-nobody-builds", "efs-celery", "helm/values.yaml",
            "images:\n  airflow:\n", "images:\n  airflow:\n    repository: docker.io/someone/airflow\n",
            "airflow-image", at="    repository: docker.io/someone/airflow"),
    Mistake("own-image-on-another-airflow-release", "git-sync-celery", "image/Dockerfile",
            "ARG AIRFLOW_VERSION=3.2.2", "ARG AIRFLOW_VERSION=3.1.0", "airflow-image"),
    # --- security defaults ---
    Mistake("latest-tag", "s3-sync-awscli-celery", "helm/values.yaml",
            "public.ecr.aws/aws-cli/aws-cli:2.31.18", "public.ecr.aws/aws-cli/aws-cli:latest", "image-unpinned",
            message="latest"),
    Mistake("image-without-tag", "s3-sync-awscli-kubernetes", "helm/values.yaml",
            "public.ecr.aws/aws-cli/aws-cli:2.31.18", "public.ecr.aws/aws-cli/aws-cli", "image-unpinned"),
    Mistake("run-as-root", "git-bundle-celery", "helm/values.yaml",
            "    runAsUser: 50000\n", "    runAsUser: 0\n", "container-root", at="    runAsUser: 0"),
    Mistake("privileged-sidecar", "s3-sync-celery", "helm/values.yaml",
            "        readOnlyRootFilesystem: true\n", "        readOnlyRootFilesystem: true\n        privileged: true\n",
            "container-privileged", at="        privileged: true"),
    Mistake("sidecar-writable-root", "s3-sync-awscli-celery", "helm/values.yaml",
            "        readOnlyRootFilesystem: true\n", "        readOnlyRootFilesystem: false\n",
            "sidecar-hardening", at="securityContext: &s3-sync-security"),
    Mistake("git-sync-without-known-hosts", "git-sync-celery", "helm/values.yaml",
            f'    knownHosts: "{KNOWN_HOSTS}"', '    knownHosts: ""', "gitsync-known-hosts"),
    Mistake("bundled-postgres-default-password", "efs-kubernetes", "helm/values.yaml",
            "postgresql:\n  enabled: false", "postgresql:\n  enabled: true", "default-password",
            at="postgresql:"),
    Mistake("secret-key-in-values", "s3-bundle-kubernetes", "helm/values.yaml",
            'jwtSecretName: "airflow-jwt-secret"\n',
            'jwtSecretName: "airflow-jwt-secret"\nwebserverSecretKey: "changeme"\n', "secret-committed",
            at='webserverSecretKey: "changeme"'),
    Mistake("aws-access-key-in-env", "s3-sync-kubernetes", "helm/values.yaml",
            '          value: "eu-west-1"\n',
            '          value: "eu-west-1"\n        - name: AWS_ACCESS_KEY_ID\n          value: AKIAIOSFODNN7EXAMPLE\n',
            "secret-committed", at="value: AKIAIOSFODNN7EXAMPLE"),
    Mistake("metadata-password-in-values", "git-sync-kubernetes", "helm/values.yaml",
            'data:\n  metadataSecretName: "airflow-metadata-db"\n',
            'data:\n  metadataSecretName: "airflow-metadata-db"\n  metadataConnection:\n    pass: "hunter2"\n',
            "secret-committed", at='    pass: "hunter2"'),
    # --- IAM ---
    Mistake("trust-policy-without-aud", "s3-sync-celery", "iam/dag-reader-trust.json",
            SUB + AUD, SUB.rstrip(","), "trust-unpinned", at='"StringEquals"'),
    Mistake("github-trust-sub-wildcard", "git-sync-celery", "iam/deploy-role-trust.json",
            '"repo:example-org/airflow-gitops:environment:production:job_workflow_ref:'
            'example-org/airflow-gitops/.github/workflows/deploy.yml@refs/heads/main"',
            '"repo:example-org/*"', "trust-unpinned"),
    Mistake("policy-action-star", "s3-sync-celery", "iam/dag-read-policy.json",
            '"Action": "s3:GetObject"', '"Action": "s3:*"', "iam-wildcard"),
    Mistake("policy-resource-star", "s3-bundle-celery", "iam/dag-read-policy.json",
            f'"Resource": "arn:aws:s3:::{BUCKET}/dags/*"', '"Resource": "*"', "iam-wildcard"),
    # --- YAML/JSON and schema ---
    Mistake("unknown-chart-key", "git-sync-celery", "helm/values.yaml",
            "    recommendedProbeSetting: true", "    recommendedProbeSettings: true", "unknown-key",
            message="did you mean 'recommendedProbeSetting'"),
    Mistake("unknown-top-level-key", "efs-celery", "helm/values.yaml",
            'defaultAirflowTag: "3.2.2"', 'defaultAirflowTags: "3.2.2"', "unknown-key",
            message="did you mean 'defaultAirflowTag'"),
    Mistake("bad-indentation", "s3-sync-celery", "stack.yaml",
            '  region: "eu-west-1"', '   region: "eu-west-1"', "syntax"),
    Mistake("duplicate-key", "git-bundle-kubernetes", "helm/values.yaml",
            'executor: "KubernetesExecutor"\n', 'executor: "KubernetesExecutor"\nexecutor: "KubernetesExecutor"\n',
            "duplicate-key", at='executor: "KubernetesExecutor"', offset=1),
    Mistake("duplicate-key-in-json", "s3-sync-celery", "iam/dag-read-policy.json",
            '"Sid": "ReadDagObjects",\n      "Effect": "Allow",',
            '"Sid": "ReadDagObjects",\n      "Effect": "Allow",\n      "Effect": "Deny",',
            "duplicate-key", at='"Effect": "Deny"'),
    Mistake("string-where-number-belongs", "git-bundle-celery", "stack.yaml",
            "sync_interval_seconds: 30", 'sync_interval_seconds: "30s"', "wrong-type"),
    Mistake("string-uid-in-values", "efs-celery", "helm/values.yaml",
            "    runAsUser: 50000\n", '    runAsUser: "50000"\n', "wrong-type", at='runAsUser: "50000"'),
    Mistake("pull-policy-typo", "git-sync-celery", "helm/values.yaml",
            "    pullPolicy: IfNotPresent", "    pullPolicy: IfNotPresnt", "invalid-value"),
    Mistake("yaml-1.1-boolean", "s3-bundle-celery", "helm/values.yaml",
            'load_examples: "False"', "load_examples: no", "yaml-ambiguous-bool"),
    Mistake("trailing-comma-in-json", "s3-sync-celery", "iam/dag-reader-trust.json",
            '"sts.amazonaws.com"\n', '"sts.amazonaws.com",\n', "syntax", at="}", offset=0),
    # --- workflows ---
    Mistake("action-pinned-by-tag", "git-sync-celery", ".github/workflows/validate.yml",
            "uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0",
            "uses: actions/checkout@v5", "action-unpinned"),
    Mistake("workflow-write-all", "efs-celery", ".github/workflows/validate.yml",
            "permissions: {}", "permissions: write-all", "workflow-permissions"),
]


def _line_of(text: str, needle: str, after: int = 0) -> int:
    index = text.index(needle, after)
    return text.count("\n", 0, index) + 1


def _edit(repo: Path, file: str, old: str, new: str) -> tuple[str, int]:
    path = repo / file
    text = path.read_text()
    assert old in text, f"{file}: the mistake's original text is not in the baked file: {old!r}"
    start = text.index(old)
    path.write_text(text.replace(old, new, 1))
    return path.read_text(), start


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_mistake_is_caught_at_its_line(baked, tmp_path, mistake):
    repo = tmp_path / "repo"
    shutil.copytree(baked(**BAKES[mistake.bake]), repo)
    text, start = _edit(repo, mistake.file, mistake.old, mistake.new)
    for file, old, new in mistake.also:
        _edit(repo, file, old, new)
    text = (repo / mistake.file).read_text()
    at = mistake.at or mistake.new.strip().splitlines()[0]
    # The needle is searched from the edit onwards when it is the edited text, else from the top.
    line = _line_of(text, at, start if at in mistake.new else 0) + mistake.offset
    if mistake.id == "trailing-comma-in-json":
        line = _line_of(text, '"sts.amazonaws.com",') + 1  # the parser stops at the next token
    result = subprocess.run(
        [PYTHON, "-m", "airflow_gitops", "validate"], cwd=repo, capture_output=True, text=True
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    findings = [m.groupdict() for m in map(FINDING.match, result.stdout.splitlines()) if m]
    expect_file = mistake.expect_file or mistake.file
    hits = [f for f in findings if f["rule"] == mistake.rule and f["path"] == expect_file and int(f["line"]) == line]
    assert hits, f"expected [{mistake.rule}] at {expect_file}:{line}; got:\n{result.stdout}"
    if mistake.message:
        assert any(mistake.message in f["message"] for f in hits), result.stdout

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
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
from conftest import TEMPLATE, run_make

BAKES = {
    **{
        f"{mode}-{executor[:-8].lower()}": {"dag_source": mode, "executor": executor}
        for mode in ("s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle")
        for executor in ("CeleryExecutor", "KubernetesExecutor")
    },
    "s3-sync-awscli-celery": {
        "dag_source": "s3-sync",
        "s3_sync_image": "aws-cli",
        "executor": "CeleryExecutor",
    },
    "s3-sync-awscli-kubernetes": {
        "dag_source": "s3-sync",
        "s3_sync_image": "aws-cli",
        "executor": "KubernetesExecutor",
    },
}

FINDING = re.compile(
    r"^(?P<path>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.*) \[(?P<rule>[a-z0-9-]+)\]$"
)


@pytest.mark.parametrize("name", list(BAKES))
def test_every_mode_passes_validate(baked, name):
    result = run_make(baked(**BAKES[name]), "validate")
    assert re.search(r"^validate: 0 findings in \d+ files$", result.stdout, re.MULTILINE), (
        result.stdout
    )


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
    bakes: tuple = ()  # more modes the same mistake applies to (same text, same expected place)


BUCKET = "airflow-gitops-dags-123456789012-eu-west-1"
KNOWN_HOSTS = (
    "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
)
READER_SA = '    create: false\n    name: "airflow-dag-reader"\n'
# The triggerer's block up to its ServiceAccount (no log claim: task logs go to S3).
TRIGGERER = "triggerer:\n  persistence:\n    enabled: false\n  serviceAccount:\n"
SUB = (
    '"EKS_OIDC_ISSUER:sub": ["system:serviceaccount:airflow:airflow-dag-reader", '
    '"system:serviceaccount:airflow:airflow-dag-parser"],'
)
AUD = '\n          "EKS_OIDC_ISSUER:aud": "sts.amazonaws.com"'


ALL = tuple(BAKES)
S3 = tuple(b for b in BAKES if b.startswith("s3-"))
S3_SYNC = tuple(b for b in BAKES if b.startswith("s3-sync"))
GIT = tuple(b for b in BAKES if b.startswith("git-"))
CELERY = tuple(b for b in BAKES if b.endswith("celery"))
REGION, ACCOUNT, CLUSTER = '"eu-west-1"', '"123456789012"', '"data-platform"'
SUBJECT = "repo:example-org/airflow-gitops:environment:production"
DEPLOY_IF = "if: github.ref_name == needs.facts.outputs.deploy_branch"
ENV_NAME = "      name: ${{ matrix.target.environment }}"


def _others(first: str, group: tuple) -> tuple:
    return tuple(b for b in group if b != first)


# Each class of issue 13, as the mistake a pull request makes, in every mode it applies to.
CHAINS = [
    # --- facts in stack.yaml against everything derived from them ---
    Mistake(
        "region-changed-only-in-stack",
        "s3-sync-celery",
        "stack.yaml",
        f"region: {REGION}",
        'region: "eu-central-1"',
        "stack-mismatch",
        expect_file="iam/deploy-role-policy.json",
        at="arn:aws:eks:eu-west-1",
        message="aws.region",
        bakes=_others("s3-sync-celery", ALL),
    ),
    Mistake(
        "region-changed-only-in-stack-values",
        "s3-sync-kubernetes",
        "stack.yaml",
        f"region: {REGION}",
        'region: "eu-central-1"',
        "stack-mismatch",
        expect_file="helm/values.yaml",
        at="name: AWS_REGION",
        offset=1,
        bakes=_others("s3-sync-kubernetes", S3_SYNC),
    ),
    Mistake(
        "cluster-changed-only-in-stack",
        "efs-celery",
        "stack.yaml",
        f"cluster_name: {CLUSTER}",
        'cluster_name: "analytics"',
        "stack-mismatch",
        expect_file="iam/deploy-role-policy.json",
        at=":cluster/data-platform",
        message="eks.cluster_name",
        bakes=_others("efs-celery", ALL),
    ),
    Mistake(
        "account-changed-only-in-stack",
        "git-bundle-celery",
        "stack.yaml",
        f"account_id: {ACCOUNT}",
        'account_id: "111122223333"',
        "stack-mismatch",
        expect_file="iam/deploy-role-trust.json",
        at='"Federated"',
        message="aws.account_id",
        bakes=_others("git-bundle-celery", ALL),
    ),
    Mistake(
        "bucket-changed-only-in-stack",
        "s3-bundle-celery",
        "stack.yaml",
        f'bucket: "{BUCKET}"',
        'bucket: "team-dags-bucket"',
        "bucket-mismatch",
        expect_file="iam/dag-read-policy.json",
        at=f'"arn:aws:s3:::{BUCKET}"',
        bakes=_others("s3-bundle-celery", S3),
    ),
    Mistake(
        "cluster-arn-typo-in-deploy-policy",
        "git-sync-kubernetes",
        "iam/deploy-role-policy.json",
        ":cluster/data-platform",
        ":cluster/data-platfrom",
        "stack-mismatch",
        bakes=_others("git-sync-kubernetes", ALL),
    ),
    Mistake(
        "ecr-region-typo-in-deploy-policy",
        "s3-sync-celery",
        "iam/deploy-role-policy.json",
        "arn:aws:ecr:eu-west-1:",
        "arn:aws:ecr:eu-west-2:",
        "stack-mismatch",
        bakes=("s3-sync-kubernetes",),
    ),
    Mistake(
        "sync-image-repository-typo",
        "s3-sync-celery",
        "helm/values.yaml",
        "amazonaws.com/airflow-gitops/s3-sync:",
        "amazonaws.com/airflow-gitop/s3-sync:",
        "stack-mismatch",
        message="images.s3_sync_repository",
        bakes=("s3-sync-kubernetes",),
    ),
    Mistake(
        "hard-coded-aws-region-in-a-workflow",
        "efs-celery",
        ".github/workflows/deploy.yml",
        "aws-region: ${{ steps.facts.outputs.aws_region }}",
        "aws-region: eu-west-2",
        "stack-mismatch",
        bakes=("s3-bundle-kubernetes",),
    ),
    # --- the GitHub OIDC chain ---
    Mistake(
        "trust-for-another-repository",
        "s3-sync-celery",
        "iam/deploy-role-trust.json",
        SUBJECT,
        "repo:example-org/other-repo:environment:production",
        "oidc-subject",
        bakes=_others("s3-sync-celery", ALL),
    ),
    Mistake(
        "trust-for-another-environment",
        "efs-kubernetes",
        "iam/deploy-role-trust.json",
        SUBJECT,
        "repo:example-org/airflow-gitops:environment:staging",
        "oidc-subject",
        bakes=("git-bundle-kubernetes",),
    ),
    Mistake(
        "trust-with-a-branch-subject",
        "git-sync-celery",
        "iam/deploy-role-trust.json",
        SUBJECT,
        "repo:example-org/airflow-gitops:ref:refs/heads/main",
        "oidc-subject",
        message="branch",
        bakes=("s3-bundle-kubernetes",),
    ),
    Mistake(
        "oidc-provider-in-another-account",
        "s3-bundle-celery",
        "iam/deploy-role-trust.json",
        "arn:aws:iam::123456789012:oidc-provider/token",
        "arn:aws:iam::999999999999:oidc-provider/token",
        "stack-mismatch",
        bakes=("efs-celery",),
    ),
    Mistake(
        "deploy-job-without-id-token",
        "s3-sync-celery",
        ".github/workflows/deploy.yml",
        "      id-token: write # OIDC token for this job's own AWS role (deploy); no stored keys\n",
        "",
        "oidc-job",
        at="      cancel-in-progress: false",
        offset=1,
        bakes=_others("s3-sync-celery", ALL),
    ),
    Mistake(
        "deploy-job-without-environment",
        "efs-celery",
        ".github/workflows/deploy.yml",
        "    environment:\n" + ENV_NAME + "\n",
        "",
        "oidc-job",
        at="  deploy:",
        bakes=("git-sync-kubernetes",),
    ),
    Mistake(
        "deploy-job-with-hard-coded-environment",
        "git-bundle-celery",
        ".github/workflows/deploy.yml",
        ENV_NAME,
        "      name: production",
        "oidc-job",
        bakes=("s3-sync-kubernetes",),
    ),
    Mistake(
        "deploy-job-with-hard-coded-branch",
        "s3-bundle-kubernetes",
        ".github/workflows/deploy.yml",
        DEPLOY_IF,
        "if: github.ref_name == 'main'",
        "deploy-branch",
        bakes=("efs-kubernetes",),
    ),
    Mistake(
        "deploy-branch-as-a-ref",
        "git-sync-celery",
        "stack.yaml",
        'deploy_branch: "main"',
        'deploy_branch: "refs/heads/main"',
        "invalid-value",
        bakes=("s3-sync-celery",),
    ),
    # --- IAM as AWS checks it ---
    Mistake(
        "duplicate-sid",
        "s3-sync-celery",
        "iam/read-state-policy.json",
        '"Sid": "ReadCluster"',
        '"Sid": "WhoAmINeedsStar"',
        "iam-duplicate-sid",
        bakes=("efs-kubernetes", "git-bundle-celery"),
    ),
    Mistake(
        "unknown-action",
        "s3-bundle-celery",
        "iam/dag-read-policy.json",
        '"Action": "s3:GetObject"',
        '"Action": "s3:GetObjects"',
        "iam-unknown-action",
        message="did you mean 's3:GetObject'",
        bakes=_others("s3-bundle-celery", S3),
    ),
    Mistake(
        "s3-arn-with-region-and-account",
        "s3-sync-kubernetes",
        "iam/dag-read-policy.json",
        f'"arn:aws:s3:::{BUCKET}/dags/*"',
        f'"arn:aws:s3:eu-west-1:123456789012:{BUCKET}/dags/*"',
        "iam-s3-arn",
        bakes=("s3-bundle-kubernetes",),
    ),
    Mistake(
        "action-on-the-wrong-resource-type",
        "s3-sync-celery",
        "iam/dag-read-policy.json",
        '"Action": "s3:GetObject"',
        '"Action": "s3:ListBucket"',
        "iam-resource-format",
        at=f'"arn:aws:s3:::{BUCKET}/dags/*"',
        bakes=("s3-bundle-celery",),
    ),
    # --- what the API server or the chart refuses ---
    Mistake(
        "host-path-volume",
        "efs-celery",
        "helm/values.yaml",
        "securityContexts:\n  pod:\n",
        "pgbouncer:\n  extraVolumes:\n    - name: docker\n      hostPath:\n        path: /var/run/docker.sock\n"
        "securityContexts:\n  pod:\n",
        "pod-security",
        at="      hostPath:",
        bakes=("git-sync-kubernetes", "git-bundle-celery"),
    ),
    Mistake(
        "request-above-limit",
        "git-bundle-kubernetes",
        "helm/values.yaml",
        "securityContexts:\n  pod:\n",
        "pgbouncer:\n  resources:\n    requests:\n      memory: 2Gi\n    limits:\n      memory: 1Gi\n"
        "securityContexts:\n  pod:\n",
        "resource-limits",
        at="      memory: 2Gi",
        bakes=("efs-kubernetes",),
    ),
    Mistake(
        "removed-api-version",
        "efs-celery",
        "k8s/efs-pvc.yaml",
        "apiVersion: v1",
        "apiVersion: apps/v1beta1",
        "api-removed",
        bakes=("efs-kubernetes",),
    ),
    Mistake(
        "efs-provisioner-typo",
        "efs-kubernetes",
        "k8s/efs-storageclass.yaml",
        "provisioner: efs.csi.aws.com",
        "provisioner: efs.csi.aws.co",
        "storageclass-provisioner",
        bakes=("efs-celery",),
    ),
    Mistake(
        "celery-without-broker",
        "efs-celery",
        "helm/values.yaml",
        "redis:\n  resources:\n",
        "redis:\n  enabled: false\n  resources:\n",
        "executor-broker",
        at="redis:",
        offset=1,
        bakes=_others("efs-celery", CELERY),
    ),
    Mistake(
        "env-entry-the-chart-refuses",
        "s3-bundle-celery",
        "helm/values.yaml",
        "securityContexts:\n  pod:\n",
        "env:\n  - name: AIRFLOW__CORE__PARALLELISM\n    valueFrom:\n      configMapKeyRef: {name: tuning, key: parallelism}\n"
        "securityContexts:\n  pod:\n",
        "unknown-key",
        at="    valueFrom:",
        bakes=("git-sync-celery", "efs-kubernetes"),
    ),
    Mistake(
        "two-bundles-one-name",
        "git-bundle-celery",
        "helm/values.yaml",
        "  dagBundleConfigList:\n",
        "  dagBundleConfigList:\n    - name: dags\n      classpath: "
        "airflow.providers.git.bundles.git.GitDagBundle\n      kwargs: {git_conn_id: git_dags}\n",
        "bundle-name-duplicate",
        at="    - name: dags",
        offset=3,
        bakes=("git-bundle-kubernetes",),
    ),
    Mistake(
        "dags-folder-bypasses-the-snapshot-link",
        "s3-sync-celery",
        "helm/values.yaml",
        "dags_folder: /opt/airflow/dags/current",
        "dags_folder: /opt/airflow/dags",
        "dags-folder",
        bakes=_others("s3-sync-celery", S3_SYNC),
    ),
    Mistake(
        "known-hosts-for-another-host",
        "git-sync-celery",
        "helm/values.yaml",
        '    knownHosts: "github.com',
        '    knownHosts: "gitlab.com',
        "gitsync-known-hosts",
        bakes=("git-sync-kubernetes",),
    ),
    Mistake(
        "git-dag-folder-missing",
        "git-sync-kubernetes",
        "helm/values.yaml",
        'subPath: "dags"',
        'subPath: "dag"',
        "dags-subdir-missing",
        bakes=("git-sync-celery",),
    ),
    Mistake(
        "git-bundle-dag-folder-missing",
        "git-bundle-celery",
        "stack.yaml",
        'subdir: "dags"',
        'subdir: "src/dags"',
        "dags-subdir-missing",
        bakes=("git-bundle-kubernetes",),
    ),
    Mistake(
        "dag-processor-reader-account-lost",
        "s3-bundle-celery",
        "helm/values.yaml",
        '  serviceAccount:\n    create: false\n    name: "airflow-dag-parser"\n',
        "",
        "s3-reader-irsa",
        at="dagProcessor:",
        bakes=("s3-bundle-kubernetes",),
    ),
    # --- secrets ---
    Mistake(
        "fernet-key-in-env",
        "git-sync-celery",
        "helm/values.yaml",
        "securityContexts:\n  pod:\n",
        'env:\n  - name: AIRFLOW__CORE__FERNET_KEY\n    value: "Xk3Jt9mZ0qPz7bYc2VdL8wRsN5aE1uGhT4fKoI6yQ0A="\n'
        "securityContexts:\n  pod:\n",
        "secret-committed",
        at='    value: "Xk3J',
        message="`secret:` entry",
        bakes=("s3-sync-kubernetes", "efs-celery"),
    ),
    Mistake(
        "connection-uri-in-env",
        "efs-kubernetes",
        "helm/values.yaml",
        "securityContexts:\n  pod:\n",
        'env:\n  - name: AIRFLOW_CONN_WAREHOUSE\n    value: "postgresql://etl:Wint3r-2024@db.internal:5432/dw"\n'
        "securityContexts:\n  pod:\n",
        "secret-committed",
        at='    value: "postgresql://',
        bakes=("s3-bundle-celery",),
    ),
    Mistake(
        "secret-in-a-dag",
        "s3-sync-celery",
        "dags/example_dag.py",
        "import pendulum\n",
        'import pendulum\n\nWAREHOUSE = "postgresql://etl:Wint3r-2024@db.internal:5432/dw"\n',
        "secret-committed",
        at="WAREHOUSE",
        bakes=_others("s3-sync-celery", ALL),
    ),
    Mistake(
        "aws-key-in-a-dag",
        "git-bundle-kubernetes",
        "dags/example_dag.py",
        "import pendulum\n",
        'import pendulum\n\nKEY = "AKIAIOSFODNN7EXAMPLE"\n',
        "secret-committed",
        at="KEY =",
        bakes=("efs-celery",),
    ),
    # --- workflows ---
    Mistake(
        "local-action-path-typo",
        "s3-sync-celery",
        ".github/workflows/deploy.yml",
        "uses: $/.github/actions/setup-helm",
        "uses: $/.github/actions/setup-helmm",
        "workflow-local-action",
        bakes=("git-sync-celery", "efs-kubernetes"),
    ),
    Mistake(
        "expression-names-a-missing-step",
        "git-bundle-celery",
        ".github/workflows/deploy.yml",
        "role-to-assume: ${{ steps.facts.outputs.deploy_role_arn }}",
        "role-to-assume: ${{ steps.fact.outputs.deploy_role_arn }}",
        "workflow-expression",
        bakes=("s3-bundle-celery",),
    ),
    Mistake(
        "cron-out-of-range",
        "efs-celery",
        ".github/workflows/deploy.yml",
        "  workflow_dispatch:\n",
        '  workflow_dispatch:\n  schedule:\n    - cron: "0 25 * * *"\n',
        "workflow-cron",
        at="    - cron:",
        bakes=("s3-sync-celery",),
    ),
    Mistake(
        "cluster-scoped-object-in-a-deployed-file",
        "s3-sync-celery",
        "k8s/serviceaccounts.yaml",
        "apiVersion: v1\nkind: ServiceAccount",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
        "metadata:\n  name: reader\nrules: []\n---\napiVersion: v1\nkind: ServiceAccount",
        "manifest-not-deployed",
        at="kind: ClusterRole",
        bakes=("s3-bundle-kubernetes",),
    ),
    # --- hostile files ---
    Mistake(
        "billion-laughs-values",
        "git-sync-celery",
        "helm/values.yaml",
        "securityContexts:\n  pod:\n",
        'x-lol: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(
            f"x-{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n"
            for p, c in zip("abcdefgh", "bcdefghi")
        )
        + "securityContexts:\n  pod:\n",
        "yaml-alias-budget",
        at="x-b:",
        bakes=(),
    ),
]

MISTAKES = [
    # --- names that must agree across files ---
    Mistake(
        "wrong-pvc-name",
        "efs-celery",
        "helm/values.yaml",
        'claimName: "airflow-dags"',
        'claimName: "efs-claim"',
        "pvc-missing",
    ),
    Mistake(
        "sa-create-false-without-name",
        "s3-sync-celery",
        "helm/values.yaml",
        "  persistence:\n    enabled: false\n  serviceAccount:\n" + READER_SA,
        "  persistence:\n    enabled: false\n  serviceAccount:\n    create: false  # no name\n",
        "sa-unnamed",
        at="    create: false  # no name",
    ),
    Mistake(
        "sa-not-in-k8s",
        "s3-bundle-kubernetes",
        "helm/values.yaml",
        "  persistence:\n    enabled: false\n  serviceAccount:\n" + READER_SA,
        '  persistence:\n    enabled: false\n  serviceAccount:\n    create: false\n    name: "airflow-triggerer"\n',
        "sa-missing",
        at='name: "airflow-triggerer"',
    ),
    Mistake(
        "bucket-mismatch-in-policy",
        "s3-sync-celery",
        "iam/dag-read-policy.json",
        f'"arn:aws:s3:::{BUCKET}"',
        '"arn:aws:s3:::airflow-gitops-dags"',
        "bucket-mismatch",
    ),
    Mistake(
        "bucket-mismatch-in-sync-args",
        "s3-sync-kubernetes",
        "helm/values.yaml",
        f'args: ["--bucket", "{BUCKET}", "--prefix", "dags", "--dest", "/opt/airflow/dags", "--once"]',
        f'args: ["--bucket", "{BUCKET}-old", "--prefix", "dags", "--dest", "/opt/airflow/dags", "--once"]',
        "bucket-mismatch",
    ),
    Mistake(
        "prefix-mismatch-in-bundle",
        "s3-bundle-celery",
        "helm/values.yaml",
        'prefix: "dags"',
        'prefix: "dag"',
        "prefix-mismatch",
    ),
    Mistake(
        "namespace-mismatch",
        "s3-sync-celery",
        "k8s/serviceaccounts.yaml",
        'namespace: "airflow"',
        'namespace: "default"',
        "namespace-mismatch",
    ),
    Mistake(
        "irsa-role-in-other-account",
        "s3-sync-celery",
        "k8s/serviceaccounts.yaml",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::210987654321:role/",
        "irsa-mismatch",
        at="eks.amazonaws.com/role-arn",
    ),
    Mistake(
        "trust-subject-wrong-service-account",
        "s3-bundle-celery",
        "iam/dag-reader-trust.json",
        "system:serviceaccount:airflow:airflow-dag-reader",
        "system:serviceaccount:airflow:airflow-worker",
        "irsa-mismatch",
    ),
    Mistake(
        "executor-differs-from-stack",
        "git-sync-celery",
        "helm/values.yaml",
        'executor: "CeleryExecutor"',
        'executor: "KubernetesExecutor"',
        "stack-mismatch",
    ),
    Mistake(
        "efs-claim-read-write-once",
        "efs-kubernetes",
        "k8s/efs-pvc.yaml",
        "    - ReadWriteMany",
        "    - ReadWriteOnce",
        "pvc-access-mode",
        at="accessModes:",
    ),
    Mistake(
        "efs-claim-unknown-storage-class",
        "efs-celery",
        "k8s/efs-pvc.yaml",
        'storageClassName: "airflow-efs-dags"',
        'storageClassName: "efs-sc"',
        "storageclass-missing",
    ),
    # --- DAGs reach every pod that reads them ---
    Mistake(
        "sync-sidecar-only-on-scheduler",
        "s3-sync-celery",
        "helm/values.yaml",
        "dagProcessor:\n  enabled: true\n",
        "scheduler:\n",
        "dags-sync-misplaced",
        at="  extraContainers: &s3-sync-sidecar",
        offset=1,
        also=[
            ("helm/values.yaml", "  extraContainers: *s3-sync-sidecar\n", ""),
            ("helm/values.yaml", "    extraContainers: *s3-sync-sidecar\n", ""),
        ],
    ),
    Mistake(
        "triggerer-without-sidecar",
        "s3-sync-celery",
        "helm/values.yaml",
        "  extraInitContainers: *s3-sync-init\n  extraContainers: *s3-sync-sidecar\n",
        "  extraInitContainers: *s3-sync-init\n",
        "dags-not-delivered",
        at="triggerer:",
        message="triggerer",
    ),
    Mistake(
        "task-pods-without-init-container",
        "s3-sync-awscli-kubernetes",
        "helm/values.yaml",
        "    extraInitContainers: *s3-sync-init\n",
        "",
        "dags-not-delivered",
        at="  kubernetes:",
        message="task pods",
    ),
    Mistake(
        "sidecar-on-task-pods",
        "s3-sync-kubernetes",
        "helm/values.yaml",
        "    extraInitContainers: *s3-sync-init\n",
        "    extraInitContainers: *s3-sync-init\n    extraContainers: *s3-sync-sidecar\n",
        "dags-task-pod-sidecar",
        at="  kubernetes:",
    ),
    Mistake(
        "git-sync-disabled",
        "git-sync-kubernetes",
        "helm/values.yaml",
        "  gitSync:\n    enabled: true",
        "  gitSync:\n    enabled: false",
        "dags-not-delivered",
        at="    enabled: false",
    ),
    Mistake(
        "efs-dags-mounted-writable",
        "efs-celery",
        "helm/values.yaml",
        "        readOnly: true\n",
        "",
        "dags-volume-writable",
        at='claimName: "airflow-dags"',
    ),
    Mistake(
        "bundle-classpath-typo",
        "git-bundle-celery",
        "helm/values.yaml",
        "classpath: airflow.providers.git.bundles.git.GitDagBundle",
        "classpath: airflow.providers.git.bundle.GitDagBundle",
        "dags-not-delivered",
        at="  dagBundleConfigList:",
    ),
    Mistake(
        "bundle-connection-not-provided",
        "git-bundle-kubernetes",
        "helm/values.yaml",
        'envName: "AIRFLOW_CONN_GIT_DAGS"',
        'envName: "AIRFLOW_CONN_GIT_DEFAULT"',
        "bundle-connection-missing",
        at='git_conn_id: "git_dags"',
    ),
    Mistake(
        "s3-reader-without-irsa",
        "s3-bundle-celery",
        "helm/values.yaml",
        '    serviceAccount:\n      create: false\n      name: "airflow-dag-reader"\n',
        "    replicas: 2\n",
        "s3-reader-irsa",
        at="  celery:",
    ),
    # --- security defaults ---
    Mistake(
        "latest-tag",
        "s3-sync-awscli-celery",
        "helm/values.yaml",
        "public.ecr.aws/aws-cli/aws-cli:2.31.18",
        "public.ecr.aws/aws-cli/aws-cli:latest",
        "image-unpinned",
        message="latest",
    ),
    Mistake(
        "image-without-tag",
        "s3-sync-awscli-kubernetes",
        "helm/values.yaml",
        "public.ecr.aws/aws-cli/aws-cli:2.31.18",
        "public.ecr.aws/aws-cli/aws-cli",
        "image-unpinned",
    ),
    Mistake(
        "run-as-root",
        "git-bundle-celery",
        "helm/values.yaml",
        "    runAsUser: 50000\n",
        "    runAsUser: 0\n",
        "container-root",
        at="    runAsUser: 0",
    ),
    Mistake(
        "privileged-sidecar",
        "s3-sync-celery",
        "helm/values.yaml",
        "        readOnlyRootFilesystem: true\n",
        "        readOnlyRootFilesystem: true\n        privileged: true\n",
        "container-privileged",
        at="        privileged: true",
    ),
    Mistake(
        "sidecar-writable-root",
        "s3-sync-awscli-celery",
        "helm/values.yaml",
        "        readOnlyRootFilesystem: true\n",
        "        readOnlyRootFilesystem: false\n",
        "sidecar-hardening",
        at="securityContext: &s3-sync-security",
    ),
    Mistake(
        "git-sync-without-known-hosts",
        "git-sync-celery",
        "helm/values.yaml",
        f'    knownHosts: "{KNOWN_HOSTS}"',
        '    knownHosts: ""',
        "gitsync-known-hosts",
    ),
    Mistake(
        "bundled-postgres-default-password",
        "efs-kubernetes",
        "helm/values.yaml",
        "postgresql:\n  enabled: false",
        "postgresql:\n  enabled: true",
        "default-password",
        at="postgresql:",
    ),
    Mistake(
        "secret-key-in-values",
        "s3-bundle-kubernetes",
        "helm/values.yaml",
        'jwtSecretName: "airflow-jwt-secret"\n',
        'jwtSecretName: "airflow-jwt-secret"\nwebserverSecretKey: "changeme"\n',
        "secret-committed",
        at='webserverSecretKey: "changeme"',
    ),
    Mistake(
        "aws-access-key-in-env",
        "s3-sync-kubernetes",
        "helm/values.yaml",
        '          value: "eu-west-1"\n',
        '          value: "eu-west-1"\n        - name: AWS_ACCESS_KEY_ID\n          value: AKIAIOSFODNN7EXAMPLE\n',
        "secret-committed",
        at="value: AKIAIOSFODNN7EXAMPLE",
    ),
    Mistake(
        "metadata-password-in-values",
        "git-sync-kubernetes",
        "helm/values.yaml",
        'data:\n  metadataSecretName: "airflow-metadata-db"\n',
        'data:\n  metadataSecretName: "airflow-metadata-db"\n  metadataConnection:\n    pass: "hunter2"\n',
        "secret-committed",
        at='    pass: "hunter2"',
    ),
    # --- IAM ---
    Mistake(
        "trust-policy-without-aud",
        "s3-sync-celery",
        "iam/dag-reader-trust.json",
        SUB + AUD,
        SUB.rstrip(","),
        "trust-unpinned",
        at='"StringEquals"',
    ),
    Mistake(
        "github-trust-sub-wildcard",
        "git-sync-celery",
        "iam/deploy-role-trust.json",
        '"repo:example-org/airflow-gitops:environment:production:job_workflow_ref:'
        'example-org/airflow-gitops/.github/workflows/deploy.yml@refs/heads/main"',
        '"repo:example-org/*"',
        "trust-unpinned",
    ),
    Mistake(
        "policy-action-star",
        "s3-sync-celery",
        "iam/dag-read-policy.json",
        '"Action": "s3:GetObject"',
        '"Action": "s3:*"',
        "iam-wildcard",
    ),
    Mistake(
        "policy-resource-star",
        "s3-bundle-celery",
        "iam/dag-read-policy.json",
        f'"Resource": "arn:aws:s3:::{BUCKET}/dags/*"',
        '"Resource": "*"',
        "iam-wildcard",
    ),
    # --- YAML/JSON and schema ---
    Mistake(
        "unknown-chart-key",
        "git-sync-celery",
        "helm/values.yaml",
        "    recommendedProbeSetting: true",
        "    recommendedProbeSettings: true",
        "unknown-key",
        message="did you mean 'recommendedProbeSetting'",
    ),
    Mistake(
        "unknown-top-level-key",
        "efs-celery",
        "helm/values.yaml",
        'defaultAirflowTag: "3.2.2"',
        'defaultAirflowTags: "3.2.2"',
        "unknown-key",
        message="did you mean 'defaultAirflowTag'",
    ),
    Mistake(
        "bad-indentation",
        "s3-sync-celery",
        "stack.yaml",
        '  region: "eu-west-1"',
        '   region: "eu-west-1"',
        "syntax",
    ),
    Mistake(
        "duplicate-key",
        "git-bundle-kubernetes",
        "helm/values.yaml",
        'executor: "KubernetesExecutor"\n',
        'executor: "KubernetesExecutor"\nexecutor: "KubernetesExecutor"\n',
        "duplicate-key",
        at='executor: "KubernetesExecutor"',
        offset=1,
    ),
    Mistake(
        "duplicate-key-in-json",
        "s3-sync-celery",
        "iam/dag-read-policy.json",
        '"Sid": "ReadDagObjects",\n      "Effect": "Allow",',
        '"Sid": "ReadDagObjects",\n      "Effect": "Allow",\n      "Effect": "Deny",',
        "duplicate-key",
        at='"Effect": "Deny"',
    ),
    Mistake(
        "string-where-number-belongs",
        "git-bundle-celery",
        "stack.yaml",
        "sync_interval_seconds: 30",
        'sync_interval_seconds: "30s"',
        "wrong-type",
    ),
    Mistake(
        "string-uid-in-values",
        "efs-celery",
        "helm/values.yaml",
        "    runAsUser: 50000\n",
        '    runAsUser: "50000"\n',
        "wrong-type",
        at='runAsUser: "50000"',
    ),
    Mistake(
        "pull-policy-typo",
        "git-sync-celery",
        "helm/values.yaml",
        "    pullPolicy: IfNotPresent",
        "    pullPolicy: IfNotPresnt",
        "invalid-value",
    ),
    Mistake(
        "yaml-1.1-boolean",
        "s3-bundle-celery",
        "helm/values.yaml",
        'load_examples: "False"',
        "load_examples: no",
        "yaml-ambiguous-bool",
    ),
    Mistake(
        "trailing-comma-in-json",
        "s3-sync-celery",
        "iam/dag-reader-trust.json",
        '"sts.amazonaws.com"\n',
        '"sts.amazonaws.com",\n',
        "syntax",
        at="}",
        offset=0,
    ),
    # --- workflows ---
    Mistake(
        "action-pinned-by-tag",
        "git-sync-celery",
        ".github/workflows/validate.yml",
        "uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0",
        "uses: actions/checkout@v5",
        "action-unpinned",
    ),
    Mistake(
        "workflow-write-all",
        "efs-celery",
        ".github/workflows/validate.yml",
        "permissions: {}",
        "permissions: write-all",
        "workflow-permissions",
    ),
    *CHAINS,
]


@lru_cache(maxsize=1)
def _engine():
    """`validate` of the toolkit every bake carries (copied verbatim from the template), run in
    this process: 200-odd mistakes in ~20 s instead of a process each (~2 s with parliament).
    The command line itself (exit codes, make) is tested on every bake above and in the
    generated repo's tests."""
    sys.path.insert(0, str(TEMPLATE / "{{cookiecutter.project}}"))
    from airflow_gitops.validate.engine import validate

    return validate


def validate_in_process(repo: Path) -> list:
    return _engine()(repo, repo / "schemas")[0]


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


CASES = [(m, bake) for m in MISTAKES for bake in (m.bake, *m.bakes)]


@pytest.mark.parametrize(
    ("mistake", "bake"),
    CASES,
    ids=[f"{m.id}-{bake}" if bake != m.bake else m.id for m, bake in CASES],
)
def test_mistake_is_caught_at_its_line(baked, tmp_path, mistake, bake):
    repo = tmp_path / "repo"
    shutil.copytree(baked(**BAKES[bake]), repo)
    text, start = _edit(repo, mistake.file, mistake.old, mistake.new)
    for file, old, new in mistake.also:
        _edit(repo, file, old, new)
    expect_file = mistake.expect_file or mistake.file
    text = (repo / expect_file).read_text()
    at = mistake.at or mistake.new.strip().splitlines()[0]
    # The needle is searched from the edit onwards when it is the edited text, else from the top.
    here = expect_file == mistake.file and at in mistake.new
    line = _line_of(text, at, start if here else 0) + mistake.offset
    if mistake.id == "trailing-comma-in-json":
        line = _line_of(text, '"sts.amazonaws.com",') + 1  # the parser stops at the next token
    findings = [
        {"path": f.path, "line": f.line, "rule": f.rule, "message": f.message}
        for f in validate_in_process(repo)
    ]
    shown = "\n".join(f"{f['path']}:{f['line']}: {f['message']} [{f['rule']}]" for f in findings)
    hits = [
        f
        for f in findings
        if f["rule"] == mistake.rule and f["path"] == expect_file and int(f["line"]) == line
    ]
    assert hits, f"expected [{mistake.rule}] at {expect_file}:{line}; got:\n{shown}"
    if mistake.message:
        assert any(mistake.message in f["message"] for f in hits), shown


# --- valid edits a team makes: `validate` must stay quiet ---------------------------------------


@dataclass
class ValidEdit:
    id: str
    edits: list = field(default_factory=list)  # (file, old, new), each replaced once
    files: dict = field(default_factory=dict)  # new files: path -> text
    bakes: tuple = ALL


BEFORE_SECURITY = "securityContexts:\n  pod:\n"
VALID_EDITS = [
    ValidEdit(
        "second-irsa-service-account",
        files={
            "k8s/secrets-reader.yaml": (
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: airflow-secrets-reader\n  namespace: airflow\n"
                "  annotations:\n    eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/platform-secrets-reader\n"
            )
        },
    ),
    ValidEdit(
        "secrets-backend",
        edits=[
            (
                "helm/values.yaml",
                BEFORE_SECURITY,
                "env:\n  - name: AIRFLOW__SECRETS__BACKEND\n"
                "    value: airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend\n"
                "  - name: AIRFLOW__SECRETS__BACKEND_KWARGS\n"
                '    value: \'{"connections_prefix": "airflow/connections", "variables_prefix": null}\'\n'
                + BEFORE_SECURITY,
            )
        ],
    ),
    ValidEdit(
        "extra-manifests-yaml-and-yml",
        files={
            "k8s/app-config.yml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n  namespace: airflow\n"
            'data:\n  retention_days: "30"\n',
            "k8s/network-policy.yaml": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny-ingress\n"
            "  namespace: airflow\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
        },
    ),
    ValidEdit(
        "yaml-anchors-and-merge-keys",
        edits=[
            (
                "helm/values.yaml",
                BEFORE_SECURITY,
                "pgbouncer:\n  resources: &small\n    requests: {cpu: 100m, memory: 256Mi}\n    limits: {memory: 512Mi}\n"
                "flower:\n  resources:\n    <<: *small\n    limits: {memory: 1Gi}\n"
                + BEFORE_SECURITY,
            )
        ],
        files={
            "k8s/shared-labels.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: airflow\n"
            "  labels: &team {team: data}\n  annotations: *team\ndata: {}\n"
        },
    ),
    ValidEdit(
        "policy-for-another-bucket",
        files={
            "iam/data-read-policy.json": (
                '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {\n      "Sid": "ReadWarehouseExports",\n'
                '      "Effect": "Allow",\n      "Action": ["s3:GetObject"],\n      "Resource": "arn:aws:s3:::team-warehouse-exports/*"\n'
                "    }\n  ]\n}\n"
            )
        },
    ),
    ValidEdit(
        "dag-reading-a-connection-by-id",
        files={
            "dags/warehouse.py": (
                '"""Reads its connection from the secrets backend; no credentials here."""\n\n'
                'WAREHOUSE_CONN_ID = "warehouse"\nEXAMPLE_URI = "postgresql://USER:PASSWORD@HOST:5432/db"\n'
            )
        },
    ),
    ValidEdit(
        "docs-with-this-repos-commands",
        edits=[
            (
                "README.md",
                "\n",
                (
                    "\n<!-- kubeconfig: `aws eks update-kubeconfig --name data-platform --region eu-west-1` -->\n"
                ),
            )
        ],
    ),
]
VALID_CASES = [(edit, bake) for edit in VALID_EDITS for bake in edit.bakes]


@pytest.mark.parametrize(("edit", "bake"), VALID_CASES, ids=[f"{e.id}-{b}" for e, b in VALID_CASES])
def test_valid_edit_stays_clean(baked, tmp_path, edit, bake):
    repo = tmp_path / "repo"
    shutil.copytree(baked(**BAKES[bake]), repo)
    for file, old, new in edit.edits:
        _edit(repo, file, old, new)
    for path, text in edit.files.items():
        (repo / path).write_text(text)
    found = [f.text() for f in validate_in_process(repo)]
    assert found == [], "\n".join(found)

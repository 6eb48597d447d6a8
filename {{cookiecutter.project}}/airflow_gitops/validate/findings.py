"""A finding: one problem at one place in one file, and how it is printed."""

from __future__ import annotations

from dataclasses import dataclass

# Every rule id a finding may carry; docs/validation.md documents each (a test keeps them equal).
RULE_IDS = frozenset(
    {
        # files and schemas
        "syntax",
        "duplicate-key",
        "yaml-ambiguous-bool",
        "unknown-key",
        "wrong-type",
        "missing-key",
        "invalid-value",
        "missing-file",
        # hostile files: read no further than is safe
        "file-too-large",
        "yaml-too-deep",
        "yaml-alias-budget",
        "symlink-outside-repo",
        # names across files
        "namespace-mismatch",
        "sa-unnamed",
        "sa-missing",
        "irsa-mismatch",
        "pvc-missing",
        "pvc-access-mode",
        "storageclass-missing",
        "bucket-mismatch",
        "prefix-mismatch",
        "stack-mismatch",
        # DAG delivery
        "dags-not-delivered",
        "dags-volume-writable",
        "dags-task-pod-sidecar",
        "dags-sync-misplaced",
        "bundle-connection-missing",
        "s3-reader-irsa",
        # admission: what the API server or the chart refuses, or accepts and never runs
        "pod-security",
        "resource-limits",
        "api-removed",
        "storageclass-provisioner",
        "executor-broker",
        "bundle-name-duplicate",
        "dags-folder",
        "dags-subdir-missing",
        # security
        "image-unpinned",
        "container-root",
        "container-privileged",
        "privilege-escalation",
        "sidecar-hardening",
        "secret-committed",
        "default-password",
        "gitsync-known-hosts",
        "gitsync-ssh-key",
        # IAM and the GitHub OIDC chain
        "trust-unpinned",
        "iam-wildcard",
        "oidc-subject",
        "oidc-job",
        "deploy-branch",
        "iam-unknown-action",
        "iam-resource-format",
        "iam-s3-arn",
        "iam-duplicate-sid",
        "iam-parliament",
        # workflows
        "workflow-permissions",
        "action-unpinned",
        "checkout-credentials",
        "workflow-injection",
        "workflow-cron",
        "workflow-expression",
        "workflow-local-action",
        "manifest-not-deployed",
        # production shape
        "resources-missing",
        "keda-executor",
        "ingress-tls",
        "priorityclass-missing",
        "api-server-unreachable",
        "servicemonitor-target",
        "deploy-group-unbound",
        "cloudwatch-dashboard",
        "cloudwatch-alarms",
        # task logs, secrets backend, Airflow image
        "log-location",
        "log-claim",
        "secrets-prefix",
        "airflow-image",
        # environments (stack.yaml environments:, environments/<name>/)
        "unknown-reference",
        "environment-shape",
        "environment-collision",
        "release-pin",
    }
)


@dataclass(frozen=True, order=True)
class Finding:
    path: str  # relative to the repository root, with forward slashes
    line: int  # 1-based
    col: int  # 1-based
    message: str
    rule: str

    def __post_init__(self) -> None:
        if self.rule not in RULE_IDS:  # a programming error, caught by the tests
            raise ValueError(f"unregistered rule id {self.rule!r}")

    def text(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message} [{self.rule}]"

    def annotation(self) -> str:
        """The GitHub Actions workflow command that puts this finding on its line in the PR."""
        return (
            f"::error file={_escape_property(self.path)},line={self.line},col={self.col},"
            f"title={_escape_property(self.rule)}::{_escape_data(self.message)} [{self.rule}]"
        )


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")

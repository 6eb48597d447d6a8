"""Facts derived from stack.yaml, checked wherever they are written (one table, ``DERIVED``).

stack.yaml holds each fact once; the generated files spell some of them out (IAM ARNs carry the
account, region and cluster; the sync image's ECR registry carries the account and region; the
docs show commands with the cluster and region). When stack.yaml changes and they do not, the
deploy fails after merge (AccessDenied, an image that cannot be pulled). Each row says which
fact a pattern derives from, in which files it appears, and what the value must be; a new file
kind gets the checks by adding its glob to ``FILES`` or a row here.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import S3_MODES

# Where derived facts are written. stack.yaml is the source; schemas/ and tests/ hold examples.
FILES = {
    "iam": ("iam/*.json",),
    "config": ("helm/*.yaml", "helm/*.yml", "k8s/*.yaml", "k8s/*.yml"),
    "workflows": (
        ".github/workflows/*.yml",
        ".github/workflows/*.yaml",
        ".github/actions/*/action.yml",
    ),
    "docs": ("README.md", "docs/*.md"),
}
EVERYWHERE = ("iam", "config", "workflows", "docs")
# Policies whose S3 ARNs are the DAG bucket (the readers', the deploy's and any per-job role's
# that ships DAGs). A policy for another bucket (logs, data) lives in another file.
DAG_BUCKET_POLICIES = (
    "iam/dag-read-policy.json",
    "iam/deploy*-policy.json",
    "iam/*sync-dags*-policy.json",
    "iam/*push-dags*-policy.json",
)

_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d"
# Sub-resources of an EKS cluster whose ARN names the cluster after the type.
_EKS_TYPES = "cluster|addon|nodegroup|access-entry|podidentityassociation|fargateprofile|identityproviderconfig"


@dataclass(frozen=True)
class Derived:
    fact: str  # dotted path in stack.yaml
    where: tuple  # keys of FILES, or globs
    pattern: re.Pattern  # group 1 is the value as written
    what: str  # what the value is, for the message
    rule: str = "stack-mismatch"
    expect: Callable | None = None  # stack.yaml's value -> the written value (default: equal)
    when: Callable | None = None  # repo -> whether the row applies (default: always)
    also: tuple = ()  # other facts the written value may equal instead (the log bucket, say)


DERIVED = (
    Derived(
        "aws.account_id",
        EVERYWHERE,
        re.compile(r"\barn:aws:(?!s3:)[a-z0-9-]+:[a-z0-9-]*:(\d{12}):"),
        "the ARN's account",
    ),
    Derived(
        "aws.account_id",
        EVERYWHERE,
        re.compile(r"\b(\d{12})\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com"),
        "the ECR registry's account",
    ),
    Derived(
        "aws.region",
        EVERYWHERE,
        re.compile(rf"\barn:aws:[a-z0-9-]+:({_REGION}):"),
        "the ARN's region",
    ),
    Derived(
        "aws.region",
        EVERYWHERE,
        re.compile(r"\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com"),
        "the ECR registry's region",
    ),
    Derived(
        "aws.region",
        EVERYWHERE,
        re.compile(r"\boidc\.eks\.([a-z0-9-]+)\.amazonaws\.com"),
        "the EKS OIDC issuer's region",
    ),
    Derived(
        "aws.region",
        ("config",),
        re.compile(
            r"name:\s*[\"']?AWS_(?:DEFAULT_)?REGION[\"']?\s*\n\s*value:\s*[\"']?([A-Za-z0-9-]+)"
        ),
        "AWS_REGION",
    ),
    Derived(
        "aws.region",
        ("docs", "workflows"),
        re.compile(rf"--region[ =][\"']?({_REGION})\b"),
        "--region",
    ),
    Derived(
        "aws.region",
        ("workflows",),
        re.compile(rf"\baws-region:\s*[\"']?({_REGION})\b"),
        "aws-region",
    ),
    Derived(
        "ui.certificate_arn",
        ("config",),
        re.compile(r"certificate-arn:\s*[\"']?(arn:aws:acm:[^\s\"']+)"),
        "the load balancer's certificate",
        when=lambda repo: repo.fact("ui") is not None,
    ),
    Derived(
        "ui.hostname",
        ("config",),
        re.compile(r"base_url:\s*[\"']?https://([a-z0-9.-]+)"),
        "the API server's base_url host",
        when=lambda repo: repo.fact("ui") is not None,
    ),
    Derived(
        "images.s3_sync_repository",
        ("config",),
        re.compile(
            r"\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/([a-z0-9._/-]*s3-sync[a-z0-9._/-]*)[:@]"
        ),
        "the sync image's ECR repository",
    ),
    Derived(
        "eks.cluster_name",
        EVERYWHERE,
        re.compile(rf"\barn:aws:eks:[^:\s]*:[^:\s]*:(?:{_EKS_TYPES})/([A-Za-z0-9_-]+)"),
        "the EKS ARN's cluster",
    ),
    Derived(
        "eks.cluster_name",
        ("docs", "workflows"),
        re.compile(
            r"\beks [a-z-]+\b[^\n]*?--(?:name|cluster-name)[ =][\"']?([A-Za-z0-9][A-Za-z0-9_-]*)"
        ),
        "the cluster in the `aws eks` command",
    ),
    Derived(
        "eks.cluster_name",
        ("docs", "workflows"),
        re.compile(r"\beksctl\b[^\n]*?--cluster[ =][\"']?([A-Za-z0-9][A-Za-z0-9_-]*)"),
        "the cluster in the eksctl command",
    ),
    Derived(
        "dags.bucket",
        DAG_BUCKET_POLICIES,
        re.compile(r"\barn:aws:s3:::([a-z0-9][a-z0-9.-]*[a-z0-9])(?=[/\"*]|$)"),
        "the S3 ARN's bucket",
        rule="bucket-mismatch",
        when=lambda repo: repo.fact("dags", "source") in S3_MODES,
    ),
    Derived(
        "dags.bucket",
        ("docs",),
        re.compile(r"\bs3://([a-z0-9][a-z0-9.-]*[a-z0-9])(?=[/\s`\"']|$)"),
        "the bucket in the command",
        rule="bucket-mismatch",
        when=lambda repo: repo.fact("dags", "source") in S3_MODES,
        also=("logs.bucket",),
    ),
    Derived(
        "logs.bucket",
        ("docs",),
        re.compile(r"\bs3://([a-z0-9][a-z0-9.-]*[a-z0-9])(?=[/\s`\"']|$)"),
        "the bucket in the command",
        rule="bucket-mismatch",
        when=lambda repo: repo.fact("dags", "source") not in S3_MODES,
    ),
)


def _globs(where: tuple) -> tuple:
    return tuple(glob for key in where for glob in FILES.get(key, (key,)))


def check(repo) -> Iterator[Finding]:
    texts = {**repo.other_texts, **repo.texts}
    texts.pop("stack.yaml", None)
    for row in DERIVED:
        if row.when and not row.when(repo):
            continue
        fact = repo.fact(*row.fact.split("."))
        if not isinstance(fact, str) or not fact:
            continue  # the schema reports a missing or malformed fact
        expected = row.expect(fact) if row.expect else fact
        allowed = {expected, *(repo.fact(*other.split(".")) for other in row.also)}
        globs = _globs(row.where)
        for path, text in texts.items():
            if not any(fnmatch.fnmatch(path, glob) for glob in globs):
                continue
            for match in row.pattern.finditer(text):
                value = match.group(1)
                if value in allowed:
                    continue
                start = match.start(1)
                line = text.count("\n", 0, start) + 1
                col = start - (text.rfind("\n", 0, start) + 1) + 1
                yield Finding(
                    path,
                    line,
                    col,
                    f"{row.what} {value!r} is not stack.yaml's {row.fact} {expected!r} "
                    "(derived from stack.yaml: change both together)",
                    row.rule,
                )

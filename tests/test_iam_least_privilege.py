"""Every IAM document the template generates, in every mode, checked with parliament (AWS's
authorization reference: actions exist, each resource fits a resource type the action
supports, condition keys and operators fit) and its community auditors (privilege escalation,
permissions management, credentials exposure); any finding of medium or worse fails.

And the issue's line for the roles GitHub Actions assume: none can write IAM, pass a role,
write a bucket policy or public access block, or change EKS access, in any mode; each trusts
exactly one workflow file on the deploy branch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import parliament
import pytest
import yaml
from parliament import analyze_policy_string

# (dag_source, s3_sync_image, github_oidc_subject, aws_pod_credentials[, metrics_backend]): every mode, the
# immutable subject once, EKS Pod Identity in the modes whose pods need AWS.
COMBINATIONS = [
    ("s3-sync", "own-image", "classic", "irsa"),
    ("s3-sync", "aws-cli", "classic", "irsa"),
    ("s3-bundle", "own-image", "classic", "irsa"),
    ("efs", "own-image", "classic", "irsa"),
    ("git-sync", "own-image", "classic", "irsa"),
    ("git-bundle", "own-image", "classic", "irsa"),
    ("s3-sync", "own-image", "immutable", "irsa"),
    ("s3-bundle", "own-image", "classic", "pod-identity"),
    ("efs", "own-image", "classic", "pod-identity"),
    # metrics_backend cloudwatch: the agent's role, the deploy role's dashboard and alarm grants
    ("git-sync", "own-image", "classic", "irsa", "cloudwatch"),
    ("s3-bundle", "own-image", "classic", "pod-identity", "cloudwatch"),
]
IDS = ["-".join(c) for c in COMBINATIONS]

# Tokens the toolkit replaces from eks:DescribeCluster when bootstrap writes a document.
RUNTIME = {
    "EKS_OIDC_ISSUER": "oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF",
    "EKS_CLUSTER_VPC": "vpc-0123456789abcdef0",
}

SEVERITIES = ["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"]

# Findings accepted, each for one action in one file, with the reason. Nothing else may be
# medium or worse.
ACCEPTED = {
    # docker login to push the image: the token it returns can do only what the role's ECR
    # permissions allow (push to the one repository).
    ("build-sync-image-role-policy.json", "CREDENTIALS_EXPOSURE", "ecr:GetAuthorizationToken"),
    ("build-airflow-image-role-policy.json", "CREDENTIALS_EXPOSURE", "ecr:GetAuthorizationToken"),
}

CI_ROLE_POLICIES = (
    "read-state-policy.json",
    "deploy-role-policy.json",
    "sync-dags-role-policy.json",
    "build-sync-image-role-policy.json",
    "build-airflow-image-role-policy.json",
)


def severity_of(issue: str) -> str:
    base = Path(parliament.__file__).parent
    config = yaml.safe_load((base / "config.yaml").read_text())
    config.update(
        yaml.safe_load((base / "community_auditors" / "config_override.yaml").read_text())
    )
    return (config.get(issue) or {}).get("severity") or "MEDIUM"  # unknown: count it


def accepted_actions(repo: Path, name: str) -> set[str]:
    """The file's actions, when the accepted one is its only credential-exposing action
    (parliament reports CREDENTIALS_EXPOSURE without naming the action)."""
    exposing = {
        "ecr:GetAuthorizationToken",
        "sts:GetSessionToken",
        "iam:CreateAccessKey",
        "ecr-public:GetAuthorizationToken",
        "codeartifact:GetAuthorizationToken",
    }
    document = json.loads(rendered(repo, name))
    actions = {
        a
        for s in document["Statement"]
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    return actions if actions & exposing == {"ecr:GetAuthorizationToken"} else set()


def rendered(repo: Path, name: str) -> str:
    text = (repo / "iam" / name).read_text()
    for token, value in RUNTIME.items():
        text = text.replace(token, value)
    return text


@pytest.fixture(scope="module", params=COMBINATIONS, ids=IDS)
def repo(request, baked):
    source, image, subject, pods, *backend = request.param
    answers = {
        "dag_source": source,
        "s3_sync_image": image,
        "github_oidc_subject": subject,
        "aws_pod_credentials": pods,
        "metrics_backend": backend[0] if backend else "prometheus",
    }
    if subject == "immutable":
        answers.update(github_owner_id="1001", github_repository_id="2002")
    return baked(**answers)


def test_parliament_finds_nothing_medium_or_worse(repo):
    serious = []
    for path in sorted((repo / "iam").glob("*.json")):
        if path.name.endswith("-trust.json"):
            continue  # trust policies: checked below
        findings = analyze_policy_string(
            rendered(repo, path.name), include_community_auditors=True
        ).findings
        for finding in findings:
            level = severity_of(finding.issue)
            if SEVERITIES.index(level) < SEVERITIES.index("MEDIUM"):
                continue
            if any(
                path.name == f and finding.issue == i and a in accepted_actions(repo, f)
                for f, i, a in ACCEPTED
            ):
                continue
            serious.append((path.name, level, finding.issue, finding.detail))
    assert serious == []


def test_parliament_would_catch_what_this_review_found():
    """The check can fail: the pre-fix deploy role's IAM writes are rated HIGH."""
    old = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["iam:CreatePolicyVersion", "iam:UpdateAssumeRolePolicy", "iam:PassRole"],
                "Resource": "arn:aws:iam::123456789012:role/x",
            }
        ],
    }
    issues = {
        f.issue
        for f in analyze_policy_string(json.dumps(old), include_community_auditors=True).findings
    }
    assert {"PRIVILEGE_ESCALATION", "PERMISSIONS_MANAGEMENT_ACTIONS"} & issues
    assert any(severity_of(i) in ("MEDIUM", "HIGH", "CRITICAL") for i in issues)


def test_no_ci_role_can_write_iam_pass_a_role_or_open_the_bucket(repo):
    """Parliament's access levels: no CI role holds a "Permissions management" action, nor
    any IAM, bucket-policy, public-access-block or EKS access action that is not a read."""
    definition = {
        s["prefix"]: {p["privilege"]: p["access_level"] for p in s["privileges"]}
        for s in parliament.iam_definition
    }
    for name in CI_ROLE_POLICIES:
        if not (repo / "iam" / name).exists():
            continue
        document = json.loads(rendered(repo, name))
        for statement in document["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            for action in actions:
                prefix, _, privilege = action.partition(":")
                level = definition[prefix][privilege]
                assert level != "Permissions management", (name, action)
                if prefix == "iam":
                    assert level in ("Read", "List"), (name, action)
                assert not (
                    prefix == "eks" and "Access" in privilege and level not in ("Read", "List")
                ), (name, action)


def test_each_ci_role_trusts_one_workflow_on_the_deploy_branch(repo):
    stack = yaml.safe_load((repo / "stack.yaml").read_text())
    branch = stack["github"]["deploy_branch"]
    workflows = {p.name for p in (repo / ".github" / "workflows").glob("*.yml")}
    trusts = sorted(p.name for p in (repo / "iam").glob("*-role-trust.json"))
    assert "deploy-role-trust.json" in trusts and "drift-check-role-trust.json" in trusts
    for name in trusts:
        statement = json.loads(rendered(repo, name))["Statement"]
        [only] = statement
        sub = only["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]
        assert isinstance(sub, str) and "*" not in sub
        workflow_ref = sub.split(":job_workflow_ref:", 1)[1]
        path, _, ref = workflow_ref.partition("@")
        assert ref == f"refs/heads/{branch}", name
        assert os.path.basename(path) in workflows, (name, path)
    # Pull-request workflows get no AWS role.
    for path in (repo / ".github" / "workflows").glob("*.yml"):
        document = yaml.safe_load(path.read_text())
        on = document.get(True) or document.get("on")
        for job_name, job in document["jobs"].items():
            uses_aws = any(
                "configure-aws-credentials" in str(s.get("uses", "")) for s in job.get("steps", [])
            )
            if uses_aws:
                assert "pull_request" not in json.dumps(job.get("if", "")) or "!=" in job["if"], (
                    path.name,
                    job_name,
                )
                assert (job.get("permissions") or {}).get("id-token") == "write"
            if set(on) <= {"pull_request"}:
                assert not uses_aws, (path.name, job_name)
                assert "id-token" not in (job.get("permissions") or {}), (path.name, job_name)


def test_pod_roles_trust_only_their_service_accounts(repo):
    """Each pod role (IRSA or Pod Identity) names its cluster, namespace and ServiceAccounts."""
    stack = yaml.safe_load((repo / "stack.yaml").read_text())
    for name in (
        "dag-reader-trust.json",
        "efs-csi-driver-trust.json",
        "ebs-csi-driver-trust.json",
        "cloudwatch-agent-trust.json",
    ):
        if not (repo / "iam" / name).exists():
            continue
        [statement] = json.loads(rendered(repo, name))["Statement"]
        equals = statement["Condition"]["StringEquals"]
        if stack["aws"]["pod_credentials"] == "pod-identity":
            assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
            assert set(equals) == {
                "aws:RequestTag/eks-cluster-arn",
                "aws:RequestTag/kubernetes-namespace",
                "aws:RequestTag/kubernetes-service-account",
            }
            assert equals["aws:RequestTag/eks-cluster-arn"].endswith(
                f":cluster/{stack['eks']['cluster_name']}"
            )
        else:
            assert statement["Principal"]["Federated"].endswith(RUNTIME["EKS_OIDC_ISSUER"])
        assert "*" not in json.dumps(equals)

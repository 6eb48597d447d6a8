"""GitHub's side of the CI roles: the customized OIDC subject and the environment's rules.

The GitHub API is a fake here (``FakeGitHub``: the two endpoints bootstrap reads and the one
it writes, with the bodies GitHub documents); no test reaches api.github.com.
"""

from __future__ import annotations

import pytest
from airflow_gitops.aws import github
from airflow_gitops.aws.session import AwsContext
from aws_testkit import stack_for

REPO = "example-org/airflow-gitops"
SUB = f"/repos/{REPO}/actions/oidc/customization/sub"
ENV = f"/repos/{REPO}/environments/production"


class FakeGitHub:
    def __init__(self, template=None, environment=None, branches=None) -> None:
        self.template = template or {"use_default": True}
        self.environment = environment
        self.branches = branches or []
        self.calls: list[tuple[str, str, dict | None]] = []

    def __call__(self, method, path, body):
        self.calls.append((method, path, body))
        if path == SUB and method == "GET":
            return 200, self.template
        if path == SUB and method == "PUT":
            self.template = body
            return 201, None
        if path == ENV and method == "GET":
            return (404, None) if self.environment is None else (200, self.environment)
        if path == f"{ENV}/deployment-branch-policies":
            return 200, {"branch_policies": [{"name": b, "type": "branch"} for b in self.branches]}
        raise AssertionError((method, path))


def context(dry_run=False):
    return AwsContext(stack_for("git-sync"), ".", session=None, dry_run=dry_run)


def test_subject_names_repository_environment_workflow_and_branch():
    stack = stack_for("s3-sync")
    assert github.subject(stack, "deploy.yml", True) == (
        "repo:example-org/airflow-gitops:environment:production:job_workflow_ref:"
        "example-org/airflow-gitops/.github/workflows/deploy.yml@refs/heads/main"
    )
    assert github.subject(stack, "drift-check.yml", False) == (
        "repo:example-org/airflow-gitops:ref:refs/heads/main:job_workflow_ref:"
        "example-org/airflow-gitops/.github/workflows/drift-check.yml@refs/heads/main"
    )


def test_bootstrap_sets_the_subject_template_once():
    fake = FakeGitHub()
    ctx = context()
    [result] = github.GithubSubjectTemplate(ctx.stack, fake).converge(ctx)
    assert (result.action, result.details) == (
        "update",
        ["claim keys repo, context, job_workflow_ref"],
    )
    assert fake.calls[-1] == (
        "PUT",
        SUB,
        {"use_default": False, "include_claim_keys": github.CLAIM_KEYS},
    )
    [again] = github.GithubSubjectTemplate(ctx.stack, fake).converge(ctx)
    assert again.action == "ok" and [c[0] for c in fake.calls] == ["GET", "PUT", "GET"]


def test_plan_only_reads_the_template():
    fake = FakeGitHub({"use_default": False, "include_claim_keys": ["repo", "context"]})
    ctx = context(dry_run=True)
    [result] = github.GithubSubjectTemplate(ctx.stack, fake).converge(ctx)
    assert result.action == "update" and [c[0] for c in fake.calls] == ["GET"]
    assert any(line.startswith("+") and "job_workflow_ref" in line for line in result.diff)


def test_without_a_token_the_exact_gh_command_is_printed():
    ctx = context()
    [result] = github.GithubSubjectTemplate(ctx.stack, None).converge(ctx)
    assert result.action == "manual"
    assert result.details == [
        (
            "no GITHUB_TOKEN: run `gh api --method PUT repos/example-org/airflow-gitops/actions/"
            "oidc/customization/sub -F use_default=false -f 'include_claim_keys[]=repo' "
            "-f 'include_claim_keys[]=context' -f 'include_claim_keys[]=job_workflow_ref'`"
        )
    ]


@pytest.mark.parametrize(
    "environment,branches,missing",
    [
        (
            None,
            [],
            [
                (
                    "the environment does not exist yet (a first push would create it "
                    "unprotected): create it with required reviewers and a branch rule"
                )
            ],
        ),
        (
            {"protection_rules": [], "deployment_branch_policy": None},
            [],
            ["no required reviewers", "no deployment branch rule (allow only main)"],
        ),
        (
            {
                "protection_rules": [
                    {"type": "required_reviewers", "reviewers": [{"type": "User"}]}
                ],
                "deployment_branch_policy": {
                    "protected_branches": True,
                    "custom_branch_policies": False,
                },
            },
            [],
            ["branch rule is 'protected branches'; use a custom rule for main only"],
        ),
        (
            {
                "protection_rules": [
                    {"type": "required_reviewers", "reviewers": [{"type": "Team"}]}
                ],
                "deployment_branch_policy": {
                    "protected_branches": False,
                    "custom_branch_policies": True,
                },
            },
            ["main", "release/*"],
            ["branch rules ['main', 'release/*'], wanted exactly ['main']"],
        ),
        (
            {
                "protection_rules": [
                    {"type": "required_reviewers", "reviewers": [{"type": "Team"}]}
                ],
                "deployment_branch_policy": {
                    "protected_branches": False,
                    "custom_branch_policies": True,
                },
            },
            ["main"],
            [],
        ),
    ],
)
def test_environment_check_says_what_is_missing(environment, branches, missing):
    fake = FakeGitHub(environment=environment, branches=branches)
    ctx = context()
    [result] = github.GithubEnvironment(ctx.stack, fake).converge(ctx)
    assert result.details == missing
    assert result.action == ("manual" if missing else "ok")
    assert all(method == "GET" for method, _, _ in fake.calls)


def test_a_trust_for_another_branch_is_refused(tmp_path):
    import json

    from airflow_gitops.errors import ToolkitError
    from aws_testkit import make_repo

    stack = stack_for("git-sync")
    root = make_repo(tmp_path, stack)
    path = root / "iam" / "deploy-role-trust.json"
    path.write_text(path.read_text().replace("@refs/heads/main", "@refs/heads/feature"))
    ctx = AwsContext(stack, root, session=None, dry_run=True)
    with pytest.raises(ToolkitError, match="deploy-role-trust.json: subject"):
        github.check_trust_subject(
            ctx, "deploy-role-trust.json", github.subject(stack, "deploy.yml", True)
        )
    assert json.loads(path.read_text())  # still a valid document: only the subject differs

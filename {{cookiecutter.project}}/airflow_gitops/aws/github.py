"""GitHub's side of the CI roles: the OIDC subject each role trusts, and the repository settings
that make that subject mean "this workflow, on the deploy branch, in the protected environment".

GitHub's default subject for a job in an environment is ``repo:OWNER/NAME:environment:ENV``:
it names no branch, so a workflow pushed to any branch that declares the environment would get
the role. This repository therefore asks GitHub for a customized subject (``PUT
/repos/{owner}/{repo}/actions/oidc/customization/sub`` with the claim keys below), whose
``job_workflow_ref`` claim names the workflow file *and* the ref it runs from:

    repo:OWNER/NAME:environment:ENV:job_workflow_ref:OWNER/NAME/.github/workflows/deploy.yml@refs/heads/BRANCH

Each CI role's trust pins one such subject, so a role is assumable only by its own workflow
file run from the deploy branch, whatever the environment's settings are. `bootstrap` sets the
template when it is given a token (``GITHUB_TOKEN`` or ``GH_TOKEN``) and prints the exact
``gh api`` command otherwise.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable

from airflow_gitops.aws.converge import MANUAL, OK, Converger, Result, load_document
from airflow_gitops.errors import ToolkitError

CLAIM_KEYS = ["repo", "context", "job_workflow_ref"]
API = "https://api.github.com"
TOKEN_VARIABLES = ("GITHUB_TOKEN", "GH_TOKEN")

# (status, parsed JSON body or None) for (method, path, body).
Http = Callable[[str, str, dict | None], tuple[int, dict | None]]


def repo_part(stack: dict) -> str:
    """The ``repo`` claim as stack.yaml's github.oidc_subject format writes it."""
    github = stack["github"]
    if github.get("oidc_subject") == "immutable":
        owner, _, name = github["repository"].partition("/")
        return f"{owner}@{github['owner_id']}/{name}@{github['repository_id']}"
    return github["repository"]


def subject(stack: dict, workflow: str, environment: bool) -> str:
    """The OIDC subject of a job of ``workflow`` on the deploy branch (in the environment or not).

    Without an environment GitHub's ``context`` is the ref itself (``ref:refs/heads/BRANCH``).
    """
    github = stack["github"]
    ref = f"refs/heads/{github['deploy_branch']}"
    context = f"environment:{github['environment']}" if environment else f"ref:{ref}"
    workflow_ref = f"{github['repository']}/.github/workflows/{workflow}@{ref}"
    return f"repo:{repo_part(stack)}:{context}:job_workflow_ref:{workflow_ref}"


def gh_command(stack: dict) -> str:
    """The one command that sets the subject template by hand (GitHub CLI, repo admin)."""
    keys = " ".join(f"-f 'include_claim_keys[]={key}'" for key in CLAIM_KEYS)
    return (
        f"gh api --method PUT repos/{stack['github']['repository']}/actions/oidc/customization/"
        f"sub -F use_default=false {keys}"
    )


def check_trust_subject(ctx, trust_file: str, expected: str) -> None:
    """A CI role's trust must pin exactly the subject stack.yaml and the workflow imply."""
    document = load_document(ctx, trust_file)
    subjects = [
        value
        for statement in document["Statement"]
        for condition in (statement.get("Condition") or {}).values()
        for key, value in condition.items()
        if key.endswith(":sub")
    ]
    if subjects != [expected]:
        raise ToolkitError(
            f"iam/{trust_file}: subject {subjects} does not match stack.yaml's github settings "
            f"({expected!r}); fix the file or stack.yaml so the role trusts exactly its own "
            "workflow on the deploy branch"
        )


def token() -> str | None:
    return next((os.environ[v] for v in TOKEN_VARIABLES if os.environ.get(v)), None)


def api(token_value: str) -> Http:
    """GitHub's REST API over HTTPS with ``token_value`` (the only non-AWS endpoint we call)."""

    def call(method: str, path: str, body: dict | None) -> tuple[int, dict | None]:
        request = urllib.request.Request(
            f"{API}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token_value}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                text = response.read().decode() or "null"
                return response.status, json.loads(text)
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except urllib.error.URLError as exc:
            raise ToolkitError(f"github api {path}: cannot reach {API} ({exc.reason})") from None

    return call


class GithubSubjectTemplate(Converger):
    """The repository's OIDC subject template: exactly ``CLAIM_KEYS``."""

    kind = "github oidc subject"

    def __init__(self, stack: dict, http: Http | None) -> None:
        super().__init__(stack["github"]["repository"])
        self.stack = stack
        self.http = http

    def converge(self, ctx) -> list[Result]:
        if self.http is None:
            return [
                Result(
                    MANUAL,
                    self.kind,
                    self.name,
                    [f"no GITHUB_TOKEN: run `{gh_command(self.stack)}`"],
                )
            ]
        path = f"/repos/{self.name}/actions/oidc/customization/sub"
        status, current = self.http("GET", path, None)
        if status != 200 or current is None:
            raise ToolkitError(
                f"{self.label}: GET {path} answered {status}; the token needs "
                "admin rights on the repository (or run "
                f"`{gh_command(self.stack)}` yourself)"
            )
        wanted = {"use_default": False, "include_claim_keys": CLAIM_KEYS}
        now = {
            "use_default": current.get("use_default"),
            "include_claim_keys": current.get("include_claim_keys") or [],
        }
        if now == wanted:
            return [Result(OK, self.kind, self.name, owner=self.owner)]

        def put() -> None:
            code, _ = self.http("PUT", path, wanted)
            if code not in (200, 201, 204):
                raise ToolkitError(
                    f"{self.label}: PUT {path} answered {code}; run "
                    f"`{gh_command(self.stack)}` as a repository admin"
                )

        self.show_diff("oidc subject template", now, wanted)
        return [self.finish(ctx, True, [(f"claim keys {', '.join(CLAIM_KEYS)}", put)])]


class GithubEnvironment(Converger):
    """Read-only: the deploy environment has required reviewers and admits only the deploy
    branch. GitHub settings are the team's to set; this says what is missing."""

    kind = "github environment"

    def __init__(self, stack: dict, http: Http | None) -> None:
        super().__init__(stack["github"]["environment"])
        self.stack = stack
        self.http = http

    def converge(self, ctx) -> list[Result]:
        repository = self.stack["github"]["repository"]
        branch = self.stack["github"]["deploy_branch"]
        if self.http is None:
            return [
                Result(
                    MANUAL,
                    self.kind,
                    self.name,
                    [
                        (
                            "no GITHUB_TOKEN: check by hand that it has required reviewers and admits "
                            f"only branch {branch}"
                        )
                    ],
                )
            ]
        path = f"/repos/{repository}/environments/{self.name}"
        status, environment = self.http("GET", path, None)
        missing: list[str] = []
        if status == 404 or environment is None:
            missing.append(
                "the environment does not exist yet (a first push would create it "
                "unprotected): create it with required reviewers and a branch rule"
            )
        else:
            rules = environment.get("protection_rules") or []
            if not any(r.get("type") == "required_reviewers" and r.get("reviewers") for r in rules):
                missing.append("no required reviewers")
            policy = environment.get("deployment_branch_policy")
            if not policy:
                missing.append(f"no deployment branch rule (allow only {branch})")
            elif policy.get("custom_branch_policies"):
                _, found = self.http("GET", f"{path}/deployment-branch-policies", None)
                names = sorted(p.get("name") for p in (found or {}).get("branch_policies", []))
                if names != [branch]:
                    missing.append(f"branch rules {names}, wanted exactly [{branch!r}]")
            else:
                missing.append(
                    f"branch rule is 'protected branches'; use a custom rule for {branch} only"
                )
        return [Result(MANUAL if missing else OK, self.kind, self.name, missing)]

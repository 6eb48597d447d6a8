"""The GitHub OIDC chain, end to end: the token a CI job gets must be one its role trusts.

Each CI role (airflow_gitops.aws.resources.ci_roles) trusts exactly one subject: GitHub's
customized ``sub`` with the claims ``repo``, ``context`` and ``job_workflow_ref``, i.e. this
repository (classic ``owner/name`` or immutable ``owner@ID/name@ID``), its environment (or, for
the drift check, the deploy branch's ref) and its own workflow file on the deploy branch. The
expected subject comes from the function bootstrap uses (``airflow_gitops.aws.github.subject``).
The jobs must ask for the token (``id-token: write``), run in the environment stack.yaml names
(read at run time, never hard-coded), and run only on the deploy branch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import as_dict, as_list, as_str

CONFIGURE_AWS = "aws-actions/configure-aws-credentials@"
# `github.ref` compared with a literal, or with the deploy branch (ref is refs/heads/<branch>).
_REF_LITERAL = re.compile(
    r"github\.ref(_name)?\s*(?:==|!=)\s*'([^']*)'|'([^']*)'\s*(?:==|!=)\s*github\.ref(_name)?\b"
)
_REF_VS_BRANCH = re.compile(
    r"github\.ref\s*(?:==|!=)\s*[\w.]*deploy_branch|deploy_branch\s*(?:==|!=)\s*github\.ref\b(?!_)"
)


# A role-assuming job runs in the GitHub environment of the stack.yaml environment it deploys:
# each entry of the `targets` that ci-facts --targets lists (a matrix over them).
ENVIRONMENT_EXPRESSION = "${{ matrix.target.environment }}"


def check(repo) -> Iterator[Finding]:
    github = as_dict(repo.fact("github"))
    if not all(
        isinstance(github.get(k), str) for k in ("repository", "environment", "deploy_branch")
    ):
        return  # the schema reports the missing facts
    from airflow_gitops.aws.github import subject as github_subject
    from airflow_gitops.aws.resources import GITHUB_OIDC, ci_roles

    stack = as_dict(repo.stack.data) if repo.stack else {}
    try:
        expected = {
            f"iam/{role.trust_file}": github_subject(stack, role.workflow, role.environment)
            for role in ci_roles(stack)
        }
    except (KeyError, TypeError):  # a fact missing or mistyped: the schema says so
        return
    for path, doc in repo.iam.items():
        # A trust file of no CI role (a team's own) may trust any of the CI subjects, no other.
        subjects = [expected[path]] if path in expected else sorted(expected.values())
        yield from _github_trust(doc, subjects, GITHUB_OIDC)
    # Roles trusted on the deploy branch's ref instead of an environment (the nightly drift check).
    branch_roles = {role.workflow for role in ci_roles(stack) if not role.environment}
    for doc in repo.workflows:
        in_environment = doc.path.rsplit("/", 1)[-1] not in branch_roles
        yield from _workflow(doc, github, in_environment)


def _github_trust(doc, subjects: list[str], issuer: str) -> Iterator[Finding]:
    for index, statement in enumerate(as_list(doc.get("Statement"))):
        statement = as_dict(statement)
        spath = ("Statement", index)
        federated = as_str(as_dict(statement.get("Principal")).get("Federated"))
        provider = federated.split("oidc-provider/", 1)[1] if "oidc-provider/" in federated else ""
        if "githubusercontent" not in provider and "github" not in provider.split("/")[0]:
            continue
        if provider != issuer:
            yield doc.finding(
                spath + ("Principal", "Federated"),
                f"the GitHub OIDC provider is {issuer!r}, not {provider!r} (`make bootstrap` creates that one)",
                "oidc-subject",
            )
        for op, conditions in as_dict(statement.get("Condition")).items():
            for key, values in as_dict(conditions).items():
                if not str(key).endswith(":sub"):
                    continue
                items = values if isinstance(values, list) else [values]
                for item_index, value in enumerate(items):
                    if value in subjects:
                        continue
                    subject = subjects[0] if len(subjects) == 1 else " or ".join(subjects)
                    where = (
                        spath
                        + ("Condition", op, key)
                        + ((item_index,) if isinstance(values, list) else ())
                    )
                    yield doc.finding(
                        where,
                        f"subject {value!r} is not {subject!r}, the only one a deploy job of "
                        f"this repository gets ({_why(str(value), subject)})",
                        "oidc-subject",
                    )


def _why(value: str, subject: str) -> str:
    """What differs, in words: another repository, environment, workflow or branch."""

    def claims(sub: str) -> dict[str, str]:
        found = {}
        for key in ("repo", "environment", "ref", "job_workflow_ref"):
            marker = f"{key}:"
            start = sub.find(marker) if key == "repo" else sub.find(f":{marker}")
            if start < 0:
                continue
            start += len(marker) + (0 if key == "repo" else 1)
            end = min(
                (
                    sub.find(f":{k}:", start)
                    for k in ("environment", "ref", "job_workflow_ref")
                    if sub.find(f":{k}:", start) >= 0
                ),
                default=len(sub),
            )
            found[key] = sub[start:end]
        return found

    got, want = claims(value), claims(subject.split(" or ")[0])
    if got.get("repo") != want.get("repo"):
        return f"another repository; stack.yaml's github.repository and oidc_subject give {want.get('repo')!r}"
    if "job_workflow_ref" not in got:
        return (
            "no workflow: without job_workflow_ref any workflow of the repository, on any "
            "branch, could take the role"
        )
    if got.get("environment") != want.get("environment") or got.get("ref") != want.get("ref"):
        return "another environment or branch than stack.yaml's github.environment / deploy_branch"
    return "another workflow or branch than the one this role is for"


def _workflow(doc, github: dict, in_environment: bool = True) -> Iterator[Finding]:
    branch = github["deploy_branch"]
    jobs = as_dict(doc.get("jobs"))
    yield from _push_filter(doc, branch)
    for job_id, job in jobs.items():
        job = as_dict(job)
        jpath = ("jobs", job_id)
        condition = job.get("if")
        if isinstance(condition, str):
            yield from _branch_condition(doc, jpath + ("if",), condition, branch)
        for index, step in enumerate(as_list(job.get("steps"))):
            step = as_dict(step)
            if isinstance(step.get("if"), str):
                yield from _branch_condition(
                    doc, jpath + ("steps", index, "if"), step["if"], branch
                )
        if not _assumes_role(job):
            continue
        permissions = job.get("permissions")
        if as_dict(permissions).get("id-token") != "write":
            yield doc.finding(
                jpath + ("permissions",) if isinstance(permissions, dict) else jpath,
                f"job {job_id!r} assumes an AWS role but has no `id-token: write`: it gets no OIDC token",
                "oidc-job",
                at_key=True,
            )
        environment = job.get("environment")
        name = as_dict(environment).get("name") if isinstance(environment, dict) else environment
        epath = jpath + (
            ("environment", "name") if isinstance(environment, dict) else ("environment",)
        )
        if environment is None and not in_environment:
            continue  # its role trusts this workflow on the deploy branch's ref, not an environment
        if environment is None:
            yield doc.finding(
                jpath,
                f"job {job_id!r} assumes an AWS role outside an environment: its token's subject "
                "is a branch or pull request, which the role does not trust",
                "oidc-job",
                at_key=True,
            )
        elif not isinstance(name, str) or "${{" not in name:
            yield doc.finding(
                epath,
                f"environment {name!r} is hard-coded; use {ENVIRONMENT_EXPRESSION} "
                f"(stack.yaml's github.environment, {github['environment']!r}, which the role trusts)",
                "oidc-job",
            )
        elif ENVIRONMENT_EXPRESSION.strip("${} ") not in name:
            yield doc.finding(
                epath,
                f"environment {name!r} is not stack.yaml's github.environment "
                f"(read it with ci-facts --targets: {ENVIRONMENT_EXPRESSION})",
                "oidc-job",
            )
        if not _gated_on_deploy_branch(jobs, job_id, set()):
            yield doc.finding(
                jpath,
                f"job {job_id!r} assumes an AWS role on every branch; add "
                "`if: github.ref_name == needs.facts.outputs.deploy_branch` (or need a job that has it)",
                "oidc-job",
                at_key=True,
            )


def _assumes_role(job: dict) -> bool:
    return any(
        as_str(as_dict(step).get("uses")).startswith(CONFIGURE_AWS)
        and "role-to-assume" in as_dict(as_dict(step).get("with"))
        for step in as_list(job.get("steps"))
    )


def _gated_on_deploy_branch(jobs: dict, job_id: str, seen: set) -> bool:
    """The job, or a job it needs (a skipped need skips it), runs only on the deploy branch."""
    if job_id in seen:
        return False
    seen.add(job_id)
    job = as_dict(jobs.get(job_id))
    condition = as_str(job.get("if"))
    if (
        "github.ref_name" in condition
        and "outputs.deploy_branch" in condition
        and "always()" not in condition
    ):
        return True
    needs = job.get("needs")
    return any(
        _gated_on_deploy_branch(jobs, need, seen)
        for need in (needs if isinstance(needs, list) else [needs])
        if isinstance(need, str)
    )


def _branch_condition(doc, path: tuple, condition: str, branch: str) -> Iterator[Finding]:
    for match in _REF_LITERAL.finditer(condition):
        literal = match.group(2) if match.group(2) is not None else match.group(3)
        yield doc.finding(
            path,
            f"branch {literal!r} is hard-coded; compare github.ref_name with "
            f"needs.facts.outputs.deploy_branch (stack.yaml's github.deploy_branch, {branch!r})",
            "deploy-branch",
        )
    if _REF_VS_BRANCH.search(condition):
        yield doc.finding(
            path,
            "github.ref is refs/heads/<branch> and never equals the deploy branch's name; "
            "compare github.ref_name",
            "deploy-branch",
        )


def _push_filter(doc, branch: str) -> Iterator[Finding]:
    triggers = doc.get("on")
    push = as_dict(triggers).get("push") if isinstance(triggers, dict) else None
    branches = as_dict(push).get("branches")
    if not isinstance(branches, list):
        return
    path = ("on", "push", "branches")
    for index, pattern in enumerate(branches):
        if isinstance(pattern, str) and pattern.startswith("refs/"):
            yield doc.finding(
                path + (index,),
                f"push filters match branch names, so {pattern!r} never matches; "
                f"write {pattern.removeprefix('refs/heads/')!r}",
                "deploy-branch",
            )
    if not any(isinstance(p, str) and _branch_matches(p, branch) for p in branches):
        yield doc.finding(
            path,
            f"no filter matches stack.yaml's github.deploy_branch {branch!r}: pushes to it never "
            "start this workflow",
            "deploy-branch",
            at_key=True,
        )


def _branch_matches(pattern: str, branch: str) -> bool:
    """GitHub's branch filter: `*` stops at `/`, `**` does not."""
    regex = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace("\0", ".*")
    return bool(re.fullmatch(regex, branch))

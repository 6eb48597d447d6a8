"""The GitHub OIDC chain, end to end: the token a deploy job gets must be one the role trusts.

GitHub puts ``repo:<owner>/<name>:environment:<env>`` (or the immutable ``owner@ID/name@ID``
form) in the ``sub`` of a job that runs in an environment. The role's trust must pin exactly
that subject, for the provider of this account; the job must ask for the token
(``id-token: write``), run in the environment stack.yaml names (read at run time, never
hard-coded), and run only on the deploy branch. The subject comes from the same function
bootstrap uses (``airflow_gitops.aws.iam.github_subject``).
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


def check(repo) -> Iterator[Finding]:
    github = as_dict(repo.fact("github"))
    if not all(
        isinstance(github.get(k), str) for k in ("repository", "environment", "deploy_branch")
    ):
        return  # the schema reports the missing facts
    from airflow_gitops.aws.iam import github_subject
    from airflow_gitops.aws.resources import GITHUB_OIDC

    try:
        subject = github_subject(github)
    except KeyError:  # immutable without the ids: the schema says so
        return
    for doc in repo.iam.values():
        yield from _github_trust(doc, subject, GITHUB_OIDC)
    for doc in repo.workflows:
        yield from _workflow(doc, github)


def _github_trust(doc, subject: str, issuer: str) -> Iterator[Finding]:
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
                    if value == subject:
                        continue
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
    """What differs, in words: another repository, a branch instead of an environment, ..."""
    if ":ref:" in value:
        return "a branch subject: jobs that run in an environment get the environment's subject"
    repo, _, rest = value.partition(":environment:")
    want_repo, _, want_env = subject.partition(":environment:")
    if repo != want_repo:
        return f"another repository; stack.yaml's github.repository and oidc_subject give {want_repo!r}"
    if rest != want_env:
        return f"another environment; stack.yaml's github.environment is {want_env!r}"
    return "from stack.yaml's github facts"


def _workflow(doc, github: dict) -> Iterator[Finding]:
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
                f"environment {name!r} is hard-coded; use ${{{{ needs.facts.outputs.environment }}}} "
                f"(stack.yaml's github.environment, {github['environment']!r}, which the role trusts)",
                "oidc-job",
            )
        elif "outputs.environment" not in name:
            yield doc.finding(
                epath,
                f"environment {name!r} is not stack.yaml's github.environment "
                "(read it with ci-facts: ${{ needs.facts.outputs.environment }})",
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

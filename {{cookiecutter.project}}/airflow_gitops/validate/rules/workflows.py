"""Workflows: the properties the deploy's safety rests on (GitHub's full schema is the lint job's)."""

from __future__ import annotations

import re
from typing import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import as_dict, as_list, as_str

# `$/path`: GitHub's self-repository reference (this repository at the running commit);
# `./path`: the checked-out workspace. Both are this repository's own code.
LOCAL = ("$/", "./")
PINNED = re.compile(r"^[^@\s]+@[0-9a-f]{40}$")
# Expressions an outsider controls (a PR title, a branch name): never inside a run: script.
UNTRUSTED = re.compile(
    r"\$\{\{[^}]*\b(github\.head_ref|github\.event\.(?:pull_request|issue|comment|review|review_comment|"
    r"discussion|head_commit|commits|pages|workflow_run)\b[\w.\[\]*-]*?\b(?:title|body|ref|label|message|"
    r"name|email|page_name|head_branch))\b"
)


def check(repo) -> Iterator[Finding]:
    for doc in repo.workflows:
        permissions = doc.get("permissions")
        if "permissions" in doc.data and permissions != {}:
            yield doc.finding(
                ("permissions",),
                "top-level permissions must be {} (grant what each job needs in the job)",
                "workflow-permissions",
            )
        for job_id, job in as_dict(doc.get("jobs")).items():
            job = as_dict(job)
            jpath = ("jobs", job_id)
            uses = as_str(job.get("uses"))
            if uses and not uses.startswith(LOCAL) and not PINNED.match(uses):
                yield doc.finding(jpath + ("uses",), f"reusable workflow {uses!r} is not pinned to a full commit SHA", "action-unpinned")
            for index, step in enumerate(as_list(job.get("steps"))):
                step = as_dict(step)
                spath = jpath + ("steps", index)
                action = as_str(step.get("uses"))
                if action and not action.startswith(LOCAL + ("docker://",)) and not PINNED.match(action):
                    yield doc.finding(spath + ("uses",), f"action {action!r} is not pinned to a full commit SHA", "action-unpinned")
                if action.startswith("actions/checkout@") and as_dict(step.get("with")).get("persist-credentials") is not False:
                    yield doc.finding(spath + ("uses",), "actions/checkout without persist-credentials: false leaves the token in .git/config", "checkout-credentials")
                script = step.get("run")
                if isinstance(script, str):
                    match = UNTRUSTED.search(script)
                    if match:
                        yield doc.finding(
                            spath + ("run",),
                            f"${{{{ {match.group(1)} }}}} inside run: is script injection; pass it through env:",
                            "workflow-injection",
                        )

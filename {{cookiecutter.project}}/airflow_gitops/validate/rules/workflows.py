"""Workflows: the properties the deploy's safety rests on (GitHub's full schema is the lint job's)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator

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
                yield doc.finding(
                    jpath + ("uses",),
                    f"reusable workflow {uses!r} is not pinned to a full commit SHA",
                    "action-unpinned",
                )
            for index, step in enumerate(as_list(job.get("steps"))):
                step = as_dict(step)
                spath = jpath + ("steps", index)
                action = as_str(step.get("uses"))
                if (
                    action
                    and not action.startswith(LOCAL + ("docker://",))
                    and not PINNED.match(action)
                ):
                    yield doc.finding(
                        spath + ("uses",),
                        f"action {action!r} is not pinned to a full commit SHA",
                        "action-unpinned",
                    )
                if (
                    action.startswith("actions/checkout@")
                    and as_dict(step.get("with")).get("persist-credentials") is not False
                ):
                    yield doc.finding(
                        spath + ("uses",),
                        "actions/checkout without persist-credentials: false leaves the token in .git/config",
                        "checkout-credentials",
                    )
                script = step.get("run")
                if isinstance(script, str):
                    match = UNTRUSTED.search(script)
                    if match:
                        yield doc.finding(
                            spath + ("run",),
                            f"${{{{ {match.group(1)} }}}} inside run: is script injection; pass it through env:",
                            "workflow-injection",
                        )


# --- what actionlint would say, in-process: permissions, cron, expressions, local actions -----

PERMISSION_SCOPES = {
    "actions",
    "attestations",
    "checks",
    "contents",
    "deployments",
    "discussions",
    "id-token",
    "issues",
    "models",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
}
PERMISSION_LEVELS = {"read", "write", "none"}
# Contexts an expression may start with (GitHub's "Contexts" reference), and its functions.
CONTEXTS = {
    "github",
    "env",
    "vars",
    "job",
    "jobs",
    "steps",
    "runner",
    "secrets",
    "strategy",
    "matrix",
    "needs",
    "inputs",
}
FUNCTIONS = {
    "contains",
    "startswith",
    "endswith",
    "format",
    "join",
    "tojson",
    "fromjson",
    "hashfiles",
    "success",
    "always",
    "cancelled",
    "failure",
    "case",
}
_EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_IDENTIFIER = re.compile(r"(?<![\w.'\"-])([A-Za-z_][\w-]*)(\s*\()?((?:\.[\w*-]+|\[[^\]]*\])*)")
_STRING = re.compile(r"'(?:[^']|'')*'")
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
CRON_NAMES = (
    {},
    {},
    {},
    {
        m: i + 1
        for i, m in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        )
    },
    {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
)


def check_more(repo) -> Iterator[Finding]:
    for doc in repo.workflows:
        yield from _permissions(doc)
        yield from _cron(doc)
        yield from _expressions(doc)
        yield from _local_actions(repo, doc)
    yield from _deployed_manifests(repo)


def _permissions(doc) -> Iterator[Finding]:
    for job_id, job in as_dict(doc.get("jobs")).items():
        permissions = as_dict(job).get("permissions")
        path = ("jobs", job_id, "permissions")
        if isinstance(permissions, str):
            if permissions == "write-all":
                yield doc.finding(
                    path,
                    "write-all grants every scope; list the scopes this job needs",
                    "workflow-permissions",
                )
            continue
        for scope, level in as_dict(permissions).items():
            if scope not in PERMISSION_SCOPES:
                yield doc.finding(
                    path + (scope,),
                    f"{scope!r} is not a GitHub token permission",
                    "workflow-permissions",
                    at_key=True,
                )
            elif level not in PERMISSION_LEVELS or (scope == "id-token" and level == "read"):
                allowed = "write or none" if scope == "id-token" else "read, write or none"
                yield doc.finding(
                    path + (scope,), f"{scope}: {level!r} is not {allowed}", "workflow-permissions"
                )


def _cron(doc) -> Iterator[Finding]:
    triggers = doc.get("on")
    for index, entry in enumerate(
        as_list(as_dict(triggers).get("schedule") if isinstance(triggers, dict) else None)
    ):
        cron = as_dict(entry).get("cron")
        path = ("on", "schedule", index, "cron")
        problem = cron_problem(cron) if isinstance(cron, str) else "must be a string of five fields"
        if problem:
            yield doc.finding(path, f"cron {cron!r}: {problem}", "workflow-cron")


def cron_problem(cron: str) -> str | None:
    """Why GitHub would refuse ``cron`` (POSIX, five fields), or None."""
    fields = cron.split()
    if len(fields) != 5:
        return f"GitHub takes five fields (minute hour day month weekday), not {len(fields)}"
    for field, (low, high), names, what in zip(
        fields, CRON_RANGES, CRON_NAMES, ("minute", "hour", "day", "month", "weekday")
    ):
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                return f"{what} step {step!r} is not a positive number"
            if base == "*":
                continue
            for bound in base.split("-", 1):
                value = names.get(bound.lower(), int(bound) if bound.isdigit() else None)
                if value is None or not low <= value <= high:
                    return f"{what} {bound!r} is outside {low}-{high}"
    return None


def _strings(node, path=()):
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, path + (index,))


def _expressions(doc) -> Iterator[Finding]:
    jobs = as_dict(doc.get("jobs"))
    for path, text in _strings(doc.data):
        job = jobs.get(path[1]) if len(path) > 1 and path[0] == "jobs" else None
        bare = (
            path and path[-1] == "if" and "${{" not in text
        )  # `if:` is an expression without ${{ }}
        bodies = [text] if bare else [m.group(1) for m in _EXPRESSION.finditer(text)]
        if not bare and text.count("${{") != len(bodies):
            yield doc.finding(
                path, "an expression `${{` is not closed with `}}`", "workflow-expression"
            )
        for body in bodies:
            problem = _expression_problem(body, as_dict(job), path)
            if problem:
                yield doc.finding(
                    path, f"expression `{body.strip()[:80]}`: {problem}", "workflow-expression"
                )


def _expression_problem(body: str, job: dict, path: tuple) -> str | None:
    code = _STRING.sub("''", body)
    if code.count("(") != code.count(")") or code.count("[") != code.count("]"):
        return "unbalanced brackets"
    for match in _IDENTIFIER.finditer(code):
        name, call, rest = match.group(1), match.group(2), match.group(3)
        if name in ("true", "false", "null") or name.replace("-", "").isdigit():
            continue
        if call:
            if name.lower() not in FUNCTIONS:
                return f"{name}() is not a GitHub expression function"
            continue
        if name not in CONTEXTS:
            return (
                f"{name!r} is not a context (github, env, vars, needs, steps, inputs, secrets, ...)"
            )
        parts = [p for p in rest.split(".") if p]
        if name == "needs" and parts and job:
            needs = job.get("needs")
            needs = needs if isinstance(needs, list) else [needs]
            if parts[0] not in needs:
                return f"needs.{parts[0]}: the job does not list {parts[0]!r} under needs:"
        if name == "steps" and parts and job and len(path) > 3 and path[2] == "steps":
            earlier = {as_dict(s).get("id") for s in as_list(job.get("steps"))[: path[3]]}
            if parts[0] not in earlier:
                return f"steps.{parts[0]}: no earlier step of this job has id {parts[0]!r}"
    return None


def _local_actions(repo, doc) -> Iterator[Finding]:
    for path, text in _strings(doc.data):
        if not path or path[-1] != "uses" or not text.startswith(LOCAL):
            continue
        target = text[2:].split("@", 1)[0].strip("/")
        folder = repo.root / target
        if text.endswith((".yml", ".yaml")):
            exists = folder.is_file()
        else:
            exists = (folder / "action.yml").is_file() or (folder / "action.yaml").is_file()
        if not exists:
            yield doc.finding(
                path,
                f"{text!r}: {target}{'' if text.endswith(('.yml', '.yaml')) else '/action.yml'} "
                "is not in this repository",
                "workflow-local-action",
            )


# --- deploy.yml applies exactly the manifests validate checks ---------------------------------

DEPLOY_WORKFLOW = ".github/workflows/deploy.yml"
CLUSTER_SCOPED = {
    "Namespace",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "PersistentVolume",
    "CSIDriver",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
}
# Namespaced, but only an admin can apply them: Kubernetes refuses a Role or RoleBinding that
# grants more than its author holds, so the deploy identity cannot widen its own rights.
ADMIN_APPLIED = CLUSTER_SCOPED | {"Role", "RoleBinding"}


def _deployed_manifests(repo) -> Iterator[Finding]:
    doc = next((d for d in repo.workflows if d.path == DEPLOY_WORKFLOW), None)
    if doc is None:
        return
    scripts = [s for _, s in _strings(doc.data) if "kubectl apply" in s and "build/k8s/" in s]
    if not scripts:
        return
    globs = [g for script in scripts for g in re.findall(r"build/k8s/([\w.*?\[\]-]+)", script)]
    skipped = [
        p.strip().strip("\"'")
        for script in scripts
        for line in re.findall(r"^\s*([^()\n]+)\)\s*continue", script, re.MULTILINE)
        for p in line.split("|")
    ]
    by_file: dict = {}
    for manifest in repo.manifests:
        by_file.setdefault(manifest.path, []).append(manifest)
    for path in (p for p in repo.files if p.startswith("k8s/")):
        name = path.split("/", 1)[1]
        if not any(fnmatch.fnmatchcase(name, g) for g in globs):
            yield Finding(
                path,
                1,
                1,
                f"{DEPLOY_WORKFLOW} applies only build/k8s/{{{','.join(globs)}}}: this file is "
                "checked but never deployed",
                "manifest-not-deployed",
            )
            continue
        is_skipped = any(fnmatch.fnmatchcase(name, p) for p in skipped)
        for manifest in by_file.get(path, []):
            kind = manifest.get("kind")
            if is_skipped and kind not in ADMIN_APPLIED:
                yield manifest.finding(
                    ("kind",),
                    f"{DEPLOY_WORKFLOW} skips this file (cluster-scoped or RBAC, applied once "
                    f"by an admin), so this {kind} is never deployed; move it to another file",
                    "manifest-not-deployed",
                )
            elif not is_skipped and kind in CLUSTER_SCOPED:
                yield manifest.finding(
                    ("kind",),
                    f"{DEPLOY_WORKFLOW} applies this file with the deploy role, which may "
                    f"act only in the namespace: this cluster-scoped {kind} fails the deploy; "
                    f"put it in a file the deploy skips ({' | '.join(skipped)}) and apply it "
                    "as an admin (README: Bootstrap)",
                    "manifest-not-deployed",
                )

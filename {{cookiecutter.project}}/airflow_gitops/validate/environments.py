"""What only a repository with several environments can get wrong.

- ``environment-shape``: ``environments:`` in stack.yaml maps valid names to facts, and every
  folder under environments/ belongs to one of them.
- ``environment-collision``: two environments sharing a bucket, a role, a namespace on one
  cluster, a secrets prefix or a GitHub environment would overwrite each other's.
- ``release-pin``: each later environment's environments/<name>/release.yaml names a commit
  the environment before it ran (for the first: a commit of the deploy branch; after that: a
  commit once pinned for the previous environment), or none yet.
- an environment's values overlay (environments/<name>/values.yaml) is checked against the
  chart's values schema like helm/values.yaml, after its references are filled.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from airflow_gitops.stack import ENVIRONMENTS, ENVIRONMENTS_DIR, environment_view, fill
from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.loader import Document, parse_text
from airflow_gitops.validate.repo import STACK, read_safely

NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
RELEASE_FILE = "release.yaml"
OVERLAY_FILE = "values.yaml"
SHA = re.compile(r"^[0-9a-f]{40}$")
# Facts no two environments may share, and within what: a bucket name is global; a role, a
# policy prefix or a secrets prefix is per account; a namespace is per cluster.
GLOBAL = ("dags.bucket", "logs.bucket", "github.environment")
PER_ACCOUNT = (
    "project",
    "aws.deploy_role",
    "aws.sync_dags_role",
    "aws.build_sync_image_role",
    "aws.build_airflow_image_role",
    "aws.drift_check_role",
    "dags.reader_role",
    "logs.writer_role",
    "logs.reader_role",
    "secrets.connections_prefix",
    "secrets.variables_prefix",
    "metrics.agent_role",
    "images.airflow_repository",
    "images.s3_sync_repository",
)
PER_CLUSTER = ("airflow.namespace",)


def _stack_document(root: Path) -> Document | None:
    text, problem = read_safely(root, STACK)
    if problem or text is None:
        return None
    parsed = parse_text(STACK, text)
    docs = [d for d in parsed.documents if isinstance(d.data, dict)]
    return docs[0] if docs and not parsed.broken else None


def names_in(root: Path) -> tuple[list[str], list[Finding]]:
    """The environments of stack.yaml in promotion order ([] for one), and what is wrong with
    their shape."""
    doc = _stack_document(root)
    if doc is None or ENVIRONMENTS not in doc.data:
        return [], []
    section = doc.data[ENVIRONMENTS]
    if not isinstance(section, dict) or not section:
        why = "environments: must map each environment's name to its facts, in promotion order"
        return [], [doc.finding((ENVIRONMENTS,), why, "environment-shape", at_key=True)]
    names, findings = [], []
    for name, facts in section.items():
        if not isinstance(name, str) or not NAME.match(name):
            why = f"environment {name!r}: 1-12 lowercase letters and digits, starting with a letter"
            findings.append(doc.finding((ENVIRONMENTS, name), why, "environment-shape", True))
        elif not isinstance(facts, dict):
            why = f"environments.{name}: must be a mapping of the facts that differ"
            findings.append(doc.finding((ENVIRONMENTS, name), why, "environment-shape", True))
        else:
            names.append(name)
    return (names if not findings else []), findings


def file_count(root: Path, names: list[str]) -> int:
    return sum(
        (root / ENVIRONMENTS_DIR / name / file).is_file()
        for name in names
        for file in (OVERLAY_FILE, RELEASE_FILE)
    )


def check(root: Path, schemas, names: list[str]) -> list[Finding]:
    doc = _stack_document(root)
    if doc is None:
        return []
    views = {name: environment_view(doc.data, name, []) for name in names}
    return [
        *_folders(root, names),
        *_overlays(root, schemas, views),
        *_collisions(doc, views),
        *_pins(root, names, views),
    ]


def _folders(root: Path, names: list[str]) -> list[Finding]:
    base = root / ENVIRONMENTS_DIR
    if not base.is_dir():
        return []
    return [
        Finding(
            f"{ENVIRONMENTS_DIR}/{folder.name}",
            1,
            1,
            f"no environment {folder.name!r} in stack.yaml (known: {', '.join(names)}); "
            "rename or remove the folder",
            "environment-shape",
        )
        for folder in sorted(base.iterdir())
        if folder.is_dir() and folder.name not in names
    ]


def _overlays(root: Path, schemas, views: dict) -> list[Finding]:
    findings: list[Finding] = []
    for name, view in views.items():
        path = f"{ENVIRONMENTS_DIR}/{name}/{OVERLAY_FILE}"
        if not (root / path).is_file():
            continue
        text, problem = read_safely(root, path)
        if problem or text is None:
            findings.extend([problem] if problem else [])
            continue
        parsed = parse_text(path, fill(text, view, []), yaml11_checks=True)
        findings.extend(parsed.findings)
        for document in parsed.documents[:1]:
            if isinstance(document.data, dict):
                findings.extend(schemas.check("helm-values", document))
            elif document.data is not None:
                why = "an environment's values overlay is a mapping of chart values"
                findings.append(document.finding((), why, "wrong-type"))
    return findings


def _get(view: dict, dotted: str):
    node = view
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _collisions(doc: Document, views: dict) -> list[Finding]:
    findings = []
    names = list(views)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = views[first], views[second]
            same_account = _get(a, "aws.account_id") == _get(b, "aws.account_id")
            same_cluster = same_account and all(
                _get(a, key) == _get(b, key) for key in ("aws.region", "eks.cluster_name")
            )
            shared = [
                fact
                for facts, applies in (
                    (GLOBAL, True),
                    (PER_ACCOUNT, same_account),
                    (PER_CLUSTER, same_cluster),
                )
                if applies
                for fact in facts
                if _get(a, fact) is not None and _get(a, fact) == _get(b, fact)
            ]
            if "project" in shared:  # one cause: say it once, not for every name it prefixes
                shared = [f for f in shared if "${project}" not in str(doc.get(*f.split(".")))]
            for fact in shared:
                path = (ENVIRONMENTS, second, *fact.split("."))
                if doc.get(*path) is None:
                    path = (ENVIRONMENTS, second)
                findings.append(
                    doc.finding(
                        path,
                        f"environments {first} and {second} share {fact} {_get(a, fact)!r}: "
                        "each would overwrite the other's; give each its own",
                        "environment-collision",
                    )
                )
    return findings


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False, timeout=60
    )


def deploy_ref(root: Path, branch: str) -> str:
    """The newest deploy-branch commit this clone knows: origin's, else the local branch's,
    else HEAD (a fresh repository before its first push)."""
    for ref in (f"refs/remotes/origin/{branch}", f"refs/heads/{branch}"):
        if _git(root, "rev-parse", "--verify", "--quiet", ref).returncode == 0:
            return ref
    return "HEAD"


def read_pin(root: Path, name: str) -> tuple[str | None, Finding | None]:
    """(the commit environments/<name>/release.yaml pins, or None) or the finding that says
    why it cannot be read."""
    import yaml

    path = f"{ENVIRONMENTS_DIR}/{name}/{RELEASE_FILE}"
    text, problem = read_safely(root, path)
    if problem:
        return None, problem
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        return None, Finding(path, 1, 1, f"not valid YAML: {exc}", "release-pin")
    commit = data.get("commit") if isinstance(data, dict) else data
    if commit is None:
        return None, None
    if not isinstance(commit, str) or not SHA.match(commit):
        why = f"commit: {commit!r} is not a full 40-character commit id (or null: nothing promoted yet)"
        return None, Finding(path, 1, 1, why, "release-pin")
    return commit, None


def pins_of(root: Path, name: str) -> set[str]:
    """Every commit environments/<name>/release.yaml has ever pinned, in this clone's history."""
    path = f"{ENVIRONMENTS_DIR}/{name}/{RELEASE_FILE}"
    log = _git(root, "log", "--all", "--format=", "-p", "--", path).stdout
    found = set(re.findall(r"^[+ ]commit:\s*['\"]?([0-9a-f]{40})", log, re.M))
    current, _ = read_pin(root, name)
    return found | ({current} if current else set())


def _pins(root: Path, names: list[str], views: dict) -> list[Finding]:
    findings: list[Finding] = []
    is_git = _git(root, "rev-parse", "--git-dir").returncode == 0
    for previous, name in zip(names, names[1:]):
        path = f"{ENVIRONMENTS_DIR}/{name}/{RELEASE_FILE}"
        if not (root / path).is_file():
            why = f"environment {name} has no {path}: write one with `make promote FROM={previous} TO={name}`"
            findings.append(Finding(path, 1, 1, why, "release-pin"))
            continue
        commit, problem = read_pin(root, name)
        if problem:
            findings.append(problem)
        if commit is None or not is_git:
            continue  # nothing promoted yet, or no history to check against (not a clone)
        if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            why = f"commit {commit[:12]} is not in this repository's history"
        elif previous == names[0]:
            branch = str(_get(views[previous], "github.deploy_branch") or "main")
            ref = deploy_ref(root, branch)
            ran = _git(root, "merge-base", "--is-ancestor", commit, ref).returncode == 0
            why = "" if ran else f"commit {commit[:12]} is not on {ref}: {previous} never ran it"
        else:
            ran = commit in pins_of(root, previous)
            why = (
                ""
                if ran
                else f"commit {commit[:12]} was never pinned for {previous}: it never ran there"
            )
        if why:
            findings.append(Finding(path, 1, 1, why + f"; promote from {previous}", "release-pin"))
    return findings

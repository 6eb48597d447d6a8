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
from pathlib import Path

from airflow_gitops.releases import (
    RELEASE_FILE,
    deploy_ref,
    git,
    parse_pin,
    pins_of,
    read_pin,
    release_path,
)
from airflow_gitops.errors import UsageError
from airflow_gitops.stack import ENVIRONMENTS, ENVIRONMENTS_DIR, environment_view, fill, lookup
from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.loader import Document, parse_text
from airflow_gitops.validate.repo import STACK, read_safely

NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
OVERLAY_FILE = "values.yaml"
# Facts no two environments may share, and within what: a bucket name is global; a role, a
# policy prefix or a secrets prefix is per account; a namespace is per cluster.
GLOBAL = ("dags.bucket", "logs.bucket", "github.environment", "ui.hostname")
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


def stack_document(root: Path) -> Document | None:
    """stack.yaml parsed (with the place of every value), or None when it is missing or broken
    (the per-environment checks report that)."""
    text, problem = read_safely(root, STACK)
    if problem or text is None:
        return None
    parsed = parse_text(STACK, text)
    docs = [d for d in parsed.documents if isinstance(d.data, dict)]
    return docs[0] if docs and not parsed.broken else None


def names_in(doc: Document | None) -> tuple[list[str], list[Finding]]:
    """The environments of stack.yaml in promotion order ([] for one), and what is wrong with
    their shape."""
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


def check(root: Path, schemas, names: list[str], doc: Document | None) -> list[Finding]:
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
    try:
        return lookup(view, dotted)
    except KeyError:
        return None


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
                shared = [
                    f for f in shared if "${stack.project}" not in str(doc.get(*f.split(".")))
                ]
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


def _current_pin(root: Path, name: str) -> str | None:
    try:
        return read_pin(root, name)
    except (UsageError, OSError):
        return None


def _pins(root: Path, names: list[str], views: dict) -> list[Finding]:
    findings: list[Finding] = []
    is_git = git(root, "rev-parse", "--git-dir").returncode == 0
    for previous, name in zip(names, names[1:]):
        path = release_path(name)
        text, problem = read_safely(root, path) if (root / path).is_file() else (None, None)
        if text is None:
            why = f"environment {name} has no {path}; `make promote FROM={previous} TO={name}` writes it"
            findings.append(problem or Finding(path, 1, 1, why, "release-pin"))
            continue
        try:
            commit = parse_pin(text)
        except ValueError as exc:
            findings.append(Finding(path, 1, 1, str(exc), "release-pin"))
            continue
        if commit is None or not is_git:
            continue  # nothing promoted yet, or no history to check against (not a clone)
        if git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            why = f"commit {commit[:12]} is not in this repository's history"
        elif previous == names[0]:
            ref = deploy_ref(root, str(_get(views[previous], "github.deploy_branch") or "main"))
            ran = git(root, "merge-base", "--is-ancestor", commit, ref).returncode == 0
            why = "" if ran else f"commit {commit[:12]} is not on {ref}: {previous} never ran it"
        else:
            ran = commit in pins_of(root, previous) | {_current_pin(root, previous)}
            why = (
                ""
                if ran
                else f"commit {commit[:12]} was never pinned for {previous}: it never ran there"
            )
        if why:
            line = text[: text.find("commit:")].count("\n") + 1 if "commit:" in text else 1
            findings.append(
                Finding(path, line, 1, f"{why}; promote from {previous}", "release-pin")
            )
    return findings

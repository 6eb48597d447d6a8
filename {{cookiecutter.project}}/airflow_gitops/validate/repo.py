"""Find every file the repository holds, parse it, and check it against its schema."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.loader import Document, ParsedFile, parse_text
from airflow_gitops.validate.schemas import SchemaSet

STACK = "stack.yaml"
VALUES = "helm/values.yaml"
# Files every environment shares: their ${stack.path} references are filled per environment.
FILLED_KINDS = ("helm-values", "k8s", "iam")
FILLED_PREFIXES = ("monitoring/cloudwatch-",)  # Grafana's dashboard has ${datasource} of its own
# Written once, for the first environment: checked only in its view.
DOC_FILES = ("README.md", "docs/")
# Larger than any object the Kubernetes API stores (1.5 MiB) and than any values file we know;
# a bigger file is reported, not parsed (a 50 MB file took 48 s and 2 GB).
MAX_FILE_BYTES = 2 * 1024 * 1024
# Never part of what the team commits (and often huge): not scanned for secrets.
SKIP_DIRS = {
    ".git",
    ".venv",
    ".venv-airflow",
    "venv",
    "build",
    "dist",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".tox",
    ".dags",
}


@dataclass
class Repo:
    """Everything the rules look at, already parsed; ``broken`` names files that did not parse."""

    root: Path
    files: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # raw text, for the secret scan
    findings: list[Finding] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    stack: Document | None = None
    # The environment checked (None in a one-environment repo) and its filled facts.
    environment: str | None = None
    first_environment: bool = True
    values: Document | None = None
    manifests: list[Document] = field(default_factory=list)  # k8s/: one per YAML document
    iam: dict[str, Document] = field(default_factory=dict)  # "iam/x.json" -> document
    workflows: list[Document] = field(default_factory=list)
    # Every other text file of the repository (docs, DAGs, actions, scripts): path -> text.
    other_texts: dict[str, str] = field(default_factory=dict)

    def fact(self, *path, default=None):
        """A value from stack.yaml, or ``default`` when it is absent or the file is broken."""
        return self.stack.get(*path, default=default) if self.stack else default

    def by_kind(self, kind: str) -> list[Document]:
        return [
            d for d in self.manifests if isinstance(d.data, dict) and d.data.get("kind") == kind
        ]


def discover(root: Path) -> list[tuple[str, str]]:
    """(relative path, file kind) of every file validate reads, in a stable order."""
    found: list[tuple[str, str]] = []
    if (root / STACK).is_file():
        found.append((STACK, "stack"))
    if (root / VALUES).is_file():
        found.append((VALUES, "helm-values"))
    for folder, patterns, kind in (
        ("k8s", ("*.yaml", "*.yml"), "k8s"),
        ("iam", ("*.json",), "iam"),
        (".github/workflows", ("*.yml", "*.yaml"), "workflow"),
    ):
        base = root / folder
        if base.is_dir():
            names = sorted(
                {p.name for pattern in patterns for p in base.glob(pattern) if p.is_file()}
            )
            found.extend((f"{folder}/{name}", kind) for name in names)
    return found


def _ignored(root: Path) -> tuple[set[str], list[str]]:
    """Folder names and file patterns of the top-level .gitignore (the simple forms only)."""
    dirs, files = set(SKIP_DIRS), []
    try:
        lines = (root / ".gitignore").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return dirs, files
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        if line.endswith("/"):
            dirs.add(line.strip("/"))
        else:
            files.append(line.lstrip("/"))
    return dirs, files


def all_files(root: Path) -> list[str]:
    """Every file the team would commit, relative, sorted; symlinked folders are not entered."""
    skip_dirs, skip_files = _ignored(root)
    found = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in skip_dirs and not (Path(folder) / d).is_symlink()
        )
        base = Path(folder).relative_to(root).as_posix()
        for name in filenames:
            rel = name if base == "." else f"{base}/{name}"
            if not any(
                fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern)
                for pattern in skip_files
            ):
                found.append(rel)
    return sorted(found)


def read_safely(root: Path, path: str) -> tuple[str | None, Finding | None]:
    """(text, None), or (None, the finding that says why the file is not read)."""
    full = root / path
    try:
        resolved = full.resolve()
        if not resolved.is_relative_to(root.resolve()):
            return None, Finding(
                path,
                1,
                1,
                f"a symlink to {resolved}, outside the repository: not read",
                "symlink-outside-repo",
            )
        if not resolved.is_file():  # a FIFO or device would block the read forever
            return None, Finding(path, 1, 1, "not a regular file: not read", "syntax")
        size = resolved.stat().st_size
        if size > MAX_FILE_BYTES:
            return None, Finding(
                path,
                1,
                1,
                f"{size / 1048576:.1f} MiB is over the {MAX_FILE_BYTES // 1048576} MiB limit "
                "(Kubernetes stores at most 1.5 MiB per object): not read",
                "file-too-large",
            )
        return resolved.read_text(encoding="utf-8"), None
    except (OSError, RuntimeError, UnicodeDecodeError) as exc:  # RuntimeError: a symlink loop
        return None, Finding(path, 1, 1, f"cannot read the file: {exc}", "syntax")


def iam_kind(path: str, doc: Document) -> str:
    """Trust policies name who may assume a role (Principal); permission policies do not."""
    if path.endswith("-trust.json"):
        return "iam-trust"
    statements = doc.get("Statement")
    if isinstance(statements, list) and any(
        isinstance(s, dict) and "Principal" in s for s in statements
    ):
        return "iam-trust"
    return "iam-policy"


def fill_references(repo: Repo, path: str, text: str, view: dict) -> str:
    """``text`` with this environment's facts in place of its ``${stack.path}`` references; a
    reference to no fact is a finding at its place (and stays as written)."""
    from airflow_gitops.stack import REFERENCE, fill

    for number, line in enumerate(text.splitlines(), 1):
        if "${stack." not in line:
            continue
        for match in REFERENCE.finditer(line):
            problems: list[str] = []
            fill(match.group(0), view, problems)
            for why in problems:
                finding = Finding(path, number, match.start() + 1, why, "unknown-reference")
                repo.findings.append(finding)
    return fill(text, view, [])


def environment_document(repo: Repo, raw: Document, env: str) -> Document:
    """stack.yaml as environment ``env`` sees it: the shared facts with its own merged over
    them and every reference filled; each value keeps the place it is written at."""
    from airflow_gitops.stack import ENVIRONMENTS, environment_view

    problems: list[str] = []
    data = environment_view(raw.data, env, problems)
    own = (ENVIRONMENTS, env)

    def placed(table: dict) -> dict:
        shared = {p: v for p, v in table.items() if not (p and p[0] == ENVIRONMENTS)}
        shared.update({p[2:]: v for p, v in table.items() if p[:2] == own and len(p) > 2})
        return shared

    doc = Document(raw.path, raw.index, data, placed(raw.positions), placed(raw.key_positions))
    for why in dict.fromkeys(problems):
        repo.findings.append(doc.finding((ENVIRONMENTS, env), why, "unknown-reference"))
    return doc


def load_repo(root: Path, schemas: SchemaSet, env: str | None = None, first: bool = True) -> Repo:
    """The repository as environment ``env`` sees it (None: a one-environment repo); ``first``
    says whether it is the first environment, the one the docs are written for."""
    repo = Repo(root, environment=env, first_environment=first)
    view = None
    for path, kind in discover(root):
        repo.files.append(path)
        text, problem = read_safely(root, path)
        if problem:
            repo.findings.append(problem)
            repo.broken.add(path)
            continue
        if view is not None and kind in FILLED_KINDS:
            text = fill_references(repo, path, text, view)
        repo.texts[path] = text
        parsed: ParsedFile = parse_text(path, text, yaml11_checks=kind in ("helm-values", "k8s"))
        repo.findings.extend(parsed.findings)
        if parsed.broken:
            repo.broken.add(path)
        documents = [d for d in parsed.documents if d.data is not None]
        if kind in ("stack", "helm-values", "iam") and len(documents) > 1:
            second = documents[1]
            repo.findings.append(
                second.finding((), "one document expected; this file has more", "syntax")
            )
        if not documents:
            if not parsed.broken:
                repo.findings.append(Finding(path, 1, 1, "the file is empty", "missing-key"))
            continue
        for doc in documents if kind == "k8s" else documents[:1]:
            schema_kind = iam_kind(path, doc) if kind == "iam" else kind
            if not isinstance(doc.data, dict):
                repo.findings.append(
                    doc.finding(
                        (),
                        f"expected a mapping at the top level, got {type(doc.data).__name__}",
                        "wrong-type",
                    )
                )
                repo.broken.add(path)
                continue
            if kind == "stack" and env is not None:
                doc = environment_document(repo, doc, env)
                view = doc.data
            repo.findings.extend(schemas.check(schema_kind, doc))
            if kind == "stack":
                repo.stack = doc
            elif kind == "helm-values":
                repo.values = doc
            elif kind == "k8s":
                repo.manifests.append(doc)
            elif kind == "iam":
                repo.iam[path] = doc
            else:
                repo.workflows.append(doc)
    load_other_texts(repo, view)
    return repo


def load_other_texts(repo: Repo, view: dict | None = None) -> None:
    """The text of every file not parsed above, for the secret scan and the facts in docs.
    Binary and oversized files are skipped (no line to point at); a symlink out is a finding.
    With environments, monitoring/ is filled for the one checked, and the docs (written with
    the first environment's facts) are read in the first environment's check only."""
    for path in all_files(repo.root):
        if path in repo.texts or path in repo.files or path.startswith("schemas/"):
            continue
        if not repo.first_environment and path.startswith(DOC_FILES):
            continue
        text, problem = read_safely(repo.root, path)
        if problem and problem.rule == "symlink-outside-repo":
            repo.findings.append(problem)
        if text is not None and "\x00" not in text:
            if view is not None and path.startswith(FILLED_PREFIXES):
                text = fill_references(repo, path, text, view)
            repo.other_texts[path] = text

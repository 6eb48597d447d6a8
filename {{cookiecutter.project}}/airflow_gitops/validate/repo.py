"""Find every file the repository holds, parse it, and check it against its schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.loader import Document, ParsedFile, parse_text
from airflow_gitops.validate.schemas import SchemaSet

STACK = "stack.yaml"
VALUES = "helm/values.yaml"


@dataclass
class Repo:
    """Everything the rules look at, already parsed; ``broken`` names files that did not parse."""

    root: Path
    files: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # raw text, for the secret scan
    findings: list[Finding] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    stack: Document | None = None
    values: Document | None = None
    manifests: list[Document] = field(default_factory=list)  # k8s/: one per YAML document
    iam: dict[str, Document] = field(default_factory=dict)  # "iam/x.json" -> document
    workflows: list[Document] = field(default_factory=list)

    def fact(self, *path, default=None):
        """A value from stack.yaml, or ``default`` when it is absent or the file is broken."""
        return self.stack.get(*path, default=default) if self.stack else default

    def by_kind(self, kind: str) -> list[Document]:
        return [d for d in self.manifests if isinstance(d.data, dict) and d.data.get("kind") == kind]


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
            names = sorted({p.name for pattern in patterns for p in base.glob(pattern) if p.is_file()})
            found.extend((f"{folder}/{name}", kind) for name in names)
    return found


def iam_kind(path: str, doc: Document) -> str:
    """Trust policies name who may assume a role (Principal); permission policies do not."""
    if path.endswith("-trust.json"):
        return "iam-trust"
    statements = doc.get("Statement")
    if isinstance(statements, list) and any(isinstance(s, dict) and "Principal" in s for s in statements):
        return "iam-trust"
    return "iam-policy"


def load_repo(root: Path, schemas: SchemaSet) -> Repo:
    repo = Repo(root)
    for path, kind in discover(root):
        repo.files.append(path)
        try:
            text = (root / path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            repo.findings.append(Finding(path, 1, 1, f"cannot read the file: {exc}", "syntax"))
            repo.broken.add(path)
            continue
        repo.texts[path] = text
        parsed: ParsedFile = parse_text(path, text, yaml11_checks=kind in ("helm-values", "k8s"))
        repo.findings.extend(parsed.findings)
        if parsed.broken:
            repo.broken.add(path)
        documents = [d for d in parsed.documents if d.data is not None]
        if kind in ("stack", "helm-values", "iam") and len(documents) > 1:
            second = documents[1]
            repo.findings.append(second.finding((), "one document expected; this file has more", "syntax"))
        if not documents:
            if not parsed.broken:
                repo.findings.append(Finding(path, 1, 1, "the file is empty", "missing-key"))
            continue
        for doc in documents if kind == "k8s" else documents[:1]:
            schema_kind = iam_kind(path, doc) if kind == "iam" else kind
            if not isinstance(doc.data, dict):
                repo.findings.append(
                    doc.finding((), f"expected a mapping at the top level, got {type(doc.data).__name__}", "wrong-type")
                )
                repo.broken.add(path)
                continue
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
    return repo

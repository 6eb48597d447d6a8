"""Load the repository, check each file against its schema, then run the cross-file rules."""

from __future__ import annotations

from pathlib import Path

from airflow_gitops.errors import UsageError
from airflow_gitops.validate import environments, rules
from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.repo import load_repo
from airflow_gitops.validate.schemas import SchemaSet


def validate(root: Path, schema_folder: Path) -> tuple[list[Finding], int]:
    """(findings sorted by file and line, number of files read)."""
    schemas = SchemaSet(schema_folder)
    missing = schemas.missing()
    if missing:
        raise UsageError(
            f"{schema_folder}: missing {', '.join(missing)}; is this a generated repository?"
        )
    stack = environments.stack_document(root)
    names, shape = environments.names_in(stack)
    if not names:
        repo = load_repo(root, schemas)
        return capped(sorted(set(shape) | check_repo(repo))), len(repo.files)
    # Each environment is checked in its own view; what every view finds is said once, what
    # only some find names them.
    found: dict[Finding, list[str]] = {}
    for index, name in enumerate(names):
        repo = load_repo(root, schemas, name, first=index == 0)
        for finding in check_repo(repo):
            found.setdefault(finding, []).append(name)
    findings = set(shape)
    for finding, where in found.items():
        if len(where) < len(names):
            message = f"{finding.message} (environment {', '.join(where)})"
            finding = Finding(finding.path, finding.line, finding.col, message, finding.rule)
        findings.add(finding)
    findings.update(environments.check(root, schemas, names, stack))
    return capped(sorted(findings)), len(repo.files) + environments.file_count(root, names)


def check_repo(repo) -> set[Finding]:
    """Every finding of one view of the repository: its files, then the cross-file rules."""
    if not repo.files:
        raise UsageError(
            f"{repo.root}: no stack.yaml, helm/, k8s/, iam/ or .github/workflows/ here"
        )
    findings = set(repo.findings)
    for path, what in (
        ("stack.yaml", "every rule reads it"),
        ("helm/values.yaml", "the chart's values"),
    ):
        if path not in repo.files:
            findings.add(Finding(path, 1, 1, f"{path} is missing ({what})", "missing-file"))
    findings.update(rules.run_all(repo))
    return findings


# A damaged or hostile file can break one rule on every line; the first few say enough.
MAX_PER_FILE_AND_RULE = 20


def capped(findings: list[Finding]) -> list[Finding]:
    """At most MAX_PER_FILE_AND_RULE findings of one rule in one file, then one that counts the rest."""
    counts: dict = {}
    for finding in findings:
        counts[(finding.path, finding.rule)] = counts.get((finding.path, finding.rule), 0) + 1
    kept, shown = [], {}
    for finding in findings:
        key = (finding.path, finding.rule)
        shown[key] = shown.get(key, 0) + 1
        if shown[key] <= MAX_PER_FILE_AND_RULE:
            kept.append(finding)
        elif shown[key] == MAX_PER_FILE_AND_RULE + 1:
            rest = counts[key] - MAX_PER_FILE_AND_RULE
            kept.append(
                Finding(
                    finding.path,
                    finding.line,
                    finding.col,
                    f"... and {rest} more like the above from here on",
                    finding.rule,
                )
            )
    return kept

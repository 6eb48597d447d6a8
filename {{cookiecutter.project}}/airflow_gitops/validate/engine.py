"""Load the repository, check each file against its schema, then run the cross-file rules."""

from __future__ import annotations

from pathlib import Path

from airflow_gitops.errors import UsageError
from airflow_gitops.validate import rules
from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.repo import load_repo
from airflow_gitops.validate.schemas import SchemaSet


def validate(root: Path, schema_folder: Path) -> tuple[list[Finding], int]:
    """(findings sorted by file and line, number of files read)."""
    schemas = SchemaSet(schema_folder)
    missing = schemas.missing()
    if missing:
        raise UsageError(f"{schema_folder}: missing {', '.join(missing)}; is this a generated repository?")
    repo = load_repo(root, schemas)
    if not repo.files:
        raise UsageError(f"{root}: no stack.yaml, helm/, k8s/, iam/ or .github/workflows/ here")
    findings = list(repo.findings)
    for path, what in (("stack.yaml", "every rule reads it"), ("helm/values.yaml", "the chart's values")):
        if path not in repo.files:
            findings.append(Finding(path, 1, 1, f"{path} is missing ({what})", "missing-file"))
    findings.extend(rules.run_all(repo))
    return sorted(set(findings)), len(repo.files)

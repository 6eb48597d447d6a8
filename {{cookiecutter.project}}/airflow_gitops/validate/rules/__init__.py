"""The rules a schema cannot express. Each module's ``check(repo)`` yields findings.

Rules that compare files (``CROSS_FILE``) run only when stack.yaml, helm/values.yaml and the
files they compare all parsed: a syntax error elsewhere would otherwise show up as a dozen
"missing" findings. Rules that look at one file at a time always run.
"""

from __future__ import annotations

from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules import (
    admission,
    dags,
    facts,
    iam,
    iam_reference,
    logs_secrets,
    metrics,
    names,
    oidc,
    production,
    security,
    workflows,
)

SINGLE_FILE = (
    security.check,
    iam.check,
    iam_reference.check,
    workflows.check,
    workflows.check_more,
)
CROSS_FILE = (
    names.check,
    dags.check,
    facts.check,
    oidc.check,
    admission.check,
    production.check,
    logs_secrets.check,
    metrics.check,
)


def run_all(repo) -> Iterator[Finding]:
    for rule in SINGLE_FILE:
        yield from rule(repo)
    if repo.broken or repo.stack is None or repo.values is None:
        return
    for rule in CROSS_FILE:
        yield from rule(repo)

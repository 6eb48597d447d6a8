"""Checks of this repository's own files: the ones your team edits (stack.yaml, helm/, k8s/,
iam/, dags/, .github/workflows/, the Makefile). `make test` runs them offline in seconds, and
the validate workflow runs them on every pull request.

The vendored toolkit (airflow_gitops/) is tested where it is made, in the template's tests;
`cruft update` brings a new version of it tested there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from airflow_gitops.cli import COMMANDS
from airflow_gitops.validate.engine import validate

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
MAKE_TARGET = re.compile(r"^([a-z][a-z-]*):", re.M)
# What a workflow step runs: `make TARGET ...` and `python -m airflow_gitops COMMAND ...`
MAKE_CALL = re.compile(r"(?<![\w/.-])make ([a-z][a-z-]*)")
TOOLKIT_CALL = re.compile(r"-m airflow_gitops ([a-z][a-z-]*)")


def test_every_file_passes_validate():
    """stack.yaml, helm/values.yaml, k8s/, iam/ and the workflows against their schemas and the
    cross-file rules: what `make validate` prints, as one failing test with every finding."""
    findings, files = validate(REPO, REPO / "schemas")
    assert files > 0
    assert not findings, "\n".join(f"{f.path}:{f.line}: {f.message} [{f.rule}]" for f in findings)


@pytest.mark.parametrize("path", sorted((REPO / "dags").rglob("*.py")), ids=lambda p: p.name)
def test_every_dag_file_is_python(path):
    """A syntax error fails here in a second; `make dag-check` (the dag-check workflow) then
    imports each file with the Airflow release of stack.yaml."""
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def run_blocks(workflow: Path) -> list[str]:
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [step["run"] for job in jobs.values() for step in job.get("steps", []) if "run" in step]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_run_only_targets_and_commands_that_exist(workflow):
    """Every `make TARGET` a workflow runs is in the Makefile and every toolkit command it runs
    is one the toolkit has: a renamed target fails here, not in the deploy."""
    targets = set(MAKE_TARGET.findall((REPO / "Makefile").read_text()))
    for script in run_blocks(workflow):
        for target in MAKE_CALL.findall(script):
            assert target in targets, f"{workflow.name}: `make {target}` is not in the Makefile"
        for command in TOOLKIT_CALL.findall(script):
            assert command in COMMANDS, f"{workflow.name}: no toolkit command `{command}`"

"""A generated repo takes template updates through cruft, as its README says, keeping the team's
own edits: bake at template commit A, edit as a user would, commit a template change B, run
`cruft update`, and find B's change next to the user's edits with no conflict.

Offline: the template is a git repository in a temporary folder (cruft clones a local path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEMPLATE

CRUFT = [sys.executable, "-m", "cruft"]
# What a template clone holds: the working tree (uncommitted work included), never build output.
NOT_TEMPLATE = shutil.ignore_patterns(
    ".git", ".venv*", ".tools", "out", "__pycache__", ".pytest_cache", ".ruff_cache", "build"
)
TEMPLATE_CHANGE = "# template change B: arrives through cruft update\n"
USER_DAG = "# the team's own DAG\nfrom datetime import datetime\n"


def git(cwd: Path, *args: str) -> str:
    env_args = [
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.invalid",
        "-c",
        "init.defaultBranch=main",
        "-c",
        "commit.gpgsign=false",
    ]
    result = subprocess.run(["git", *env_args, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``cwd`` as a shell there would (PWD names it)."""
    env = {**os.environ, "PWD": str(cwd)}
    result = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture
def template_repo(tmp_path) -> Path:
    """This template as a git repository at commit A."""
    clone = tmp_path / "template"
    shutil.copytree(TEMPLATE, clone, ignore=NOT_TEMPLATE)
    git(clone, "init", "-q")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "A")
    return clone


def test_cruft_create_records_template_and_commit(tmp_path, template_repo):
    out = tmp_path / "work"
    out.mkdir()
    result = run(out, *CRUFT, "create", "--no-input", str(template_repo))
    repo = out / "airflow-gitops"
    state = json.loads((repo / ".cruft.json").read_text())
    assert state["template"] == str(template_repo)
    assert state["commit"] == git(template_repo, "rev-parse", "HEAD")
    assert state["context"]["cookiecutter"]["dag_source"] == "s3-sync"
    # cruft's record is the one copy of the answers; the hook adds none of its own
    assert not (repo / ".cookiecutter.json").exists()
    assert (repo / "schemas" / "answers.schema.json").is_file()
    assert "Created airflow-gitops/" in result.stdout
    readme = (repo / "README.md").read_text()
    assert "cruft check" in readme and "cruft update" in readme
    # never a command that regenerates over the team's files
    assert "--replay-file" not in readme and "--overwrite-if-exists" not in readme
    version = run(repo, sys.executable, "-m", "airflow_gitops", "--version").stdout
    assert f"(template {template_repo} at {state['commit'][:12]})" in version


def test_cruft_check_and_update_keep_the_teams_edits(tmp_path, template_repo):
    out = tmp_path / "work"
    out.mkdir()
    run(out, *CRUFT, "create", "--no-input", str(template_repo))
    repo = out / "airflow-gitops"
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "generated")
    run(repo, *CRUFT, "check")

    # The team's edits: a value of their own and a DAG of their own.
    values = repo / "helm" / "values.yaml"
    text = values.read_text()
    assert "\nworkers:\n" in text
    values.write_text(text.replace("\nworkers:\n", "\nworkers:\n  replicas: 3\n", 1))
    (repo / "dags" / "team_dag.py").write_text(USER_DAG)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "our values and DAG")

    # A template change, far from the team's edit in the same file, and in a doc.
    template_values = template_repo / "{{cookiecutter.project}}" / "helm" / "values.yaml"
    template_values.write_text(template_values.read_text() + TEMPLATE_CHANGE)
    doc = template_repo / "{{cookiecutter.project}}" / "docs" / "workflows.md"
    doc.write_text(doc.read_text() + "\n" + TEMPLATE_CHANGE)
    git(template_repo, "commit", "-qam", "B")
    commit_b = git(template_repo, "rev-parse", "HEAD")

    stale = subprocess.run([*CRUFT, "check"], cwd=repo, capture_output=True, text=True)
    assert stale.returncode != 0, "cruft check must notice the template moved on"

    run(repo, *CRUFT, "update", "--skip-apply-ask", "--allow-untracked-files")

    updated = values.read_text()
    assert updated.endswith(TEMPLATE_CHANGE), "the template change did not arrive"
    assert "\nworkers:\n  replicas: 3\n" in updated, "the team's value was lost"
    assert (repo / "docs" / "workflows.md").read_text().endswith(TEMPLATE_CHANGE)
    assert (repo / "dags" / "team_dag.py").read_text() == USER_DAG
    assert (repo / "dags" / "example_dag.py").is_file()
    assert not list(repo.rglob("*.rej")), "cruft left a conflict"
    assert "<<<<<<<" not in updated
    assert json.loads((repo / ".cruft.json").read_text())["commit"] == commit_b
    run(repo, *CRUFT, "check")


def test_cruft_update_adds_environments_and_keeps_the_teams_edits(tmp_path, template_repo):
    """The migration docs/environments.md describes: a one-environment repo asks cruft for
    dev,prod; the environments arrive, the team's edit stays, and the repo validates."""
    out = tmp_path / "work"
    out.mkdir()
    run(out, *CRUFT, "create", "--no-input", str(template_repo))
    repo = out / "airflow-gitops"
    values = repo / "helm" / "values.yaml"
    values.write_text(values.read_text().replace("\nworkers:\n", "\nworkers:\n  replicas: 3\n", 1))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "generated, with our values")

    run(
        repo,
        *CRUFT,
        "update",
        "--skip-apply-ask",
        "--allow-untracked-files",
        "--variables-to-update",
        json.dumps({"environments": "dev,prod"}),
    )

    assert not list(repo.rglob("*.rej")), "cruft left a conflict"
    import yaml

    stack = yaml.safe_load((repo / "stack.yaml").read_text())
    assert list(stack["environments"]) == ["dev", "prod"]
    # dev keeps the facts (and so the AWS names) the repo had; prod gets its own
    assert stack["environments"]["dev"]["project"] == "airflow-gitops"
    assert stack["environments"]["prod"]["airflow"]["namespace"] == "airflow-prod"
    assert "commit: null" in (repo / "environments" / "prod" / "release.yaml").read_text()
    assert "\nworkers:\n  replicas: 3\n" in values.read_text(), "the team's value was lost"
    assert "${stack.aws.account_id}" in (repo / "iam" / "deploy-role-policy.json").read_text()
    assert (
        json.loads((repo / ".cruft.json").read_text())["context"]["cookiecutter"]["environments"]
        == "dev,prod"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "airflow_gitops", "validate"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

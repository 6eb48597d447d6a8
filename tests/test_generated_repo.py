"""The generated repo's own tests and checks, run inside a fresh bake, as its users run them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

import pytest

from conftest import DEFAULTS, PYTHON, TEMPLATE, run_make

# One bake per DAG family is enough here: the toolkit tests build their own stacks.
MODES = ["s3-sync", "efs", "git-sync"]


@pytest.mark.parametrize("mode", MODES)
def test_generated_repo_validates(baked, mode):
    result = run_make(baked(dag_source=mode), "validate")
    assert result.returncode == 0


# Every 6th interruption case (and the last) keeps CI well inside its time budget; a generated
# repo's own `make test` runs every k.
INTERRUPT_STRIDE = "6"


@pytest.mark.slow  # the whole generated suite again, with a sample of its interruption matrix
def test_generated_repo_own_tests_pass(default_repo):
    env = {**os.environ, "AIRFLOW_GITOPS_INTERRUPT_STRIDE": INTERRUPT_STRIDE}
    result = run_make(default_repo, "test", env=env)
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_airflow_constraints_of_the_answered_release(baked):
    """constraints/ pins the default Airflow release (make airflow-venv installs with it); a
    repo for another release gets no stale file (make airflow-venv then says so)."""
    default = baked()
    version = DEFAULTS["airflow_version"]
    pins = (default / "constraints" / f"airflow-{version}.txt").read_text().splitlines()
    pins = [line for line in pins if line and not line.startswith("#")]
    assert f"apache-airflow=={version}" in pins
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+", line) for line in pins), pins
    other = baked(airflow_version="3.2.1")
    assert not list((other / "constraints").glob("airflow-*.txt"))  # no stale pins, only the README
    dry = run_make(other, "-n", "airflow-venv")
    assert "constraints/airflow-" in dry.stdout and "resolution from PyPI" in dry.stdout


def test_help_lists_every_target_of_the_makefile(default_repo):
    makefile = (default_repo / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):.*## ", makefile, re.M))
    shown = {line.split()[0] for line in run_make(default_repo, "help").stdout.splitlines()}
    assert targets == shown and {"install", "lint", "local-aws"} <= shown
    assert "$(" not in run_make(default_repo, "help").stdout


def test_toolkit_version_is_one_fact(default_repo):
    """`python -m airflow_gitops --version` reads the one copy (airflow_gitops/__init__.py);
    the template's pyproject.toml names the same release."""
    result = subprocess.run(
        [PYTHON, "-m", "airflow_gitops", "--version"],
        cwd=default_repo,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    release = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())["project"]["version"]
    assert result.stdout.strip() == f"airflow_gitops {release}"
    init = (default_repo / "airflow_gitops" / "__init__.py").read_text()
    assert init.count(release) == 1


@pytest.mark.slow  # a real `make install` from the package index: minutes on a cold cache
def test_make_install_gives_every_target_what_it_needs(baked, tmp_path):
    """A user's path: `make install`, then the other targets with the repo's own .venv (no
    PYTHON= override): lint needs the linters of requirements-ci.txt, test needs pytest and
    moto of requirements-dev.txt."""
    repo = tmp_path / "repo"
    shutil.copytree(baked(), repo)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}

    def make(*targets: str, **extra_env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(["make", "--no-print-directory", "-C", str(repo), *targets],
                                capture_output=True, text=True, env={**env, **extra_env})  # fmt: skip
        assert result.returncode == 0, f"make {targets}: {result.stdout}\n{result.stderr}"
        return result

    installed = make("install")
    assert "==> .venv is ready" in installed.stdout
    assert "Successfully installed" in installed.stdout  # pip's progress is shown, not hidden
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)  # lint lists files with git
    make("lint")
    make("validate")
    assert " passed" in make("test", PYTEST_ADDOPTS="-k test_local_aws").stdout


@pytest.mark.slow  # installs Airflow when no cached .venv-airflow exists
def test_airflow_constraints_reproduce_the_committed_pins(default_repo, tmp_path):
    """`make airflow-venv` installs with constraints/airflow-<version>.txt and
    `make airflow-constraints` writes the same pins back: the file is what it says it is."""
    from test_workflows import airflow_venv

    version = DEFAULTS["airflow_version"]
    venv = airflow_venv(version)
    run_make(default_repo, "airflow-venv", f"AIRFLOW_VENV={venv}")
    repo = tmp_path / "repo"
    shutil.copytree(default_repo, repo)
    written = run_make(repo, "airflow-constraints", f"AIRFLOW_VENV={venv}")
    assert "commit it" in written.stdout

    def pinned(path):
        return sorted(line for line in path.read_text().splitlines() if "==" in line)

    name = f"constraints/airflow-{version}.txt"
    assert pinned(repo / name) == pinned(default_repo / name)

"""The generated repo's own tests and checks, run inside a fresh bake, as its users run them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

import pytest

from conftest import DEFAULTS, PYTHON, TEMPLATE, run_make

# One bake per DAG family, and the aws-cli sync image (it adds a test of its own).
BAKES = {
    "s3-sync": {"dag_source": "s3-sync"},
    "s3-sync-aws-cli": {"dag_source": "s3-sync", "s3_sync_image": "aws-cli"},
    "efs": {"dag_source": "efs"},
    "git-sync": {"dag_source": "git-sync"},
}


@pytest.mark.parametrize("bake", BAKES)
def test_generated_repo_validates(baked, bake):
    result = run_make(baked(**BAKES[bake]), "validate")
    assert result.returncode == 0


@pytest.mark.parametrize("bake", BAKES)
def test_generated_repo_own_tests_pass(baked, bake):
    """`make test` in a generated repo: the checks of its own files (the toolkit's unit tests
    are the template's tests/toolkit/)."""
    repo = baked(**BAKES[bake])
    result = run_make(repo, "test")
    assert re.search(r"^\d+ passed in ", result.stdout, re.M), result.stdout
    assert not re.search(r"failed|skipped|error", result.stdout), result.stdout
    own = sorted(path.name for path in (repo / "tests").glob("test_*.py"))
    expected = ["test_repo.py"] + (["test_sync_script.py"] if "aws-cli" in bake else [])
    assert own == expected


def test_generated_repo_holds_no_toolkit_tests(default_repo):
    """The toolkit's tests run here, in the template, not in every team's repo."""
    toolkit_tests = {path.name for path in (TEMPLATE / "tests" / "toolkit").glob("test_*.py")}
    assert toolkit_tests and not toolkit_tests & {p.name for p in default_repo.rglob("*.py")}


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
    PYTHON= override): lint and test need the linters and pytest of requirements-ci.txt,
    local-aws moto of requirements-dev.txt."""
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
    assert " passed" in make("test").stdout
    venv_python = repo / ".venv" / "bin" / "python"
    subprocess.run([venv_python, "-c", "import moto.server"], check=True)  # make local-aws


@pytest.mark.slow  # installs Airflow when no cached .venv-airflow exists
@pytest.mark.xdist_group("airflow-venv")  # one worker: they share the cached Airflow venv
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

"""Shared fixtures: bake the template with given answers, once per combination per session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parent.parent
DEFAULTS = json.loads((TEMPLATE / "cookiecutter.json").read_text())
PYTHON = sys.executable


def bake(output_dir: Path, **answers: str) -> Path:
    """Generate a repo into ``output_dir`` with ``answers`` over the defaults; return its path."""
    return Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context=answers,
            output_dir=str(output_dir),
        )
    )


def run_make(repo: Path, *targets: str, env: dict | None = None, check: bool = True):
    """Run the generated repo's Makefile with this interpreter (it has every dependency)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(repo), f"PYTHON={PYTHON}", *targets],
        capture_output=True,
        text=True,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"make {' '.join(targets)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def baked(tmp_path_factory):
    """``baked(**answers)``: a generated repo for these answers, shared across the session.

    Tests must not modify it; copy it first (``shutil.copytree``) to change files.
    """
    cache: dict[tuple, Path] = {}

    def _bake(**answers: str) -> Path:
        key = tuple(sorted(answers.items()))
        if key not in cache:
            cache[key] = bake(tmp_path_factory.mktemp("bake"), **answers)
        return cache[key]

    return _bake


@pytest.fixture(scope="session")
def default_repo(baked) -> Path:
    return baked()


@pytest.fixture(scope="session")
def rendered(baked):
    """``rendered(**answers)``: every object the deploy would apply for that bake (k8s/ and
    `helm template` of the chart the project carries), rendered once per session."""
    from helm_chart import render  # helm_chart imports this module: import it when needed

    cache: dict[tuple, list[dict]] = {}

    def _rendered(**answers: str) -> list[dict]:
        key = tuple(sorted(answers.items()))
        if key not in cache:
            cache[key] = render(baked(**answers))
        return cache[key]

    return _rendered

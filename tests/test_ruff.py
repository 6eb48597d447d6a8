"""ruff, with the one configuration (`{{cookiecutter.project}}/ruff.toml`, which the template's
pyproject.toml extends), over the template's own Python and over a generated repo's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEMPLATE

# The template's own Python; the generated repo's is checked in a bake, as its users have it.
TEMPLATE_PYTHON = ["hooks", "tests", "tools", "benchmarks"]


def ruff(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_template_python_passes_ruff(command):
    result = ruff(TEMPLATE, *command, *TEMPLATE_PYTHON)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_generated_python_passes_ruff(default_repo, command):
    assert (default_repo / "ruff.toml").is_file()
    result = ruff(default_repo, *command, ".")
    assert result.returncode == 0, result.stdout + result.stderr

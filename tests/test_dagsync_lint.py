"""Lint the DAG sync image and the aws-cli sync script with the real tools (hadolint, shellcheck)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parent.parent
PROJECT = TEMPLATE / "{{cookiecutter.project}}"
DOCKERFILE = PROJECT / "images" / "s3-sync" / "Dockerfile"
SYNC_SCRIPT = PROJECT / "images" / "aws-cli" / "dag-sync.sh"


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make test` (it installs requirements.txt)")
    return found


def test_dockerfile_is_clean_under_hadolint():
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_its_base_and_runs_as_airflow_user():
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert re.search(r"^USER 50000:0$", text, re.M)


def test_aws_cli_script_is_clean_under_shellcheck():
    result = subprocess.run(
        [tool("shellcheck"), "--shell=sh", str(SYNC_SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_aws_cli_script_survives_jinja_and_helm_tpl():
    """helm/values.yaml includes the script through Jinja, and the chart runs `tpl` on it."""
    text = SYNC_SCRIPT.read_text()
    for token in ("{{", "{%", "{#", "}}"):
        assert token not in text, f"{SYNC_SCRIPT.name} contains {token!r}"

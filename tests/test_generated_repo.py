"""The generated repo's own tests and checks, run inside a fresh bake, as its users run them."""

from __future__ import annotations

import pytest

from conftest import run_make

# One bake per DAG family is enough here: the toolkit tests build their own stacks.
MODES = ["s3-sync", "efs", "git-sync"]


@pytest.mark.parametrize("mode", MODES)
def test_generated_repo_validates(baked, mode):
    result = run_make(baked(dag_source=mode), "validate")
    assert result.returncode == 0


def test_generated_repo_own_tests_pass(default_repo):
    result = run_make(default_repo, "test")
    assert " passed" in result.stdout and " failed" not in result.stdout

"""The generated repos the toolkit's tests run against, baked from this template once per
session: ``REPO``, the default answers' repo, whose toolkit (copied verbatim from
``{{cookiecutter.project}}/airflow_gitops``) is the one these tests import, so the toolkit's
defaults (stack.yaml beside the package) are a rendered repo's; ``baked_repo(**answers)`` for a
test that needs another option's files. Tests must not modify them: copy first."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from functools import cache
from pathlib import Path

from conftest import bake  # the template's tests/conftest.py

_OUT = Path(tempfile.mkdtemp(prefix="toolkit-tests-"))
atexit.register(shutil.rmtree, _OUT, ignore_errors=True)


@cache
def baked_repo(**answers: str) -> Path:
    # Baked while pytest collects, where nothing captures the hook's "Created ..." lines.
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    sys.stdout.flush()
    os.dup2(devnull, 1)
    try:
        return bake(Path(tempfile.mkdtemp(dir=_OUT)), **answers)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


REPO = baked_repo()
sys.path.insert(0, str(REPO))

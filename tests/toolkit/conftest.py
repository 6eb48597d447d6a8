"""The toolkit's unit tests (``airflow_gitops``, vendored into every generated repo). They live
here, in the template, and run against the toolkit of a default bake (``repos.REPO``).

Fixtures every module here may ask for by name, from aws_testkit: ``moto`` (a moto server on
127.0.0.1, one per module) and ``aws`` (boto3 in this process pointed at it). Importing them
here, not in each module, is how pytest shares fixtures (a module that imports a fixture and
takes it as an argument redefines the name: ruff F811)."""

import sys
from pathlib import Path

# This folder's helpers (aws_testkit, iam_eval, repos) import by their plain names, as the
# scripts the tests start in their own process do; appended, so that `conftest` stays the
# template's tests/conftest.py. repos first: it puts the bake on sys.path.
sys.path.append(str(Path(__file__).resolve().parent))

import repos  # noqa: E402, F401
from aws_testkit import aws, moto  # noqa: E402, F401

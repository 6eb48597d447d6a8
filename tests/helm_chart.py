"""The official Airflow chart as the tests use it: the package the project carries, helm, renders.

`tests/chart/` holds the chart package of the version cookiecutter.json pins, with its NOTICE;
`tools/install_helm.py` puts the helm the generated deploy workflow pins into `.tools/bin`. A
render goes through the generated repo's own `make manifests`, which builds its helm command
line with the same function `deploy-chart` upgrades with (airflow_gitops/helm.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tarfile
from functools import cache, lru_cache
from pathlib import Path

import yaml
from conftest import DEFAULTS, TEMPLATE, run_make

CHART_VERSION = DEFAULTS["airflow_chart_version"]
CHART_PACKAGE = TEMPLATE / "tests" / "chart" / f"airflow-{CHART_VERSION}.tgz"


@cache
def chart_file(name: str) -> str:
    """A file of the chart package, e.g. ``values.schema.json`` (read from the .tgz itself)."""
    with tarfile.open(CHART_PACKAGE) as package:
        return package.extractfile(f"airflow/{name}").read().decode("utf-8")


def chart_schema() -> dict:
    return json.loads(chart_file("values.schema.json"))


def chart_defaults() -> dict:
    return yaml.safe_load(chart_file("values.yaml"))


@lru_cache(maxsize=1)
def helm() -> Path:
    """helm at the version the generated setup-helm action pins (installed once per machine)."""
    spec = importlib.util.spec_from_file_location(
        "install_helm", TEMPLATE / "tools" / "install_helm.py"
    )
    installer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installer)
    return installer.install()


def render(repo: Path) -> list[dict]:
    """Every object the deploy would apply for ``repo``: k8s/ and `helm template` of the chart."""
    env = {**os.environ, "HELM": str(helm())}
    run_make(repo, "manifests", f"CHART={CHART_PACKAGE}", env=env)
    text = (repo / "build" / "manifests.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]

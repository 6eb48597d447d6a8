"""``dag-check``: import every file in dags/ with the Airflow release the chart runs.

Run it with an interpreter that has ``apache-airflow==<stack.yaml airflow.version>`` installed
(`make dag-check AIRFLOW_PYTHON=...`; the validate workflow installs it with Airflow's
constraints file). Airflow's own DagBag does the parsing, exactly as the dag-processor will, with
a throw-away AIRFLOW_HOME and no database. Any import error fails the check; on GitHub it is also
an annotation on the file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from airflow_gitops.errors import ToolkitError, UsageError
from airflow_gitops.stack import REPO_ROOT, load_stack


def add_arguments(parser) -> None:
    parser.add_argument("--dags", default="dags", help="DAG folder (default: dags)")


def _annotation(path: str, message: str) -> str:
    escaped = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::error file={path},title=DAG import error::{escaped}"


def _dagbag_class():
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1
    except ImportError:
        from airflow.models.dagbag import DagBag
    return DagBag


def check_dags(dag_folder: Path, expected_version: str) -> tuple[list[str], dict[str, str]]:
    """(DAG ids, {file: import error}) after parsing ``dag_folder`` with Airflow's DagBag."""
    try:
        import airflow
    except ImportError:
        raise UsageError(
            f"{sys.executable}: apache-airflow is not installed; "
            "run with AIRFLOW_PYTHON=<python with apache-airflow> (see docs/workflows.md)"
        ) from None
    if airflow.__version__ != expected_version:
        raise UsageError(
            f"apache-airflow {airflow.__version__} is installed, but stack.yaml airflow.version "
            f"is {expected_version}; check DAGs with the version the chart runs"
        )
    bag = _dagbag_class()(dag_folder=str(dag_folder), include_examples=False, safe_mode=False)
    return sorted(bag.dag_ids), dict(bag.import_errors)


def run(args) -> int:
    # With several environments and none chosen: the first's Airflow, the one a push deploys.
    stack = load_stack(first_by_default=True)
    dag_folder = (REPO_ROOT / args.dags).resolve()
    if not dag_folder.is_dir():
        raise UsageError(f"{args.dags}: no such folder")
    version = str((stack.get("airflow") or {}).get("version", ""))
    with tempfile.TemporaryDirectory(prefix="airflow-home-") as home:
        # Before airflow is imported: its configuration is read at import time.
        os.environ.setdefault("AIRFLOW_HOME", home)
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dag_folder)
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
        dag_ids, errors = check_dags(dag_folder, version)
    annotate = os.environ.get("GITHUB_ACTIONS") == "true"
    for file, message in sorted(errors.items()):
        try:
            shown = Path(file).resolve().relative_to(REPO_ROOT).as_posix()
        except ValueError:
            shown = file
        print(f"ERROR {shown}: {message.strip()}", file=sys.stderr)
        if annotate:
            print(_annotation(shown, message.strip()))
    print(
        f"dag-check: Airflow {version}: {len(dag_ids)} DAG(s) imported, "
        f"{len(errors)} import error(s)"
    )
    if errors:
        raise ToolkitError(f"{len(errors)} DAG file(s) failed to import")
    return 0

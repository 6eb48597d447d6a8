"""The one place that says how helm runs the official Airflow chart for this repository.

``deploy-chart`` (what deploy.yml runs) and ``manifests`` (what pull requests and the tests
render) both build their command line from ``release_arguments``, so what is reviewed is what
is deployed. ``--chart PACKAGE`` swaps the chart repository for a local chart package of the
same version (offline renders); nothing else differs.

Before an upgrade, ``deploy-chart`` deletes the finished database-migration Job of the last
deploy. With ``migrateDatabaseJob.useHelmHooks: false`` (needed so ``--wait`` does not
deadlock) the chart keeps a plain Job with a fixed name, and a Job's pod template is
immutable: patching it within its TTL fails the upgrade with "field is immutable". Helm
re-creates a missing object on upgrade, so the migration runs again, as it should.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from airflow_gitops.errors import ToolkitError, UsageError
from airflow_gitops.stack import load_stack

CHART_REPOSITORY = "https://airflow.apache.org"
CHART_NAME = "airflow"
# Labels the chart puts on its migration Job (templates/jobs/migrate-database-job.yaml).
MIGRATION_JOB_COMPONENT = "run-airflow-migrations"
DEPLOY_TIMEOUT = "20m"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--values",
        default="build/values.yaml",
        help="rendered values file (default: build/values.yaml, from `render`)",
    )
    parser.add_argument("--chart", help="a local chart package instead of the chart repository")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")


def chart_facts(stack: dict[str, Any]) -> tuple[str, str, str]:
    airflow = stack.get("airflow") or {}
    try:
        return airflow["release"], airflow["namespace"], str(airflow["chart_version"])
    except KeyError as exc:
        raise UsageError(
            f"stack.yaml: airflow.{exc.args[0]} is missing; run `make validate`"
        ) from None


def values_files(values: Path | str) -> list[str]:
    """The rendered values file and, when `render` wrote one beside it, the environment's
    overlay, in the order helm merges them (the overlay wins)."""
    from airflow_gitops.render import OVERLAY_FILE

    overlay = Path(values).with_name(OVERLAY_FILE)
    return [str(values), *([str(overlay)] if overlay.is_file() else [])]


def release_arguments(
    stack: dict[str, Any], values: Path | str, chart: str | None = None
) -> list[str]:
    """``RELEASE CHART --version V --namespace NS --values FILE…``: shared by every helm verb."""
    release, namespace, version = chart_facts(stack)
    source = [chart] if chart else [CHART_NAME, "--repo", CHART_REPOSITORY]
    files = [arg for path in values_files(values) for arg in ("--values", path)]
    return [release, *source, "--version", version, "--namespace", namespace, *files]


def helm_binary() -> str:
    return os.environ.get("HELM", "helm")


def template_command(
    stack: dict[str, Any], values: Path | str, chart: str | None = None
) -> list[str]:
    return [helm_binary(), "template", *release_arguments(stack, values, chart)]


def upgrade_command(
    stack: dict[str, Any], values: Path | str, chart: str | None = None
) -> list[str]:
    """Install or upgrade; on any failure helm rolls back to the last good release."""
    return [
        helm_binary(),
        "upgrade",
        "--install",
        *release_arguments(stack, values, chart),
        "--rollback-on-failure",
        "--wait=watcher",
        "--timeout",
        DEPLOY_TIMEOUT,
    ]


def clear_migration_job_command(stack: dict[str, Any]) -> list[str]:
    release, namespace, _ = chart_facts(stack)
    return [
        os.environ.get("KUBECTL", "kubectl"),
        "delete",
        "job",
        "--namespace",
        namespace,
        "--selector",
        f"component={MIGRATION_JOB_COMPONENT},release={release}",
        "--ignore-not-found",
        "--wait=true",
    ]


def call(command: list[str], capture: bool = False) -> str:
    try:
        result = subprocess.run(
            command, check=False, capture_output=capture, text=True, timeout=3600
        )
    except FileNotFoundError:
        raise ToolkitError(
            f"{command[0]}: not found; install it (the workflows use .github/actions/setup-helm)"
        ) from None
    if result.returncode != 0:
        detail = (result.stderr or "").strip() if capture else ""
        raise ToolkitError(
            f"{' '.join(command[:2])} exited {result.returncode}"
            + (f": {detail}" if detail else "")
        )
    return result.stdout if capture else ""


def run(args) -> int:
    stack = load_stack()
    values = Path(args.values)
    if not values.is_file():
        raise UsageError(f"--values {values}: no such file; run `make render` first")
    commands = [clear_migration_job_command(stack), upgrade_command(stack, values, args.chart)]
    for command in commands:
        print("+ " + " ".join(command), flush=True)
        if not args.dry_run:
            call(command)
    return 0

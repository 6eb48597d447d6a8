"""One command line for the toolkit: ``python -m airflow_gitops <command> [options]``.

Each command lives in its own module, listed in ``COMMANDS``; the module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen command's module is imported,
so `validate` does not pay for importing boto3.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from airflow_gitops.errors import ToolkitError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "push-dags": ("airflow_gitops.dagsync.push", "upload dags/ to the DAG bucket (only changes)"),
    "pull-dags": ("airflow_gitops.dagsync.pull", "one sync of the DAG bucket into a local folder"),
    "sync-agent": (
        "airflow_gitops.dagsync.agent",
        "the S3 DAG sync agent (sidecar/init container)",
    ),
    "render": ("airflow_gitops.render", "write build/values.yaml and build/k8s/ for deploy"),
    "image-tag": (
        "airflow_gitops.image_tag",
        "print the s3-sync image tag (digest of its sources)",
    ),
    "ci-facts": ("airflow_gitops.ci_facts", "stack.yaml facts as GitHub step outputs"),
    "ensure-secrets": (
        "airflow_gitops.cluster_secrets",
        "create the chart's key Secrets if absent",
    ),
    "dag-check": (
        "airflow_gitops.dag_check",
        "import dags/ with the Airflow version the chart runs",
    ),
    "deploy-chart": (
        "airflow_gitops.helm",
        "helm upgrade --install the pinned chart (what deploy runs)",
    ),
    "admin-user": (
        "airflow_gitops.login",
        "create the first Airflow admin (random password in a Secret)",
    ),
    "ui": ("airflow_gitops.login", "forward the Airflow UI to localhost (kubectl port-forward)"),
    "manifests": (
        "airflow_gitops.manifests",
        "k8s/ + helm template of the pinned chart, for review",
    ),
    "validate": (
        "airflow_gitops.validate",
        "check every file against its schema and the cross-file rules",
    ),
    "efs-publish": ("airflow_gitops.efs_publish", "copy dags/ onto the EFS volume atomically"),
    "plan": ("airflow_gitops.aws.command", "show what `apply` would change in AWS (exit 2 if any)"),
    "apply": ("airflow_gitops.aws.command", "converge the AWS resources this repo needs"),
    "bootstrap": (
        "airflow_gitops.aws.command",
        "as an admin: every role, policy, bucket, add-on (all IAM)",
    ),
    "destroy": (
        "airflow_gitops.aws.command",
        "delete what bootstrap and apply made (--dry-run first)",
    ),
    "connection": (
        "airflow_gitops.airflow_secrets",
        "store one Airflow connection in Secrets Manager (value from $URI or stdin)",
    ),
    "variable": (
        "airflow_gitops.airflow_secrets",
        "store one Airflow variable in Secrets Manager (value from $VALUE or stdin)",
    ),
    "promote": (
        "airflow_gitops.promote",
        "pin what one environment runs for the next one (--diff: show the change only)",
    ),
    "local-aws": (
        "airflow_gitops.local_aws",
        "a local AWS (moto) on 127.0.0.1 to try the AWS commands",
    ),
}


def version_line() -> str:
    """The toolkit's version and, for a repo made by cruft, the template commit it came from."""
    import json
    from pathlib import Path

    from airflow_gitops import __version__

    line = f"airflow_gitops {__version__}"
    repo_root = Path(__file__).resolve().parent.parent
    try:
        state = json.loads((repo_root / ".cruft.json").read_text(encoding="utf-8"))
        line += f" (template {state['template']} at {str(state['commit'])[:12]})"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not made by cruft, or its record is unreadable: the version alone
    return line


class VersionAction(argparse.Action):
    """``--version`` as one unwrapped line (argparse's own action wraps long lines)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_line())
        parser.exit()


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_gitops",
        description="Toolkit of this Airflow-on-EKS GitOps repository.",
    )
    parser.add_argument(
        "--version", action=VersionAction, help="show the toolkit's version and exit"
    )
    parser.add_argument(
        "--env",
        metavar="NAME",
        help="the environment of stack.yaml to act on (default: $AIRFLOW_GITOPS_ENV, "
        "else the only one)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module_name).add_arguments(command_parser)
        command_parser.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next(
        (a for i, a in enumerate(argv) if not a.startswith("-") and argv[i - 1 : i] != ["--env"]),
        None,
    )
    args = build_parser(selected).parse_args(argv)
    if args.env is not None:
        # Every command reads the environment the same way (airflow_gitops.stack).
        from airflow_gitops.stack import ENV_VARIABLE

        os.environ[ENV_VARIABLE] = args.env
    try:
        return importlib.import_module(args._module).run(args)
    except ToolkitError as exc:
        print(f"ERROR [{type(exc).__name__}]: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        return 130

"""``ci-facts``: the facts of stack.yaml that the workflows need, as GitHub step outputs.

The workflows are plain YAML copied verbatim into this repository, so they cannot hold the
account, the role or the chart version; their first step runs this command and later steps
read ``steps.<id>.outputs.<name>``. With ``GITHUB_OUTPUT`` unset it prints the same lines.
"""

from __future__ import annotations

import json
import os
from typing import Any

from airflow_gitops.errors import UsageError
from airflow_gitops.stack import REPO_ROOT, load_stack


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    parser.add_argument("--get", metavar="NAME", help="print one fact's value (for make and shell)")
    parser.add_argument(
        "--targets",
        metavar="BEFORE",
        help="instead: `targets`, the environments a push from commit BEFORE to HEAD deploys, "
        "as JSON (all of them when BEFORE is empty or unknown, as for a manual run)",
    )
    parser.add_argument(
        "--first",
        action="store_true",
        help="with several environments and none chosen: the first one's facts (pull requests)",
    )


def _get(stack: dict[str, Any], dotted: str) -> Any:
    node: Any = stack
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UsageError(f"stack.yaml: {dotted} is missing; run `make validate`")
        node = node[part]
    return node


def role_arn(stack: dict[str, Any], key: str) -> str:
    """arn of stack.yaml aws.<key>; "" when this mode has no such role (deploy_role is required)."""
    aws = stack.get("aws") or {}
    if key == "deploy_role" or key in aws:
        name = _get(stack, f"aws.{key}")
        return f"arn:aws:iam::{_get(stack, 'aws.account_id')}:role/{name}"
    return ""


def ci_facts(stack: dict[str, Any], root=None) -> dict[str, str]:
    """Name -> value of every fact a workflow reads (all strings, one line each)."""
    account, region = str(_get(stack, "aws.account_id")), str(_get(stack, "aws.region"))
    dags = stack.get("dags") or {}
    facts = {
        "environment": _get(stack, "github.environment"),
        "deploy_branch": _get(stack, "github.deploy_branch"),
        "aws_region": region,
        "deploy_role_arn": role_arn(stack, "deploy_role"),
        # One role per job; empty where this mode has no such workflow.
        "sync_dags_role_arn": role_arn(stack, "sync_dags_role"),
        "build_sync_image_role_arn": role_arn(stack, "build_sync_image_role"),
        "build_airflow_image_role_arn": role_arn(stack, "build_airflow_image_role"),
        "drift_check_role_arn": role_arn(stack, "drift_check_role"),
        "cluster_name": _get(stack, "eks.cluster_name"),
        "namespace": _get(stack, "airflow.namespace"),
        "release": _get(stack, "airflow.release"),
        "chart_version": _get(stack, "airflow.chart_version"),
        "airflow_version": _get(stack, "airflow.version"),
        "executor": _get(stack, "airflow.executor"),
        "dag_source": _get(stack, "dags.source"),
        "sync_image": dags.get("sync_image", ""),
        "ecr_registry": f"{account}.dkr.ecr.{region}.amazonaws.com",
        "sync_image_repository": (stack.get("images") or {}).get("s3_sync_repository", ""),
        "sync_image_tag": "",
        "airflow_image_repository": (stack.get("images") or {}).get("airflow_repository", ""),
        # Set when image/ adds packages or plugins: the own Airflow image's tag; "" = stock.
        "airflow_image_tag": "",
    }
    if facts["dag_source"] == "s3-sync" and facts["sync_image"] == "own-image":
        from airflow_gitops.image_tag import sync_image_tag

        facts["sync_image_tag"] = sync_image_tag(root)
    from airflow_gitops.airflow_image import builds_own_image

    if facts["airflow_image_repository"] and builds_own_image(root):
        from airflow_gitops.image_tag import airflow_image_tag

        facts["airflow_image_tag"] = airflow_image_tag(root)
    facts = {name: str(value) for name, value in facts.items()}
    for name, value in facts.items():
        # A newline would let a value in stack.yaml write outputs of its own.
        if "\n" in value or "\r" in value:
            raise UsageError(f"stack.yaml: the value of {name} spans lines: {value!r}")
    return facts


def targets(root, before: str | None) -> list[dict[str, str]]:
    """The environments a push runs a workflow for, each {name, environment, ref}: the first
    (at the pushed commit) unless the push changed only later environments' pins; a later one
    (at the commit it pins) when its release.yaml changed. A one-environment repo: the one,
    named "". With no ``before``, or one this clone lacks (a new branch, a manual or scheduled
    run): every environment that has something to run. Each workflow's ``paths`` filter has
    already said whether the push concerns it."""
    from airflow_gitops.releases import git, read_pin, release_path
    from airflow_gitops.stack import environment_names, environment_view, read_stack

    stack = read_stack(root)
    names = environment_names(stack)
    head = git(root, "rev-parse", "HEAD").stdout.strip()
    changed: list[str] | None = None
    if before and set(before) != {"0"}:
        diff = git(root, "diff", "--name-only", before, head)
        changed = diff.stdout.splitlines() if diff.returncode == 0 else None
    pins = {release_path(name) for name in names[1:]}

    found = []
    for index, name in enumerate(names or [None]):
        view = environment_view(stack, name)
        github = str((view.get("github") or {}).get("environment", ""))
        if index == 0:
            if changed is None or any(f not in pins for f in changed):
                found.append({"name": name or "", "environment": github, "ref": head})
            continue
        pin = read_pin(root, name)
        if pin and (changed is None or release_path(name) in changed):
            found.append({"name": name, "environment": github, "ref": pin})
    return found


def run(args) -> int:
    if args.targets is not None:
        from airflow_gitops.stack import read_stack

        found = targets(REPO_ROOT, args.targets)
        branch = str((read_stack().get("github") or {}).get("deploy_branch", ""))
        shown = {"targets": json.dumps(found, separators=(",", ":")), "deploy_branch": branch}
        return _write(shown, args)
    facts = ci_facts(load_stack(first_by_default=args.first), REPO_ROOT)
    return _write(facts, args)


def _write(facts: dict[str, str], args) -> int:
    if args.get:
        if args.get not in facts:
            raise UsageError(f"--get {args.get}: unknown fact; known: {', '.join(facts)}")
        print(facts[args.get])
        return 0
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    lines = "".join(f"{name}={value}\n" for name, value in facts.items())
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(lines)
    print(lines, end="")
    return 0

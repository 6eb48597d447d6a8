"""``plan``, ``apply``, ``bootstrap``, ``destroy``: parse arguments, converge, print.

Exit codes (docs/aws-setup.md): 0 done / nothing to change; 2 ``plan`` found changes; 1 any
error (AWS, credentials, stack.yaml, iam/ documents, or `apply` finding IAM drift). argparse's
own usage errors also exit 2, before any AWS call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from airflow_gitops.aws.converge import BOOTSTRAP, Result
from airflow_gitops.aws.errors import AwsError, aws_call
from airflow_gitops.errors import ToolkitError
from airflow_gitops.stack import (
    REPO_ROOT,
    choose_environment,
    environment_view,
    read_stack,
    sharing,
)

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    if parser.prog.endswith(" plan"):
        parser.add_argument(
            "--bootstrap",
            action="store_true",
            help="also plan the GitHub settings bootstrap makes (token needed)",
        )
    if parser.prog.endswith(" destroy"):
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="only say what would be deleted (exit 2 if anything)",
        )
        parser.add_argument(
            "--delete-data",
            action="store_true",
            help="also delete a bucket with DAGs, images, a file system with files",
        )


class ConvergeError(ToolkitError):
    """A run stopped part way; ``results`` holds what was done before it."""

    def __init__(self, message: str, results: list[Result]) -> None:
        super().__init__(message)
        self.results = results


def check_identity(ctx) -> str:
    """The credentials must belong to stack.yaml's account: a wrong profile stops here."""
    with aws_call("aws credentials"):
        identity = ctx.client("sts").get_caller_identity()
    if identity["Account"] != ctx.account:
        raise AwsError(
            f"aws credentials: they are for account {identity['Account']} "
            f"({identity['Arn']}), stack.yaml aws.account_id is {ctx.account}; "
            "switch AWS_PROFILE or fix stack.yaml"
        )
    return identity["Arn"]


def converge(
    command: str,
    stack: dict,
    root: Path | str = REPO_ROOT,
    session=None,
    bootstrap_set: bool = False,
    echo: Callable[[Result], None] | None = None,
    sleep=None,
    http=None,
    dry_run: bool = False,
    delete_data: bool = False,
    cluster_owner: str | None = None,
    account_shared_with: tuple[str, ...] = (),
) -> list[Result]:
    """Run ``command`` (plan/apply/bootstrap/destroy) and return one Result per resource.

    ``session`` is the boto3 session to use (default: a new one in stack.yaml's region);
    ``http`` answers GitHub API calls (default: api.github.com with GITHUB_TOKEN, if set).
    """
    from airflow_gitops.aws import github
    from airflow_gitops.aws.resources import (
        GITHUB_OIDC,
        all_resources,
        apply_owned,
        bootstrap_owned,
        ci_roles,
    )
    from airflow_gitops.aws.session import AwsContext, new_session

    bootstrap = command == "bootstrap" or bootstrap_set
    try:
        region = stack["aws"]["region"]
        resources = all_resources(stack, cluster_owner)
    except (KeyError, TypeError) as exc:
        raise ToolkitError(f"stack.yaml: missing or malformed {exc}; run `make validate`") from None
    kwargs = {"sleep": sleep} if sleep else {}
    ctx = AwsContext(
        stack, root, session or new_session(region), dry_run=command != "bootstrap", **kwargs
    )
    results: list[Result] = []

    def run_all(items) -> None:
        for resource in items:
            with aws_call(resource.label):
                for result in resource.converge(ctx):
                    results.append(result)
                    if echo:
                        echo(result)

    try:
        check_identity(ctx)
        if command == "destroy":
            if account_shared_with:  # the account's GitHub OIDC provider: theirs too
                resources = [r for r in resources if r.name != GITHUB_OIDC]
            destroy(ctx, resources, results, echo, dry_run, delete_data)
            return results
        for role in ci_roles(stack):
            github.check_trust_subject(
                ctx, role.trust_file, github.subject(stack, role.workflow, role.environment)
            )
        if bootstrap:
            token = github.token()
            http = http or (github.api(token) if token else None)
            run_all(
                [github.GithubSubjectTemplate(stack, http), github.GithubEnvironment(stack, http)]
            )
        if command == "apply":
            # IAM and access control are bootstrap's: read them, and stop before any change
            # if they are not what iam/ and stack.yaml say.
            run_all(bootstrap_owned(resources))
            drifted = [r for r in results if r.changes]
            if drifted:
                names = ", ".join(f"{r.kind} {r.name}" for r in drifted)
                raise ToolkitError(
                    f"{names}: not as iam/ and stack.yaml describe (see "
                    "`make plan`); run `make bootstrap`"
                )
            ctx.dry_run = False
            run_all(apply_owned(resources))
        else:
            run_all(resources)
    except KeyError as exc:
        raise ConvergeError(f"stack.yaml: missing {exc}; run `make validate`", results) from None
    except ToolkitError as exc:
        raise ConvergeError(str(exc), results) from None
    return results


def destroy(ctx, resources, results: list[Result], echo, dry_run: bool, delete_data: bool) -> None:
    """Everything this repo made, in reverse order. A first read-only pass finds what would
    be refused (a bucket with DAGs, a file system with files) before anything is deleted."""
    ctx.delete_data = delete_data
    ctx.dry_run = True
    for resource in reversed(resources):
        with aws_call(resource.label):
            resource.removal(ctx)
    ctx.dry_run = dry_run
    for resource in reversed(resources):
        with aws_call(resource.label):
            for result in resource.destroy(ctx):
                results.append(result)
                if echo:
                    echo(result)


def summary(command: str, results: list[Result], dry_run: bool = False) -> str:
    if command == "destroy":
        deleted = sum(r.action == "delete" for r in results)
        if dry_run:
            tail = "; run `make destroy`" if deleted else ""
            return f"Destroy plan: {deleted} to delete{tail}."
        return f"Destroy complete: {deleted} deleted."
    counts = {
        action: sum(r.action == action for r in results)
        for action in ("create", "update", "ok", "manual")
    }
    manual = f", {counts['manual']} to do by hand" if counts["manual"] else ""
    if command == "plan":
        changed = [r for r in results if r.changes]
        tail = ""
        if any(r.owner == BOOTSTRAP for r in changed):
            tail = "; run `make bootstrap` (as an admin)"
        elif changed:
            tail = "; run `make apply`"
        return (
            f"Plan: {counts['create']} to create, {counts['update']} to update, "
            f"{counts['ok']} unchanged{manual}{tail}."
        )
    return (
        f"{command.capitalize()} complete: {counts['create']} created, "
        f"{counts['update']} updated, {counts['ok']} unchanged{manual}."
    )


def run(args, session=None, root: Path | str | None = None) -> int:
    command = args.command
    root = Path(root or REPO_ROOT)
    as_json = getattr(args, "json", False)
    bootstrap_set = getattr(args, "bootstrap", False)
    dry_run = getattr(args, "dry_run", False)
    try:
        raw = read_stack(root)
        env = choose_environment(raw)
        stack = environment_view(raw, env)
        cluster_owner, account_shared_with = sharing(raw, env)
    except ToolkitError as exc:  # a UsageError's exit 2 would read as "plan found changes"
        print(f"ERROR [{type(exc).__name__}]: {exc}", file=sys.stderr)
        return EXIT_ERROR

    def echo(result: Result) -> None:
        if not as_json:
            print(result.line(), flush=True)

    error: str | None = None
    try:
        results = converge(
            command,
            stack,
            root,
            session,
            bootstrap_set,
            echo,
            dry_run=dry_run,
            delete_data=getattr(args, "delete_data", False),
            cluster_owner=cluster_owner,
            account_shared_with=tuple(account_shared_with),
        )
    except ConvergeError as exc:
        results, error = exc.results, str(exc)
    changes = any(r.changes for r in results)
    if as_json:
        print(
            json.dumps(
                {
                    "command": "plan --bootstrap" if bootstrap_set else command,
                    "dag_source": stack.get("dags", {}).get("source"),
                    "resources": [r.as_dict() for r in results],
                    "changes": changes,
                    "error": error,
                },
                indent=2,
            )
        )
    elif error is None:
        print(summary(command, results, dry_run))
    if error is not None:
        print(f"ERROR [AwsError]: {error}", file=sys.stderr)
        return EXIT_ERROR
    planning = command == "plan" or (command == "destroy" and dry_run)
    return EXIT_CHANGES if planning and changes else EXIT_OK

"""AWS failures become one line naming the resource, the cause or missing permission, and the
next step; `plan`'s exit codes; the CLI end to end (a subprocess reaching moto only through
AWS_ENDPOINT_URL)."""

from __future__ import annotations

import re

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aws_testkit import (
    ACCOUNT,
    EksExtras,
    create_cluster,
    instrument,
    make_repo,
    session,
    stack_for,
)
from botocore.awsrequest import AWSResponse

from airflow_gitops.aws.command import ConvergeError, converge, run

from repos import REPO  # the default bake


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs):
        yield self.body


def answer(target, operation: str, status: int, body: bytes = b"", counter: list | None = None):
    """Make every HTTP request for ``operation`` get this answer instead of moto's (before-send:
    botocore parses it and applies its retry rules as for a real answer)."""

    def handler(request, **kwargs):
        if counter is not None:
            counter.append(operation)
        return AWSResponse(request.url, status, {}, _Raw(body))

    target.events.register(f"before-send.*.{operation}", handler)


def query_error(code: str, message: str) -> bytes:
    return (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    ).encode()


def fails(stack, root, target, command="apply") -> str:
    with pytest.raises(ConvergeError) as caught:
        converge(command, stack, root, target)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_cluster_not_found(aws, tmp_path):
    stack = stack_for("s3-bundle")
    message = fails(stack, make_repo(tmp_path, stack), session())
    assert message.startswith("eks cluster data-platform: not found in account 123456789012")
    assert "check eks.cluster_name and aws.region in stack.yaml" in message


def test_access_denied_names_the_permission_and_the_next_step(aws, tmp_path):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    target = session()
    instrument(target, EksExtras())
    answer(
        target,
        "CreateRole",
        403,
        query_error(
            "AccessDenied",
            "User: arn:aws:sts::123456789012:assumed-role/deploy/gh is not "
            "authorized to perform: iam:CreateRole",
        ),
    )
    message = fails(stack, root, target, "bootstrap")
    assert message.startswith(
        "iam role airflow-gitops-deploy: access denied for iam:CreateRole (CreateRole)"
    )
    assert "run `make bootstrap` as an admin" in message


def test_throttling_is_retried_in_standard_mode_then_reported(aws, tmp_path):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    target = session()
    sent: list = []
    answer(target, "GetPolicy", 400, query_error("Throttling", "Rate exceeded"), sent)
    message = fails(stack, root, target, "plan")
    assert len(sent) == 3  # standard mode: 3 attempts
    # the first policy bootstrap reads (in name order) is where it stops
    assert re.match(
        r"iam policy airflow-gitops-[a-z-]+-policy: AWS throttled GetPolicy \(Throttling\) "
        r"after 3 attempts",
        message,
    ), message
    assert "wait a minute and run again" in message


def test_an_html_error_page_still_makes_one_line(aws, tmp_path):
    """An endpoint that lacks an API (plain moto, a proxy) answers with an HTML page; the error
    stays one line. The local AWS answers access entries, so the page is given here."""
    stack = stack_for("git-sync")
    root = make_repo(tmp_path, stack)
    create_cluster()
    target = session()
    page = b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    answer(target, "DescribeAccessEntry", 404, page)
    message = fails(stack, root, target, "bootstrap")
    assert message.startswith(
        "eks access entry airflow-gitops-deploy: DescribeAccessEntry got HTTP 404 Not Found with "
        "a body of no declared type, not an AWS error"
    )


def test_bucket_name_owned_by_another_account(aws, tmp_path):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    other = session("111111111111").client("s3")
    other.create_bucket(
        Bucket=stack["dags"]["bucket"],
        CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
    )
    target = session()
    instrument(target, EksExtras())
    # AWS answers HeadBucket with ExpectedBucketOwner=<us> on someone else's bucket with 403;
    # moto ignores ExpectedBucketOwner and says 200, so that answer is given here.
    answer(target, "HeadBucket", 403)
    message = fails(stack, root, target, "bootstrap")
    assert "exists but is not this account's or not readable" in message
    assert "choose another dags.bucket in stack.yaml" in message

    # A name taken between our look and our create: moto's own BucketAlreadyExists.
    target = session()
    instrument(target, EksExtras())
    answer(target, "HeadBucket", 404)
    message = fails(stack, root, target, "bootstrap")
    assert message.startswith(
        f"s3 bucket {stack['dags']['bucket']}: the name is taken by "
        "another AWS account (BucketAlreadyExists"
    )


def test_credentials_for_another_account_stop_before_any_change(aws, tmp_path):
    stack = stack_for("s3-bundle", account="111111111111")
    root = make_repo(tmp_path, stack)
    target = session()
    log = instrument(target, EksExtras())
    message = fails(stack, root, target)
    assert message.startswith(f"aws credentials: they are for account {ACCOUNT}")
    assert log.operations() == ["GetCallerIdentity"]


def args(command: str, **extra) -> argparse.Namespace:
    return argparse.Namespace(command=command, json=False, bootstrap=False, **extra)


def instrumented(eks: EksExtras):
    target = session()
    instrument(target, eks)
    return target


def test_plan_exit_codes_and_what_to_run(aws, tmp_path, capsys):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    eks = EksExtras()
    assert run(args("plan"), instrumented(eks), root) == 1  # no cluster: an error, not changes
    assert capsys.readouterr().err.startswith("ERROR [AwsError]: eks cluster data-platform")
    create_cluster()
    assert run(args("plan"), instrumented(eks), root) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("create iam oidc provider     token.actions.githubusercontent.com")
    creates = sum(line.startswith("create ") for line in out)
    assert creates > 10 and out[-1].startswith(
        f"Plan: {creates} to create, 0 to update, 0 unchanged"
    )
    assert out[-1].endswith("; run `make bootstrap` (as an admin).")
    assert run(args("bootstrap"), instrumented(eks), root) == 0
    assert run(args("plan"), instrumented(eks), root) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1]
        == f"Plan: 0 to create, 0 to update, {creates} unchanged."
    )
    (root / "stack.yaml").write_text("not: [valid")
    assert run(args("plan"), instrumented(eks), root) == 1


def test_json_output(aws, tmp_path, capsys):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    assert (
        run(
            argparse.Namespace(command="plan", json=True, bootstrap=False),
            instrumented(EksExtras()),
            root,
        )
        == 2
    )
    report = json.loads(capsys.readouterr().out)
    assert report["changes"] is True and report["error"] is None
    assert {r["action"] for r in report["resources"]} == {"create"}
    assert set(report["resources"][0]) == {"action", "kind", "name", "details", "owner", "diff"}
    first_policy = report["resources"][1]
    assert first_policy["kind"] == "iam policy"
    assert (
        first_policy["diff"][0]
        == f"--- iam/{first_policy['name'].removeprefix('airflow-gitops-')}.json (now)"
    )


def test_plan_bootstrap_is_read_only_and_says_what_to_do_on_github(
    aws, tmp_path, capsys, monkeypatch
):
    for variable in ("GITHUB_TOKEN", "GH_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    stack = stack_for("git-sync")
    root = make_repo(tmp_path, stack)
    create_cluster()
    target = session()
    log = instrument(target, EksExtras())
    assert run(argparse.Namespace(command="plan", json=False, bootstrap=True), target, root) == 2
    assert log.mutating() == []
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "manual github oidc subject   example-org/airflow-gitops  (no "
        "GITHUB_TOKEN: run `gh api --method PUT repos/example-org/"
        "airflow-gitops/actions/oidc/customization/sub -F "
        "use_default=false -f 'include_claim_keys[]=repo'"
    )
    assert lines[1].startswith("manual github environment    production")
    assert lines[-1].startswith("Plan: ") and lines[-1].endswith(
        "2 to do by hand; run `make bootstrap` (as an admin)."
    )


def cli(repo: Path, server, *argv: str, make: bool = False) -> subprocess.CompletedProcess:
    """The toolkit in its own process (EKS extras from the file model, the rest from moto
    through AWS_ENDPOINT_URL only), directly or through the repo's Makefile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(server.env("eu-west-1"))  # the endpoint reaches boto3 only as AWS_ENDPOINT_URL
    env["EKS_FAKE_STATE"] = str(repo / "eks-fake.json")
    toolkit = [sys.executable, str(Path(__file__).resolve().parent / "cli_with_eks_fake.py")]
    if make:
        command = ["make", "--no-print-directory", *argv, f"TOOLKIT={' '.join(toolkit)}"]
    else:
        command = [*toolkit, *argv]
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=180)


def test_cli_end_to_end(aws, tmp_path):
    repo = make_repo(tmp_path, stack_for("s3-bundle"))
    shutil.copytree(
        REPO / "airflow_gitops",
        repo / "airflow_gitops",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    missing = cli(repo, aws, "plan")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    create_cluster()
    assert cli(repo, aws, "plan").returncode == 2
    early = cli(repo, aws, "apply")  # before bootstrap: nothing written, one line, exit 1
    assert early.returncode == 1 and early.stderr.count("\n") == 1
    assert early.stderr.rstrip().endswith("run `make bootstrap`")
    booted = cli(repo, aws, "bootstrap")
    assert booted.returncode == 0, booted.stderr
    created = sum(line.startswith("create ") for line in booted.stdout.splitlines())
    assert (
        booted.stdout.splitlines()[-1]
        == f"Bootstrap complete: {created} created, 0 updated, 0 unchanged, 2 to do by hand."
    )
    assert cli(repo, aws, "apply").returncode == 0
    planned = cli(repo, aws, "plan", "--json")
    assert planned.returncode == 0
    assert json.loads(planned.stdout)["changes"] is False


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed here")
def test_make_plan_exit_codes(aws, tmp_path):
    """GNU make itself exits 2 whenever a recipe fails, whatever the recipe's code; the
    toolkit's own code (1 error, 2 changes) shows in make's "Error N" line, and scripts that
    need it call `python -m airflow_gitops plan` directly (the drift workflow does)."""
    repo = make_repo(tmp_path, stack_for("s3-bundle"))
    shutil.copytree(
        REPO / "airflow_gitops",
        repo / "airflow_gitops",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO / "Makefile", repo / "Makefile")
    error = cli(repo, aws, "plan", make=True)
    assert error.returncode != 0 and "Error 1" in error.stderr
    create_cluster()
    changes = cli(repo, aws, "plan", make=True)
    assert changes.returncode == 2 and "Error 2" in changes.stderr
    assert cli(repo, aws, "bootstrap", make=True).returncode == 0
    clean = cli(repo, aws, "plan", make=True)
    assert clean.returncode == 0, clean.stderr

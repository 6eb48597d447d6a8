"""AWS failures become one line naming the resource, the cause or missing permission, and the
next step; `plan`'s exit codes; the CLI end to end (a subprocess reaching moto only through
AWS_ENDPOINT_URL)."""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parent.parent


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
    return (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
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
    answer(target, "CreateRole", 403, query_error(
        "AccessDenied", "User: arn:aws:sts::123456789012:assumed-role/deploy/gh is not "
        "authorized to perform: iam:CreateRole"))
    message = fails(stack, root, target)
    assert message.startswith("iam role airflow-gitops-dag-reader: access denied for "
                              "iam:CreateRole (CreateRole)")
    assert "run `make bootstrap` as an admin" in message


def test_throttling_is_retried_in_standard_mode_then_reported(aws, tmp_path):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    target = session()
    sent: list = []
    answer(target, "GetPolicy", 400, query_error("Throttling", "Rate exceeded"), sent)
    message = fails(stack, root, target)
    assert len(sent) == 3  # standard mode: 3 attempts
    assert message.startswith("iam policy airflow-gitops-dag-read-policy: AWS throttled "
                              "GetPolicy (Throttling) after 3 attempts")
    assert "wait a minute and run again" in message


def test_bucket_name_owned_by_another_account(aws, tmp_path):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    other = session("111111111111").client("s3")
    other.create_bucket(Bucket=stack["dags"]["bucket"],
                        CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    target = session()
    # AWS answers HeadBucket with ExpectedBucketOwner=<us> on someone else's bucket with 403;
    # moto ignores ExpectedBucketOwner and says 200, so that answer is given here.
    answer(target, "HeadBucket", 403)
    message = fails(stack, root, target)
    assert "exists but is not this account's or not readable" in message
    assert "choose another dags.bucket in stack.yaml" in message

    # A name taken between our look and our create: moto's own BucketAlreadyExists.
    target = session()
    answer(target, "HeadBucket", 404)
    message = fails(stack, root, target)
    assert message.startswith(f"s3 bucket {stack['dags']['bucket']}: the name is taken by "
                              "another AWS account (BucketAlreadyExists")


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


def test_plan_exit_codes(aws, tmp_path, capsys):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    assert run(args("plan"), session(), root) == 1  # no cluster yet: an error, not "changes"
    assert capsys.readouterr().err.startswith("ERROR [AwsError]: eks cluster data-platform")
    create_cluster()
    assert run(args("plan"), session(), root) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("create s3 bucket") and out[-1].startswith("Plan: 4 to create")
    assert run(args("apply"), session(), root) == 0
    assert run(args("plan"), session(), root) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "Plan: 0 to create, 0 to update, 4 unchanged."
    (root / "stack.yaml").write_text("not: [valid")
    assert run(args("plan"), session(), root) == 1


def test_json_output(aws, tmp_path, capsys):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    assert run(argparse.Namespace(command="plan", json=True, bootstrap=False),
               session(), root) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["changes"] is True and report["error"] is None
    assert [r["action"] for r in report["resources"]] == ["create"] * 4
    assert set(report["resources"][0]) == {"action", "kind", "name", "details"}


def test_plan_bootstrap_is_read_only(aws, tmp_path, capsys):
    stack = stack_for("git-sync")
    root = make_repo(tmp_path, stack)
    create_cluster()
    target = session()
    log = instrument(target, EksExtras())
    assert run(argparse.Namespace(command="plan", json=False, bootstrap=True),
               target, root) == 2
    assert log.mutating() == []
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["create"] * 5
    assert "deploy" in lines[2] and lines[-1].startswith("Plan: 5 to create")


def cli(repo: Path, server, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(server.env("eu-west-1"))  # the endpoint reaches boto3 only as AWS_ENDPOINT_URL
    return subprocess.run([sys.executable, "-m", "airflow_gitops", *argv], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_end_to_end(aws, tmp_path):
    repo = make_repo(tmp_path, stack_for("s3-bundle"))
    shutil.copytree(REPO / "airflow_gitops", repo / "airflow_gitops",
                    ignore=shutil.ignore_patterns("__pycache__"))
    missing = cli(repo, aws, "plan")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    create_cluster()
    assert cli(repo, aws, "plan").returncode == 2
    applied = cli(repo, aws, "apply")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1] == "Apply complete: 4 created, 0 updated, 0 unchanged."
    planned = cli(repo, aws, "plan", "--json")
    assert planned.returncode == 0
    assert json.loads(planned.stdout)["changes"] is False

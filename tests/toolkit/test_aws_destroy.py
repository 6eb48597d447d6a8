"""`destroy`: removes what bootstrap and apply made for this repo and nothing else, refuses
data unless told, has a dry run, and leaves moto as it found it."""

from __future__ import annotations

import argparse

import pytest
from airflow_gitops.aws.command import ConvergeError, converge, run
from aws_testkit import (
    EksExtras,
    create_cluster,
    instrument,
    make_repo,
    session,
    snapshot,
    stack_for,
)

MODES = {
    "s3-sync+own-image": ("s3-sync", "own-image"),
    "efs": ("efs", "own-image"),
    "git-bundle": ("git-bundle", "own-image"),
}


def target(eks: EksExtras):
    instrumented = session()
    instrument(instrumented, eks)
    return instrumented


@pytest.mark.parametrize("mode", list(MODES))
def test_destroy_after_bootstrap_leaves_nothing_of_ours(aws, tmp_path, mode):
    stack = stack_for(*MODES[mode])
    root = make_repo(tmp_path, stack)
    create_cluster()
    before = snapshot(None, EksExtras())
    eks = EksExtras()
    converge("bootstrap", stack, root, target(eks))
    assert snapshot(None, eks) != before

    planned = converge("destroy", stack, root, target(eks), dry_run=True)
    assert {r.action for r in planned} == {"delete"}
    assert snapshot(None, eks)["roles"]  # the dry run deleted nothing

    converge("destroy", stack, root, target(eks))
    assert snapshot(None, eks) == before
    again = converge("destroy", stack, root, target(eks), dry_run=True)
    assert {r.action for r in again} == {"ok"}


def test_destroy_refuses_a_bucket_with_dags_unless_told(aws, tmp_path):
    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    eks = EksExtras()
    converge("bootstrap", stack, root, target(eks))
    s3 = session().client("s3")
    s3.delete_bucket_policy(Bucket=stack["dags"]["bucket"])  # moto: plain HTTP vs TLS-only
    s3.put_object(Bucket=stack["dags"]["bucket"], Key="dags/a.py", Body=b"x")
    s3.put_object(Bucket=stack["dags"]["bucket"], Key="dags/a.py", Body=b"y")
    with pytest.raises(ConvergeError, match=r"holds 2 object versions .*DELETE_DATA=yes`$"):
        converge("destroy", stack, root, target(eks))
    # Refused before anything went: the roles are all still there.
    assert "airflow-gitops-deploy" in snapshot(None, eks)["roles"]
    converge("destroy", stack, root, target(eks), delete_data=True)
    assert snapshot(None, eks)["buckets"] == {}


def test_destroy_keeps_a_provider_another_role_still_trusts(aws, tmp_path):
    import json

    stack = stack_for("git-sync")
    root = make_repo(tmp_path, stack)
    create_cluster()
    eks = EksExtras()
    converge("bootstrap", stack, root, target(eks))
    github = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    session().client("iam").create_role(
        RoleName="another-repo-deploy",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Federated": github},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                    }
                ],
            }
        ),
    )
    converge("destroy", stack, root, target(eks))
    state = snapshot(None, eks)
    assert set(state["roles"]) == {"another-repo-deploy"}
    assert [arn for arn, _ in state["oidc"]] == [github]


def test_destroy_dry_run_exit_codes(aws, tmp_path, capsys):
    stack = stack_for("git-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster()
    eks = EksExtras()
    converge("bootstrap", stack, root, target(eks))
    dry = argparse.Namespace(command="destroy", json=False, dry_run=True, delete_data=False)
    assert run(dry, target(eks), root) == 2
    assert capsys.readouterr().out.splitlines()[-1].endswith("to delete; run `make destroy`.")
    real = argparse.Namespace(command="destroy", json=False, dry_run=False, delete_data=False)
    assert run(real, target(eks), root) == 0
    assert run(dry, target(eks), root) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "Destroy plan: 0 to delete."

"""Task logs in S3: the log bucket bootstrap makes (against moto over HTTP), and the IAM of the
pods that write and read the logs, replayed call by call with the S3 task handler's sequence.

The handler's calls are those of the amazon provider's ``S3RemoteLogIO`` (log/s3_task_handler.py):
a writer asks whether the log exists (HeadObject, via ``check_for_key``, which treats only a
404 as "absent"), reads it when it does (GetObject) and writes the whole log (PutObject); the
API server lists the keys under the task try's path and gets each one. Airflow itself is not
installed here; the sequence is replayed with boto3 (see docs/design-decisions.md).
"""

from __future__ import annotations

import json

import pytest
from aws_testkit import EksExtras, create_cluster, instrument, make_repo, session, stack_for
from botocore.exceptions import ClientError
from iam_eval import Request, allowed

from airflow_gitops.aws.command import ConvergeError, converge
from airflow_gitops.stack import load_stack

from repos import REPO  # the default bake

LOG_KEY = "dag_id=example/run_id=manual__1/task_id=hello/attempt=1.log"


def run(command, stack, root, eks, **kwargs):
    target = session()
    instrument(target, eks)
    return converge(command, stack, root, target, **kwargs)


@pytest.fixture
def bootstrapped(aws, tmp_path):
    stack = stack_for("git-sync")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()
    run("bootstrap", stack, root, eks)
    return stack, root, eks


def test_bootstrap_makes_a_private_tls_only_bucket_whose_logs_expire(bootstrapped):
    stack, _, _ = bootstrapped
    s3 = session().client("s3")
    bucket, prefix = stack["logs"]["bucket"], stack["logs"]["prefix"]
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    [rule] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    [statement] = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    expire = rules["ExpireTaskLogs"]
    assert expire["Status"] == "Enabled"
    assert expire["Filter"] == {"Prefix": f"{prefix}/"}
    assert expire["Expiration"] == {"Days": stack["logs"]["retention_days"]}
    assert rules["AbortIncompleteUploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    # A log is rewritten whole on each upload; old versions would outlive the retention.
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") is None


def test_a_new_retention_is_a_planned_lifecycle_change_only_bootstrap_makes(bootstrapped, tmp_path):
    stack, root, eks = bootstrapped
    stack["logs"]["retention_days"] = 90
    (root / "stack.yaml").write_text(json.dumps(stack))
    planned = [r for r in run("plan", stack, root, eks) if r.changes]
    assert [(r.kind, r.name) for r in planned] == [("s3 bucket", stack["logs"]["bucket"])]
    assert any('"Days": 90' in line for line in planned[0].diff), planned[0].diff
    # apply (the deploy role) never writes bootstrap's retention: it stops and says so.
    with pytest.raises(ConvergeError, match="make bootstrap"):
        run("apply", stack, root, eks)
    run("bootstrap", stack, root, eks)
    rules = (
        session()
        .client("s3")
        .get_bucket_lifecycle_configuration(Bucket=stack["logs"]["bucket"])["Rules"]
    )
    assert {r["ID"]: r for r in rules}["ExpireTaskLogs"]["Expiration"] == {"Days": 90}
    assert not [r for r in run("plan", stack, root, eks) if r.changes]


def test_destroy_keeps_a_bucket_holding_logs_unless_told(bootstrapped):
    stack, root, eks = bootstrapped
    bucket = stack["logs"]["bucket"]
    session().client("s3").put_object(Bucket=bucket, Key=f"logs/{LOG_KEY}", Body=b"hello")
    with pytest.raises(ConvergeError, match="task logs"):
        run("destroy", stack, root, eks)
    run("destroy", stack, root, eks, delete_data=True)
    names = [b["Name"] for b in session().client("s3").list_buckets()["Buckets"]]
    assert bucket not in names


def handler_requests(stack: dict, s3) -> tuple[list[Request], list[Request]]:
    """Run the S3 task handler's calls on moto: a first upload, an appended second one, then the
    API server's read. Returns the authorisations (writer's, reader's) the calls needed."""
    bucket, prefix = stack["logs"]["bucket"], stack["logs"]["prefix"]
    arn = f"arn:aws:s3:::{bucket}"
    key = f"{prefix}/{LOG_KEY}"
    writer, reader = [], []

    def exists() -> bool:
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
            return False

    for part in (b"first part\n", b"second part\n"):
        # HeadObject of a missing key: 404 only with s3:ListBucket (no s3:prefix in context).
        writer.append(Request("s3:GetObject", f"{arn}/{key}"))
        old = b""
        if exists():
            old = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            writer.append(Request("s3:GetObject", f"{arn}/{key}"))
        else:
            writer.append(Request("s3:ListBucket", arn))
        s3.put_object(Bucket=bucket, Key=key, Body=old + part)
        writer.append(Request("s3:PutObject", f"{arn}/{key}"))
    listing_prefix = key  # list_keys(prefix=<base>/<relative path of the try>)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=listing_prefix)["Contents"]]
    reader.append(Request("s3:ListBucket", arn, {"s3:prefix": listing_prefix}))
    assert keys == [key]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    reader.append(Request("s3:GetObject", f"{arn}/{key}"))
    assert body == b"first part\nsecond part\n"
    return writer, reader


def policy(name: str) -> dict:
    return json.loads((REPO / "iam" / name).read_text())


def test_the_log_roles_allow_the_handler_calls_and_no_more(bootstrapped):
    stack = load_stack(REPO)
    moto_stack, _, _ = bootstrapped
    # The calls run on moto's bucket; the requests are checked against this repo's own bucket.
    writer_calls, reader_calls = handler_requests(moto_stack, session().client("s3"))
    ours = f"arn:aws:s3:::{stack['logs']['bucket']}"
    rebased = lambda reqs: [  # noqa: E731
        Request(
            r.action,
            r.resource.replace(f"arn:aws:s3:::{moto_stack['logs']['bucket']}", ours).replace(
                f"/{moto_stack['logs']['prefix']}/", f"/{stack['logs']['prefix']}/"
            ),
            {
                k: v.replace(moto_stack["logs"]["prefix"], stack["logs"]["prefix"], 1)
                for k, v in r.context.items()
            },
        )
        for r in reqs
    ]
    write, read = policy("task-log-write-policy.json"), policy("task-log-read-policy.json")
    assert [r for r in rebased(writer_calls) if not allowed([write], r)] == []
    assert [r for r in rebased(reader_calls) if not allowed([read], r)] == []
    prefix = stack["logs"]["prefix"]
    log = f"{ours}/{prefix}/{LOG_KEY}"
    # The API server reads only.
    for denied in (Request("s3:PutObject", log), Request("s3:DeleteObject", log)):
        assert not allowed([read], denied), denied
    # Nobody reaches outside the log prefix, deletes a log or touches the DAG bucket.
    outside = [
        Request("s3:GetObject", f"{ours}/other/x.log"),
        Request("s3:PutObject", f"{ours}/other/x.log"),
        Request("s3:ListBucket", ours, {"s3:prefix": "other/"}),
        Request("s3:DeleteObject", log),
    ]
    if "bucket" in stack["dags"]:
        dags = f"arn:aws:s3:::{stack['dags']['bucket']}"
        outside += [
            Request("s3:PutObject", f"{dags}/{stack['dags']['prefix']}/x.py"),
            Request("s3:GetObject", f"{dags}/{stack['dags']['prefix']}/x.py"),
        ]
    for request in outside:
        assert not allowed([write], request), request
        assert not allowed([read], request), request
    assert not allowed([read], Request("s3:ListBucket", ours))  # no listing of everything

"""`plan` / `apply` / `bootstrap` against moto over HTTP: mode selection, idempotency, plan is
read-only. Calls are counted on the client (botocore ``before-send``: one per HTTP request)
and, for the idempotency claims, also in moto's own request log."""

from __future__ import annotations

import pytest
from aws_testkit import (
    CLUSTER,
    EksExtras,
    create_cluster,
    instrument,
    make_repo,
    recorder,
    server_mutating,
    server_operations,
    session,
    snapshot,
    stack_for,
)

from airflow_gitops.aws.command import converge

MODES = {
    "s3-sync+own-image": ("s3-sync", "own-image"),
    "s3-sync+aws-cli": ("s3-sync", "aws-cli"),
    "s3-bundle": ("s3-bundle", "own-image"),
    "efs": ("efs", "own-image"),
    "git-sync": ("git-sync", "own-image"),
    "git-bundle": ("git-bundle", "own-image"),
}

# What `apply` manages per mode (kind, in order), read off stack.yaml's dags.source/sync_image.
EXPECTED_KINDS = {
    "s3-sync+own-image": ["s3 bucket", "ecr repository", "iam policy", "iam oidc provider",
                          "iam role"],
    "s3-sync+aws-cli": ["s3 bucket", "iam policy", "iam oidc provider", "iam role"],
    "s3-bundle": ["s3 bucket", "iam policy", "iam oidc provider", "iam role"],
    "efs": ["iam policy", "iam oidc provider", "iam role", "efs file system",
            "ec2 security group", "ec2 ingress rule", "efs mount target", "efs mount target",
            "eks add-on"],
    "git-sync": [],
    "git-bundle": [],
}


def run(command, stack, root, eks, **kwargs):
    target = session()
    log = instrument(target, eks)
    results = converge(command, stack, root, target, **kwargs)
    return results, log


@pytest.mark.parametrize("mode", list(MODES))
def test_apply_converges_once_then_makes_no_mutating_call(aws, tmp_path, mode):
    stack = stack_for(*MODES[mode])
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()

    planned, log = run("plan", stack, root, eks)
    assert [r.kind for r in planned] == EXPECTED_KINDS[mode]
    assert all(r.action == "create" for r in planned)
    assert log.mutating() == [] and log.sent_mutating() == []

    first, log = run("apply", stack, root, eks)
    assert [(r.kind, r.action) for r in first] == [(r.kind, "create") for r in planned]
    assert len(log.mutating()) >= len(first)

    recorder(aws, "reset-recording")
    recorder(aws, "start-recording")
    try:
        second, log2 = run("apply", stack, root, eks)
        again, log3 = run("plan", stack, root, eks)
    finally:
        recorder(aws, "stop-recording")
    assert all(r.action == "ok" for r in second + again)
    # Client side: no mutating operation asked for (moto-bound or faked EKS ones).
    assert log2.mutating() == [] and log3.mutating() == []
    # Server side: moto logged exactly the requests the client sent, none of them mutating.
    logged = server_operations(aws)
    assert len(logged) == len(log2.sent) + len(log3.sent)
    assert server_mutating(aws) == []


def test_apply_creates_what_the_mode_needs(aws, tmp_path):
    """s3-sync with its own image: the bucket is locked down, the role trusts the cluster."""
    stack = stack_for("s3-sync", "own-image")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    converge("apply", stack, root, session())
    state = snapshot(session())
    bucket = state["buckets"][stack["dags"]["bucket"]]
    assert bucket["pab"] == dict.fromkeys(
        ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"], True)
    assert bucket["versioning"] == "Enabled"
    assert "aws:SecureTransport" in bucket["policy"]
    assert bucket["encryption"]["Rules"][0]["ApplyServerSideEncryptionByDefault"][
        "SSEAlgorithm"] == "AES256"
    repo = state["ecr"]["airflow-gitops/s3-sync"]
    assert repo["mutability"] == "IMMUTABLE" and repo["scan"] is True
    assert "imageCountMoreThan" in repo["lifecycle"]
    issuer = session().client("eks").describe_cluster(name=CLUSTER)["cluster"]["identity"][
        "oidc"]["issuer"].removeprefix("https://")
    trust = state["roles"]["airflow-gitops-dag-reader"]["trust"]
    statement = trust["Statement"][0]
    assert statement["Principal"]["Federated"].endswith(f":oidc-provider/{issuer}")
    assert statement["Condition"]["StringEquals"] == {
        f"{issuer}:sub": "system:serviceaccount:airflow:airflow-dag-reader",
        f"{issuer}:aud": "sts.amazonaws.com"}
    assert "EKS_OIDC_ISSUER" not in str(state)
    assert state["roles"]["airflow-gitops-dag-reader"]["attached"] == [
        "arn:aws:iam::123456789012:policy/airflow-gitops-dag-read-policy"]
    assert [arn for arn, audiences in state["oidc"]] == [
        f"arn:aws:iam::123456789012:oidc-provider/{issuer}"]


def test_efs_mode_one_mount_target_per_zone_and_nfs_from_cluster(aws, tmp_path):
    stack = stack_for("efs")
    root = make_repo(tmp_path, stack)
    create_cluster(session())  # three subnets: two in eu-west-1a, one in eu-west-1b
    eks = EksExtras()
    converge("apply", stack, root, _instrumented(eks))
    state = snapshot(session(), eks)
    [fs] = state["efs"]
    assert fs["encrypted"] and fs["token"] == "airflow-gitops-dags"
    group = "airflow-gitops-dags-mount-targets"
    assert fs["mount_targets"] == [("eu-west-1a", (group,)), ("eu-west-1b", (group,))]
    assert state["security_groups"][group] == [
        ("tcp", 2049, 2049, ("eks-cluster-sg-data-platform",))]
    [addon] = eks.addons.values()
    assert addon["serviceAccountRoleArn"] == \
        "arn:aws:iam::123456789012:role/airflow-gitops-efs-csi-driver"


def _instrumented(eks):
    target = session()
    instrument(target, eks)
    return target


def test_bootstrap_trusts_github_and_gives_namespace_scoped_eks_access(aws, tmp_path):
    stack = stack_for("s3-sync", "own-image", oidc_subject="immutable")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()
    results = converge("bootstrap", stack, root, _instrumented(eks))
    assert [r.kind for r in results] == [
        "iam oidc provider", "iam policy", "iam role", "s3 bucket", "ecr repository",
        "eks access entry", "eks access policy"]
    state = snapshot(session(), eks)
    assert ("arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com",
            ["sts.amazonaws.com"]) in state["oidc"]
    trust = state["roles"]["airflow-gitops-deploy"]["trust"]["Statement"][0]["Condition"]
    assert trust["StringEquals"]["token.actions.githubusercontent.com:sub"] == \
        "repo:example-org@1001/airflow-gitops@2002:environment:production"
    [policy] = eks.policies[(CLUSTER, "arn:aws:iam::123456789012:role/airflow-gitops-deploy")
                            ].values()
    assert policy["accessScope"] == {"type": "namespace", "namespaces": ["airflow"]}
    assert policy["policyArn"].endswith("cluster-access-policy/AmazonEKSAdminPolicy")
    again = converge("bootstrap", stack, root, _instrumented(eks))
    assert {r.action for r in again} == {"ok"}


def test_bootstrap_refuses_a_trust_that_does_not_match_stack(aws, tmp_path):
    stack = stack_for("git-sync")
    root = make_repo(tmp_path, stack_for("git-sync", oidc_subject="immutable"))
    from airflow_gitops.aws.command import ConvergeError

    with pytest.raises(ConvergeError, match="deploy-role-trust.json: subject"):
        converge("bootstrap", stack, root, session())


def test_changed_policy_document_becomes_new_default_and_oldest_version_is_pruned(aws, tmp_path):
    import json

    stack = stack_for("s3-bundle")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    converge("apply", stack, root, session())
    iam = session().client("iam")
    arn = "arn:aws:iam::123456789012:policy/airflow-gitops-dag-read-policy"
    document = json.loads((root / "iam" / "dag-read-policy.json").read_text())
    for n in range(4):  # fill up to IAM's limit of five versions, v1 stays default
        document["Statement"][0]["Sid"] = f"Filler{n}"
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(document))
    document["Statement"][0]["Sid"] = "Changed"
    (root / "iam" / "dag-read-policy.json").write_text(json.dumps(document))

    planned = converge("plan", stack, root, session())
    [line] = [r for r in planned if r.kind == "iam policy"]
    assert line.action == "update" and "delete oldest version v2" in line.details[0]
    converge("apply", stack, root, session())
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert len(versions) == 5
    assert "v2" not in {v["VersionId"] for v in versions}
    default = [v for v in versions if v["IsDefaultVersion"]][0]
    assert iam.get_policy_version(PolicyArn=arn, VersionId=default["VersionId"])[
        "PolicyVersion"]["Document"]["Statement"][0]["Sid"] == "Changed"
    assert {r.action for r in converge("plan", stack, root, session())} == {"ok"}


def test_aws_endpoint_url_is_honoured_natively(aws):
    """boto3 1.44 reads AWS_ENDPOINT_URL itself: no endpoint_url in the toolkit's code."""
    from airflow_gitops.aws.session import AwsContext

    ctx = AwsContext(stack_for(), ".", session(), dry_run=True)
    for service in ("s3", "iam", "eks", "efs", "ec2", "ecr", "sts"):
        assert ctx.client(service).meta.endpoint_url == aws.endpoint
    assert ctx.client("iam").meta.config.retries["mode"] == "standard"

"""`plan` / `apply` / `bootstrap` against moto over HTTP: mode selection, idempotency, plan is
read-only. Calls are counted on the client (botocore ``before-send``: one per HTTP request)
and, for the idempotency claims, also in moto's own request log."""

from __future__ import annotations

import json

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

from airflow_gitops.aws.resources import pod_roles
from airflow_gitops.aws.command import converge

MODES = {
    "s3-sync+own-image": ("s3-sync", "own-image"),
    "s3-sync+aws-cli": ("s3-sync", "aws-cli"),
    "s3-bundle": ("s3-bundle", "own-image"),
    "efs": ("efs", "own-image"),
    "git-sync": ("git-sync", "own-image"),
    "git-bundle": ("git-bundle", "own-image"),
}

# Every resource per mode (kind, in order), read off stack.yaml's dags.source/sync_image.
GITHUB = ["iam oidc provider"]
CI = {  # policies (sorted by file), then the roles; build-airflow-image's in every mode
    "s3-sync+own-image": ["iam policy"] * 5 + ["iam role"] * 5,
    "s3-sync+aws-cli": ["iam policy"] * 4 + ["iam role"] * 4,
    "s3-bundle": ["iam policy"] * 4 + ["iam role"] * 4,
    "efs": ["iam policy"] * 4 + ["iam role"] * 4,
    "git-sync": ["iam policy"] * 3 + ["iam role"] * 3,
    "git-bundle": ["iam policy"] * 3 + ["iam role"] * 3,
}
# The own Airflow image's ECR repository (every mode), then task logs and secrets: the log bucket, the cluster's OIDC provider, the log write,
# secrets read and log read policies; then the worker's role (the DAG reader's in S3 modes) and
# the API server's.
LOGS = [
    "ecr repository",
    "s3 bucket",
    "iam oidc provider",
    "iam policy",
    "iam policy",
    "iam policy",
]
IRSA_S3 = LOGS + ["iam policy", "iam role", "iam role", "iam role"]
IRSA = LOGS + ["iam role", "iam role"]
ACCESS = ["eks access entry", "eks access policy"]
EXPECTED_KINDS = {
    "s3-sync+own-image": GITHUB
    + CI["s3-sync+own-image"]
    + ["s3 bucket", "ecr repository"]
    + IRSA_S3
    + ACCESS
    + ["eks add-on"],
    "s3-sync+aws-cli": GITHUB
    + CI["s3-sync+aws-cli"]
    + ["s3 bucket"]
    + IRSA_S3
    + ACCESS
    + ["eks add-on"],
    "s3-bundle": GITHUB + CI["s3-bundle"] + ["s3 bucket"] + IRSA_S3 + ACCESS + ["eks add-on"],
    "efs": GITHUB
    + CI["efs"]
    + IRSA
    + ["iam policy", "iam role", "iam role"]
    + ACCESS * 2
    + [
        "eks add-on",
        "eks add-on",
        "efs file system",
        "ec2 security group",
        "ec2 ingress rules",
        "efs mount target",
        "efs mount target",
    ],
    "git-sync": GITHUB + CI["git-sync"] + IRSA + ["iam role"] + ACCESS + ["eks add-on"],
    "git-bundle": GITHUB + CI["git-bundle"] + IRSA + ["iam role"] + ACCESS + ["eks add-on"],
}
# What `apply` itself writes, per mode; everything else is bootstrap's.
APPLY_KINDS = {"efs file system", "ec2 security group", "ec2 ingress rules", "efs mount target"}


def run(command, stack, root, eks, **kwargs):
    target = session()
    log = instrument(target, eks)
    results = converge(command, stack, root, target, **kwargs)
    return results, log


@pytest.mark.parametrize("mode", list(MODES))
def test_bootstrap_converges_once_then_nothing_changes(aws, tmp_path, mode):
    stack = stack_for(*MODES[mode])
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()

    planned, log = run("plan", stack, root, eks)
    assert [r.kind for r in planned] == EXPECTED_KINDS[mode]
    assert all(r.action == "create" for r in planned)
    assert {r.kind for r in planned if r.owner == "apply"} == APPLY_KINDS & set(
        EXPECTED_KINDS[mode]
    )
    assert log.mutating() == [] and log.sent_mutating() == []

    first, log = run("bootstrap", stack, root, eks)
    created = [r for r in first if not r.kind.startswith("github")]
    assert [(r.kind, r.action) for r in created] == [(r.kind, "create") for r in planned]
    assert len(log.mutating()) >= len(created)

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


@pytest.mark.parametrize("mode", ["s3-bundle", "efs"])
def test_apply_before_bootstrap_changes_nothing_and_says_run_bootstrap(aws, tmp_path, mode):
    from airflow_gitops.aws.command import ConvergeError

    stack = stack_for(*MODES[mode])
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    target = session()
    log = instrument(target, EksExtras())
    with pytest.raises(ConvergeError, match=r"; run `make bootstrap`$") as caught:
        converge("apply", stack, root, target)
    assert "\n" not in str(caught.value)
    assert log.mutating() == [] and log.sent_mutating() == []


def test_apply_writes_only_the_efs_pieces_and_never_iam(aws, tmp_path):
    """With IAM in place, `apply` repairs what it owns (here: the NFS rule was removed and a
    0.0.0.0/0 rule added) with EC2 calls only."""
    stack = stack_for("efs")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()
    run("bootstrap", stack, root, eks)
    ec2 = session().client("ec2")
    [group] = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["airflow-gitops-dags-mount-targets"]}]
    )["SecurityGroups"]
    ec2.revoke_security_group_ingress(
        GroupId=group["GroupId"], IpPermissions=group["IpPermissions"]
    )
    ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 2049,
                "ToPort": 2049,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    results, log = run("apply", stack, root, eks)
    changed = [r for r in results if r.action != "ok"]
    assert [(r.kind, r.owner) for r in changed] == [("ec2 ingress rules", "apply")]
    assert sorted(log.mutating()) == ["AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress"]
    state = snapshot(session(), eks)
    assert state["security_groups"]["airflow-gitops-dags-mount-targets"] == [
        ("tcp", 2049, 2049, ("eks-cluster-sg-data-platform",))
    ]


def test_apply_creates_what_the_mode_needs(aws, tmp_path):
    """s3-sync with its own image: the bucket is locked down, the role trusts the cluster."""
    stack = stack_for("s3-sync", "own-image")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    converge("bootstrap", stack, root, _instrumented(EksExtras()))
    state = snapshot(session())
    bucket = state["buckets"][stack["dags"]["bucket"]]
    assert bucket["pab"] == dict.fromkeys(
        ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"], True
    )
    assert bucket["versioning"] == "Enabled"
    assert "aws:SecureTransport" in bucket["policy"]
    assert (
        bucket["encryption"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        == "AES256"
    )
    repo = state["ecr"]["airflow-gitops/s3-sync"]
    assert repo["mutability"] == "IMMUTABLE" and repo["scan"] is True
    assert "imageCountMoreThan" in repo["lifecycle"]
    issuer = (
        session()
        .client("eks")
        .describe_cluster(name=CLUSTER)["cluster"]["identity"]["oidc"]["issuer"]
        .removeprefix("https://")
    )
    trust = state["roles"]["airflow-gitops-dag-reader"]["trust"]
    statement = trust["Statement"][0]
    assert statement["Principal"]["Federated"].endswith(f":oidc-provider/{issuer}")
    assert statement["Condition"]["StringEquals"] == {
        f"{issuer}:sub": [
            "system:serviceaccount:airflow:airflow-dag-reader",
            "system:serviceaccount:airflow:airflow-dag-parser",
        ],
        f"{issuer}:aud": "sts.amazonaws.com",
    }
    assert state["roles"]["airflow-gitops-ebs-csi-driver"]["attached"] == [
        "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
    ]
    assert "EKS_OIDC_ISSUER" not in str(state)
    # The DAG reader also runs tasks: it writes task logs and reads connections (issue 15).
    assert state["roles"]["airflow-gitops-dag-reader"]["attached"] == sorted(
        f"arn:aws:iam::123456789012:policy/airflow-gitops-{name}"
        for name in ("dag-read-policy", "task-log-write-policy", "secrets-read-policy")
    )
    assert [arn for arn, audiences in state["oidc"]] == [
        f"arn:aws:iam::123456789012:oidc-provider/{issuer}",
        "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com",
    ]


def test_efs_mode_one_mount_target_per_zone_and_nfs_from_cluster(aws, tmp_path):
    stack = stack_for("efs")
    root = make_repo(tmp_path, stack)
    create_cluster(session())  # three subnets: two in eu-west-1a, one in eu-west-1b
    eks = EksExtras()
    converge("bootstrap", stack, root, _instrumented(eks))
    state = snapshot(session(), eks)
    [fs] = state["efs"]
    assert fs["encrypted"] and fs["token"] == "airflow-gitops-dags"
    group = "airflow-gitops-dags-mount-targets"
    assert fs["mount_targets"] == [("eu-west-1a", (group,)), ("eu-west-1b", (group,))]
    assert state["security_groups"][group] == [
        ("tcp", 2049, 2049, ("eks-cluster-sg-data-platform",))
    ]
    roles = {a["addonName"]: a["serviceAccountRoleArn"] for a in eks.addons.values()}
    assert roles == {
        "aws-efs-csi-driver": "arn:aws:iam::123456789012:role/airflow-gitops-efs-csi-driver",
        "aws-ebs-csi-driver": "arn:aws:iam::123456789012:role/airflow-gitops-ebs-csi-driver",
    }


def _instrumented(eks):
    target = session()
    instrument(target, eks)
    return target


def test_bootstrap_trusts_each_workflow_on_the_deploy_branch_only(aws, tmp_path):
    stack = stack_for("s3-sync", "own-image", oidc_subject="immutable")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()
    converge("bootstrap", stack, root, _instrumented(eks))
    state = snapshot(session(), eks)
    assert (
        "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com",
        ["sts.amazonaws.com"],
    ) in state["oidc"]
    subjects = {
        name: role["trust"]["Statement"][0]["Condition"]["StringEquals"][
            "token.actions.githubusercontent.com:sub"
        ]
        for name, role in state["roles"].items()
        if "token.actions" in json.dumps(role["trust"])
    }
    repo = "repo:example-org@1001/airflow-gitops@2002"
    flow = "job_workflow_ref:example-org/airflow-gitops/.github/workflows"
    assert subjects == {
        "airflow-gitops-deploy": f"{repo}:environment:production:{flow}/deploy.yml@refs/heads/main",
        "airflow-gitops-sync-dags": f"{repo}:environment:production:{flow}/sync-dags.yml@refs/heads/main",
        "airflow-gitops-build-sync-image": f"{repo}:environment:production:{flow}/build-sync-image.yml@refs/heads/main",
        "airflow-gitops-build-airflow-image": f"{repo}:environment:production:{flow}/build-airflow-image.yml@refs/heads/main",
        "airflow-gitops-drift-check": f"{repo}:ref:refs/heads/main:{flow}/drift-check.yml@refs/heads/main",
    }
    assert state["roles"]["airflow-gitops-deploy"]["attached"] == [
        "arn:aws:iam::123456789012:policy/airflow-gitops-deploy-role-policy",
        "arn:aws:iam::123456789012:policy/airflow-gitops-read-state-policy",
    ]
    assert state["roles"]["airflow-gitops-drift-check"]["attached"] == [
        "arn:aws:iam::123456789012:policy/airflow-gitops-read-state-policy"
    ]
    [policy] = eks.policies[
        (CLUSTER, "arn:aws:iam::123456789012:role/airflow-gitops-deploy")
    ].values()
    assert policy["accessScope"] == {"type": "namespace", "namespaces": ["airflow"]}
    assert policy["policyArn"].endswith("cluster-access-policy/AmazonEKSAdminPolicy")
    # the group k8s/deploy-extensions-rbac.yaml binds; no other CI role's entry has one
    deploy_entry = eks.entries[(CLUSTER, "arn:aws:iam::123456789012:role/airflow-gitops-deploy")]
    assert deploy_entry["kubernetesGroups"] == [stack["eks"]["deploy_kubernetes_group"]]
    assert [e["kubernetesGroups"] for e in eks.entries.values() if e is not deploy_entry] == [
        []
    ] * (len(eks.entries) - 1)
    again = converge("bootstrap", stack, root, _instrumented(eks))
    assert {r.action for r in again if not r.kind.startswith("github")} == {"ok"}
    # a group added by hand is drift that bootstrap takes back
    deploy_entry["kubernetesGroups"].append("cluster-admins")
    drift = converge("bootstrap", stack, root, _instrumented(eks))
    assert [(r.kind, r.action) for r in drift if r.action not in ("ok", "manual")] == [
        ("eks access entry", "update")
    ]
    assert deploy_entry["kubernetesGroups"] == [stack["eks"]["deploy_kubernetes_group"]]


def test_efs_sync_role_may_only_edit_the_namespace(aws, tmp_path):
    stack = stack_for("efs")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()
    converge("bootstrap", stack, root, _instrumented(eks))
    [policy] = eks.policies[
        (CLUSTER, "arn:aws:iam::123456789012:role/airflow-gitops-sync-dags")
    ].values()
    assert policy == {
        "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy",
        "accessScope": {"type": "namespace", "namespaces": ["airflow"]},
    }


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
    eks = EksExtras()
    converge("bootstrap", stack, root, _instrumented(eks))
    iam = session().client("iam")
    arn = "arn:aws:iam::123456789012:policy/airflow-gitops-dag-read-policy"
    document = json.loads((root / "iam" / "dag-read-policy.json").read_text())
    for n in range(4):  # fill up to IAM's limit of five versions, v1 stays default
        document["Statement"][0]["Sid"] = f"Filler{n}"
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(document))
    document["Statement"][0]["Sid"] = "Changed"
    (root / "iam" / "dag-read-policy.json").write_text(json.dumps(document))

    planned = converge("plan", stack, root, _instrumented(eks))
    [line] = [r for r in planned if r.kind == "iam policy" and r.action != "ok"]
    assert line.action == "update" and "delete oldest version v2" in line.details[0]
    assert '+    "Sid": "Changed"' in line.diff
    converge("bootstrap", stack, root, _instrumented(eks))
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert len(versions) == 5
    assert "v2" not in {v["VersionId"] for v in versions}
    default = [v for v in versions if v["IsDefaultVersion"]][0]
    assert (
        iam.get_policy_version(PolicyArn=arn, VersionId=default["VersionId"])["PolicyVersion"][
            "Document"
        ]["Statement"][0]["Sid"]
        == "Changed"
    )
    assert {r.action for r in converge("plan", stack, root, _instrumented(eks))} == {"ok"}


def test_aws_endpoint_url_is_honoured_natively(aws):
    """boto3 1.44 reads AWS_ENDPOINT_URL itself: no endpoint_url in the toolkit's code."""
    from airflow_gitops.aws.session import AwsContext

    ctx = AwsContext(stack_for(), ".", session(), dry_run=True)
    for service in ("s3", "iam", "eks", "efs", "ec2", "ecr", "sts"):
        assert ctx.client(service).meta.endpoint_url == aws.endpoint
    assert ctx.client("iam").meta.config.retries["mode"] == "standard"


# --- drift: plan sees every change made behind the tool's back, as a diff ------------------


def removed(diff: list[str], text: str) -> bool:
    return any(line.startswith("-") and text in line for line in diff[2:])


def added(diff: list[str], text: str) -> bool:
    return any(line.startswith("+") and text in line for line in diff[2:])


def _drift_plan(stack, root, eks):
    results = converge("plan", stack, root, _instrumented(eks))
    return [r for r in results if r.changes]


def _bootstrapped(tmp_path, source="s3-bundle"):
    stack = stack_for(source)
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()
    converge("bootstrap", stack, root, _instrumented(eks))
    return stack, root, eks


def _repaired(stack, root, eks):
    """bootstrap puts it back, and then plan is clean."""
    converge("bootstrap", stack, root, _instrumented(eks))
    assert _drift_plan(stack, root, eks) == []


def test_drift_extra_managed_policy_on_a_role(aws, tmp_path):
    stack, root, eks = _bootstrapped(tmp_path)
    iam = session().client("iam")
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    iam.attach_role_policy(RoleName="airflow-gitops-dag-reader", PolicyArn=admin)
    [drift] = _drift_plan(stack, root, eks)
    assert (drift.kind, drift.name, drift.owner) == (
        "iam role",
        "airflow-gitops-dag-reader",
        "bootstrap",
    )
    assert drift.details == ["detach AdministratorAccess (not ours)"]
    assert removed(drift.diff, admin)
    _repaired(stack, root, eks)


def test_drift_inline_policy_on_the_deploy_role(aws, tmp_path):
    stack, root, eks = _bootstrapped(tmp_path)
    session().client("iam").put_role_policy(
        RoleName="airflow-gitops-deploy",
        PolicyName="oops",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}],
            }
        ),
    )
    [drift] = _drift_plan(stack, root, eks)
    assert drift.details == ["delete inline policy oops (not ours)"]
    assert removed(drift.diff, '"Action": "iam:*"')
    _repaired(stack, root, eks)


def test_drift_widened_trust(aws, tmp_path):
    stack, root, eks = _bootstrapped(tmp_path)
    iam = session().client("iam")
    trust = iam.get_role(RoleName="airflow-gitops-deploy")["Role"]["AssumeRolePolicyDocument"]
    trust["Statement"][0]["Condition"]["StringLike"] = trust["Statement"][0]["Condition"].pop(
        "StringEquals"
    )
    trust["Statement"][0]["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"] = (
        "repo:example-org/*"
    )
    iam.update_assume_role_policy(
        RoleName="airflow-gitops-deploy", PolicyDocument=json.dumps(trust)
    )
    [drift] = _drift_plan(stack, root, eks)
    assert drift.details == ["trust from iam/deploy-role-trust.json"]
    assert removed(drift.diff, '"StringLike"') and added(drift.diff, '"StringEquals"')
    _repaired(stack, root, eks)


def test_drift_extra_bucket_policy_statement(aws, tmp_path):
    stack, root, eks = _bootstrapped(tmp_path)
    bucket = stack["dags"]["bucket"]
    s3 = session().client("s3")
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    policy["Statement"].append(
        {
            "Sid": "CrossAccount",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
    )
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    [drift] = _drift_plan(stack, root, eks)
    assert (drift.kind, drift.details) == ("s3 bucket", ["TLS-only bucket policy"])
    assert any("CrossAccount" in line and line.startswith("-") for line in drift.diff)
    _repaired(stack, root, eks)


def test_drift_open_rule_on_the_mount_target_group_is_revoked_by_apply(aws, tmp_path):
    stack, root, eks = _bootstrapped(tmp_path, "efs")
    ec2 = session().client("ec2")
    [group] = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["airflow-gitops-dags-mount-targets"]}]
    )["SecurityGroups"]
    ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    [drift] = _drift_plan(stack, root, eks)
    assert (drift.kind, drift.owner) == ("ec2 ingress rules", "apply")
    assert drift.details == ["revoke -1 None from 0.0.0.0/0 (not ours)"]
    assert removed(drift.diff, "-1 None from 0.0.0.0/0")
    from airflow_gitops.aws.command import summary

    assert summary("plan", [drift]).endswith("; run `make apply`.")
    converge("apply", stack, root, _instrumented(eks))
    assert _drift_plan(stack, root, eks) == []


def test_drift_exit_code_and_diff_through_the_cli_printer(aws, tmp_path, capsys):
    import argparse

    from airflow_gitops.aws.command import run as run_command

    stack, root, eks = _bootstrapped(tmp_path)
    session().client("iam").attach_role_policy(
        RoleName="airflow-gitops-drift-check",
        PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess",
    )
    code = run_command(
        argparse.Namespace(command="plan", json=False, bootstrap=False), _instrumented(eks), root
    )
    out = capsys.readouterr().out
    assert code == 2
    assert (
        "update iam role              airflow-gitops-drift-check  (detach "
        "AdministratorAccess (not ours))" in out
    )
    assert any(
        line.startswith("         -") and "AdministratorAccess" in line for line in out.splitlines()
    )
    assert out.splitlines()[-1].endswith("run `make bootstrap` (as an admin).")


# --- EKS Pod Identity instead of IRSA -----------------------------------------------------


def test_pod_identity_agent_and_associations_instead_of_an_oidc_provider(aws, tmp_path):
    stack = stack_for("s3-bundle", pod_credentials="pod-identity")
    root = make_repo(tmp_path, stack)
    create_cluster(session())
    eks = EksExtras()
    results = converge("bootstrap", stack, root, _instrumented(eks))
    kinds = [r.kind for r in results if not r.kind.startswith("github")]
    assert kinds.count("iam oidc provider") == 1  # GitHub's only; no cluster issuer needed
    # one association per ServiceAccount that takes a role (readers, API server, CSI drivers)
    assert kinds.count("eks pod identity") == len(pod_roles(stack))
    state = snapshot(session(), eks)
    assert [arn for arn, _ in state["oidc"]] == [
        "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    ]
    role = "arn:aws:iam::123456789012:role/airflow-gitops-"
    assert state["eks"]["pod_identities"] == [
        ("airflow", "airflow-api-server", role + "api-server"),  # task logs (read), secrets
        ("airflow", "airflow-dag-parser", role + "dag-reader"),
        ("airflow", "airflow-dag-reader", role + "dag-reader"),
        ("kube-system", "ebs-csi-controller-sa", role + "ebs-csi-driver"),
    ]
    addons = {a["addonName"]: a["serviceAccountRoleArn"] for a in eks.addons.values()}
    assert addons == {"eks-pod-identity-agent": None, "aws-ebs-csi-driver": None}
    trust = state["roles"]["airflow-gitops-dag-reader"]["trust"]["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    again = converge("apply", stack, root, _instrumented(eks))
    assert {r.action for r in again} == {"ok"}

    # Someone points the reader's association at another role: plan shows it, bootstrap fixes it.
    [reader] = [
        a for a in eks.pod_identities.values() if a["serviceAccount"] == "airflow-dag-reader"
    ]
    reader["roleArn"] = "arn:aws:iam::123456789012:role/admin"
    [drift] = _drift_plan(stack, root, eks)
    assert (drift.kind, drift.name) == ("eks pod identity", "airflow/airflow-dag-reader")
    assert removed(drift.diff, "role/admin") and added(drift.diff, "role/airflow-gitops-dag-reader")
    _repaired(stack, root, eks)

    converge("destroy", stack, root, _instrumented(eks))
    assert eks.pod_identities == {} and eks.addons == {}

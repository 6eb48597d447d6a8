"""iam/deploy-role-policy.json grants exactly what `apply` and the deploy workflows call.

This repo's own stack.yaml and iam/ are used (so each baked mode checks its own policy). The
operations are recorded while `apply` creates everything, runs again, `plan`s, and then repairs
every kind of drift it handles; each operation maps to IAM actions (airflow_gitops.aws.
iam_actions), and each call's resource ARN, built from its parameters, must be allowed by a
statement that grants the action. IAM conditions are written down in the policy but not
evaluated here: moto does not enforce IAM, and neither does this test.
"""

from __future__ import annotations

import json
import shutil
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from aws_testkit import (
    EksExtras,
    create_cluster,
    instrument,
    moto,  # noqa: F401  (fixture)
    session,
)

from airflow_gitops.aws.command import converge
from airflow_gitops.aws.iam_actions import iam_actions
from airflow_gitops.local_aws import aws_env
from airflow_gitops.stack import load_stack

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "iam" / "deploy-role-policy.json"

# Reached only on drift that moto cannot produce or serve; their request shapes are tested with
# the Stubber in test_aws_stubbed.py.
NOT_IN_MOTO = {("iam", "AddClientIDToOpenIDConnectProvider"), ("efs", "UpdateFileSystem")}

# Resource "*" is allowed only for actions that have no resource-level permissions.


def workflow_calls(stack: dict) -> list[tuple[str, str]]:
    """(IAM action, resource) the deploy workflows need beyond `apply`."""
    region, account = stack["aws"]["region"], stack["aws"]["account_id"]
    source = stack["dags"]["source"]
    calls = [("eks:DescribeCluster",  # aws eks update-kubeconfig before helm
              f"arn:aws:eks:{region}:{account}:cluster/{stack['eks']['cluster_name']}")]
    if source in ("s3-sync", "s3-bundle"):  # push-dags: ListObjectsV2, PutObject, DeleteObjects
        bucket = f"arn:aws:s3:::{stack['dags']['bucket']}"
        key = f"{bucket}/{stack['dags']['prefix'].strip('/')}/example_dag.py"
        calls += [("s3:ListBucket", bucket), ("s3:PutObject", key), ("s3:DeleteObject", key)]
    if source == "s3-sync" and stack["dags"].get("sync_image") == "own-image":
        repo = (f"arn:aws:ecr:{region}:{account}:repository/"
                f"{stack['images']['s3_sync_repository']}")
        calls.append(("ecr:GetAuthorizationToken", "*"))
        calls += [(f"ecr:{op}", repo) for op in (
            "BatchCheckLayerAvailability", "InitiateLayerUpload", "UploadLayerPart",
            "CompleteLayerUpload", "PutImage", "BatchGetImage", "DescribeImages")]
    if source == "efs":  # render: the file system id for the StorageClass
        calls.append(("elasticfilesystem:DescribeFileSystems",
                      f"arn:aws:elasticfilesystem:{region}:{account}:file-system/*"))
    return calls


def resource_of(stack: dict, service: str, operation: str, params: dict) -> str:
    """The ARN IAM authorises ``operation`` against, from its parameters."""
    region, account = stack["aws"]["region"], stack["aws"]["account_id"]
    arn = f"arn:aws:{{}}:{region}:{account}:{{}}".format
    if service == "sts" or (service == "ec2" and operation.startswith("Describe")):
        return "*"
    if service == "s3":
        return f"arn:aws:s3:::{params['Bucket']}"
    if service == "iam":
        if "RoleName" in params:  # AttachRolePolicy too: the role is the resource
            return f"arn:aws:iam::{account}:role/{params['RoleName']}"
        for key in ("PolicyArn", "OpenIDConnectProviderArn"):
            if key in params:
                return params[key]
        if operation == "CreatePolicy":
            return f"arn:aws:iam::{account}:policy/{params['PolicyName']}"
        if operation == "CreateOpenIDConnectProvider":
            return f"arn:aws:iam::{account}:oidc-provider/{params['Url'].removeprefix('https://')}"
        return f"arn:aws:iam::{account}:role/{params['RoleName']}"
    if service == "eks":
        if operation in ("DescribeCluster", "CreateAddon"):
            return arn("eks", f"cluster/{params.get('name') or params['clusterName']}")
        return arn("eks", f"addon/{params['clusterName']}/{params['addonName']}/uuid")
    if service == "ecr":
        name = params.get("repositoryName") or params["repositoryNames"][0]
        return arn("ecr", f"repository/{name}")
    if service == "efs":
        return arn("elasticfilesystem", f"file-system/{params.get('FileSystemId', '*')}")
    if service == "ec2":
        return arn("ec2", f"security-group/{params.get('GroupId', 'sg-new')}")
    raise AssertionError(f"no resource rule for {service}:{operation}")


def allowed(policy: dict, action: str, resource: str) -> bool:
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) \
            else [statement["Resource"]]
        if statement["Effect"] == "Allow" and action in actions and any(
                fnmatchcase(resource, pattern) for pattern in resources):
            return True
    return False


def policy_actions(policy: dict) -> set[str]:
    out = set()
    for statement in policy["Statement"]:
        out |= set(statement["Action"] if isinstance(statement["Action"], list)
                   else [statement["Action"]])
    return out


def drift(target, stack: dict, root: Path, eks: EksExtras) -> None:
    """Undo, behind the toolkit's back, every setting `apply` repairs in this mode."""
    source = stack["dags"]["source"]
    account = stack["aws"]["account_id"]
    iam = target.client("iam")
    if source in ("s3-sync", "s3-bundle"):
        bucket = stack["dags"]["bucket"]
        s3 = target.client("s3")
        s3.delete_public_access_block(Bucket=bucket)
        s3.delete_bucket_encryption(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
        s3.delete_bucket_policy(Bucket=bucket)
        role, policy_file = stack["dags"]["reader_role"], "dag-read-policy.json"
    elif source == "efs":
        role, policy_file = stack["dags"]["efs"]["csi_driver_role"], "efs-csi-driver-policy.json"
        efs, ec2 = target.client("efs"), target.client("ec2")
        fs = efs.describe_file_systems(
            CreationToken=stack["dags"]["efs"]["creation_token"])["FileSystems"][0]
        target_ids = [t["MountTargetId"] for t in efs.describe_mount_targets(
            FileSystemId=fs["FileSystemId"])["MountTargets"]]
        default = ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]
        efs.modify_mount_target_security_groups(MountTargetId=target_ids[0],
                                                SecurityGroups=[default["GroupId"]])
        for addon in eks.addons.values():
            addon["serviceAccountRoleArn"] = f"arn:aws:iam::{account}:role/someone-else"
    else:
        return
    if source == "s3-sync" and stack["dags"].get("sync_image") == "own-image":
        ecr = target.client("ecr")
        name = stack["images"]["s3_sync_repository"]
        ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")
        ecr.put_image_scanning_configuration(repositoryName=name,
                                             imageScanningConfiguration={"scanOnPush": False})
        ecr.delete_lifecycle_policy(repositoryName=name)
    policy_arn = f"arn:aws:iam::{account}:policy/{stack['project']}-{policy_file[:-5]}"
    iam.detach_role_policy(RoleName=role, PolicyArn=policy_arn)
    iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": {"AWS": "*"},
                                                "Action": "sts:AssumeRole"}]}))
    path = root / "iam" / policy_file
    document = json.loads(path.read_text())
    for n in range(4):  # up to IAM's five versions, so the next change prunes one
        document["Statement"][0]["Sid"] = f"Drift{n}"
        iam.create_policy_version(PolicyArn=policy_arn, PolicyDocument=json.dumps(document))
    document["Statement"][0]["Sid"] = "Changed"
    path.write_text(json.dumps(document))


@pytest.fixture(scope="module")
def recorded(moto, tmp_path_factory):
    """(stack, policy, calls): every AWS call of apply x2, plan, and apply after drift."""
    moto.reset()
    with aws_env(moto, load_stack(REPO)["aws"]["region"]):
        yield record(tmp_path_factory.mktemp("repo"))


def record(root: Path):
    stack = load_stack(REPO)
    (root / "iam").mkdir(parents=True)
    shutil.copy(REPO / "stack.yaml", root / "stack.yaml")
    for document in (REPO / "iam").glob("*.json"):
        shutil.copy(document, root / "iam" / document.name)
    account, region = stack["aws"]["account_id"], stack["aws"]["region"]
    create_cluster(session(account, region), stack["eks"]["cluster_name"])
    eks = EksExtras()
    target = session(account, region)
    log = instrument(target, eks)
    for command in ("apply", "apply", "plan"):
        converge(command, stack, root, target)
    drift(session(account, region), stack, root, eks)
    results = converge("apply", stack, root, target)
    if stack["dags"]["source"] not in ("git-sync", "git-bundle"):
        assert {r.action for r in results} >= {"update"}
    assert {r.action for r in converge("plan", stack, root, target)} == {"ok"} or not results
    return stack, json.loads(POLICY.read_text()), log.calls


def test_policy_grants_exactly_the_actions_apply_and_workflows_use(recorded):
    stack, policy, calls = recorded
    used = {action for service, operation, _ in calls for action in iam_actions(service, operation)}
    needed = {action for action, _ in workflow_calls(stack)}
    if stack["dags"]["source"] == "efs":
        needed |= {a for s, o in NOT_IN_MOTO if s == "efs" for a in iam_actions(s, o)}
    if stack["dags"]["source"] in ("s3-sync", "s3-bundle", "efs"):
        needed |= set(iam_actions("iam", "AddClientIDToOpenIDConnectProvider"))
    granted = policy_actions(policy)
    assert granted - (used | needed) == set(), "granted but never used"
    assert (used | needed) - granted == set(), "used but not granted"


def test_every_call_is_allowed_on_its_own_resource(recorded):
    stack, policy, calls = recorded
    denied = []
    for service, operation, params in calls:
        action = iam_actions(service, operation)[0]
        resource = resource_of(stack, service, operation, params)
        if not allowed(policy, action, resource):
            denied.append((action, resource))
    for action, resource in workflow_calls(stack):
        if not allowed(policy, action, resource):
            denied.append((action, resource))
    assert denied == []


def test_roles_can_only_get_their_own_policy_attached(recorded):
    """The one condition that matters most (it stops the deploy role attaching, say,
    AdministratorAccess to a role it manages) is checked against the calls made."""
    _, policy, calls = recorded
    [statement] = [s for s in policy["Statement"] if s["Action"] == "iam:AttachRolePolicy"] \
        or [None]
    attached = [params["PolicyArn"] for _, op, params in calls if op == "AttachRolePolicy"]
    if statement is None:
        assert attached == []
        return
    assert attached and set(attached) == {statement["Condition"]["ArnEquals"]["iam:PolicyARN"]}


def test_no_wildcards_beyond_what_aws_requires():
    from airflow_gitops.validate.rules.iam_reference import star_is_required

    policy = json.loads(POLICY.read_text())
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        assert not any("*" in action for action in actions), statement["Sid"]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) \
            else [statement["Resource"]]
        if "*" in resources:
            # "*" only for actions that take no resource type (AWS's Service Authorization
            # Reference, the data `validate` checks with).
            assert all(star_is_required(action) for action in actions), statement["Sid"]
        assert statement["Effect"] == "Allow"

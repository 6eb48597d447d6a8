"""Each workflow job runs with only its own role's permissions: a replay test.

This repo's own stack.yaml and iam/ are used, so each baked mode checks its own documents.
An admin's `bootstrap` writes every role into moto; then, per CI job, the commands the job runs
(read from .github/workflows: ``JOB_COMMANDS`` must cover every ``run:`` after the job's AWS
credentials step) are replayed against moto on an instrumented session: the toolkit's own
commands for real, the AWS CLI lines as the same API calls through boto3. Every call becomes
the authorisations AWS makes for it (``requests_of``: action, resource ARN, condition context;
a call can need several), and each must be allowed by the policies attached to that job's role
*as bootstrap wrote them into IAM* (tests/iam_eval.py). And the other way round: every action
a role is granted is used by one of its job's calls, save the few listed with the reason they
cannot be recorded here.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from airflow_gitops.aws.command import ConvergeError, converge
from airflow_gitops.aws.resources import ci_roles
from airflow_gitops.ci_facts import ci_facts
from airflow_gitops.local_aws import aws_env
from airflow_gitops.stack import load_stack
from aws_testkit import (
    EksExtras,
    create_cluster,
    instrument,
    session,
)
from iam_eval import Request, allowed, granted_actions

from repos import REPO  # the default bake

WORKFLOWS = REPO / ".github" / "workflows"
TAG_KEY = "airflow-gitops/project"

# The run: lines of each job after its credentials step -> what they call in AWS. A line not
# listed here fails test_every_aws_command_of_a_job_is_replayed.
JOB_COMMANDS = {
    r"^make apply\b": "apply",
    r"^aws eks update-kubeconfig\b": "kubeconfig",
    r"^make render\b": "render",
    r"aws ecr describe-images": "check-image",
    r"aws ecr get-login-password": "registry-login",
    r"^make push-dags\b": "push-dags",
    r"^python -m airflow_gitops plan --bootstrap": "plan-bootstrap",
    # Kubernetes only: RBAC through the role's EKS access entry; the kubeconfig's token is a
    # presigned sts:GetCallerIdentity, which needs no IAM permission.
    r"^for manifest in build/k8s": None,
    r"^python -m airflow_gitops ensure-secrets": None,
    r"^python -m airflow_gitops deploy-chart": None,  # kubectl delete job, then helm upgrade
    r"^make efs-publish": None,
    r"^\{": None,  # the job summary
}

# Granted but not recorded against moto, with the reason.
NOT_RECORDED = {
    # UpdateFileSystem: only when the throughput mode changes, moto lacks it (Stubber test).
    # TagResource: tags given to CreateFileSystem are authorised as TagResource too.
    "elasticfilesystem:UpdateFileSystem",
    "elasticfilesystem:TagResource",
    # docker push speaks the registry API, which moto does not have; these are the actions AWS
    # documents for it (ECR user guide, "pushing an image"), on the repository.
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
}


def runs_here(condition: str | None, facts: dict) -> bool:
    """A step's ``if:`` on ci-facts outputs (``steps.facts.outputs.X == 'v'`` or ``!=``)."""
    if not condition or condition.strip() == "always()":
        return True
    if condition.strip() == "failure()":
        return False
    match = re.fullmatch(r"steps\.facts\.outputs\.(\w+) (==|!=) '([^']*)'", condition.strip())
    assert match, f"cannot read if: {condition}"
    name, op, value = match.groups()
    return (facts[name] == value) == (op == "==")


def job_steps(workflow: str, job: str, facts: dict | None = None) -> list[str]:
    """The run: blocks of ``job`` after its configure-aws-credentials step (those whose if:
    holds for ``facts``; all of them without facts)."""
    steps = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"][job]["steps"]
    index = next(
        i for i, s in enumerate(steps) if "configure-aws-credentials" in str(s.get("uses", ""))
    )
    return [
        s["run"].strip()
        for s in steps[index + 1 :]
        if "run" in s and (facts is None or runs_here(s.get("if"), facts))
    ]


def replayed(run: str) -> list[str]:
    names = [
        name for pattern, name in JOB_COMMANDS.items() if re.search(pattern, run, re.MULTILINE)
    ]
    assert names or any(re.search(p, run) for p, n in JOB_COMMANDS.items() if n is None), (
        f"no replay for this run: block:\n{run}"
    )
    return [n for n in names if n]


JOBS = {
    "deploy_role": ("deploy.yml", "deploy"),
    "sync_dags_role": ("sync-dags.yml", "sync"),
    "build_sync_image_role": ("build-sync-image.yml", "publish"),
    "build_airflow_image_role": ("build-airflow-image.yml", "publish"),
    "drift_check_role": ("drift-check.yml", "plan"),
}


# --- from a call to what AWS authorises ----------------------------------------------------


class Requests:
    """Turns recorded calls into Requests, reading what the context needs (tags, VPCs) from
    moto with an observer session."""

    def __init__(self, stack: dict) -> None:
        self.stack = stack
        self.region, self.account = stack["aws"]["region"], stack["aws"]["account_id"]
        self.observer = session(self.account, self.region)

    def arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account}:{resource}"

    def group(self, group_id: str) -> dict:
        [group] = self.observer.client("ec2").describe_security_groups(GroupIds=[group_id])[
            "SecurityGroups"
        ]
        return group

    def vpc_of_subnet(self, subnet: str) -> str:
        [found] = self.observer.client("ec2").describe_subnets(SubnetIds=[subnet])["Subnets"]
        return found["VpcId"]

    def fs_tags(self, fs_id: str) -> dict:
        [fs] = self.observer.client("efs").describe_file_systems(FileSystemId=fs_id)["FileSystems"]
        return {f"aws:ResourceTag/{t['Key']}": t["Value"] for t in fs.get("Tags", [])}

    def fs_of_mount_target(self, target: str) -> str:
        efs = self.observer.client("efs")
        for fs in efs.describe_file_systems()["FileSystems"]:
            for mt in efs.describe_mount_targets(FileSystemId=fs["FileSystemId"])["MountTargets"]:
                if mt["MountTargetId"] == target:
                    return fs["FileSystemId"]
        raise AssertionError(target)

    def of(self, service: str, op: str, params: dict, response_ids: dict) -> list[Request]:
        """The authorisations of one call (``response_ids``: ids it created, when needed)."""
        arn = self.arn
        if service == "sts":
            return [Request(f"sts:{op}", "*")]
        if service == "s3":
            bucket = f"arn:aws:s3:::{params['Bucket']}"
            if op in ("HeadBucket",):
                return [Request("s3:ListBucket", bucket)]
            if op == "ListObjectsV2":
                context = {"s3:prefix": params["Prefix"]} if "Prefix" in params else {}
                if "Delimiter" in params:
                    context["s3:delimiter"] = params["Delimiter"]
                return [Request("s3:ListBucket", bucket, context)]
            if op in ("PutObject", "GetObject", "HeadObject", "DeleteObject"):
                action = {"HeadObject": "GetObject"}.get(op, op)
                return [Request(f"s3:{action}", f"{bucket}/{params['Key']}")]
            if op == "DeleteObjects":
                return [
                    Request("s3:DeleteObject", f"{bucket}/{o['Key']}")
                    for o in params["Delete"]["Objects"]
                ]
            action = {
                "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
                "GetBucketEncryption": "GetEncryptionConfiguration",
                "GetBucketLifecycleConfiguration": "GetLifecycleConfiguration",
                "PutBucketLifecycleConfiguration": "PutLifecycleConfiguration",
            }.get(op, op)
            return [Request(f"s3:{action}", bucket)]
        if service == "iam":
            if "RoleName" in params:
                return [
                    Request(f"iam:{op}", f"arn:aws:iam::{self.account}:role/{params['RoleName']}")
                ]
            for key in ("PolicyArn", "OpenIDConnectProviderArn"):
                if key in params:
                    return [Request(f"iam:{op}", params[key])]
            raise AssertionError(f"iam:{op} {params}")
        if service == "eks":
            cluster = params.get("clusterName") or params.get("name")
            if op == "DescribeCluster":
                return [Request("eks:DescribeCluster", arn("eks", f"cluster/{cluster}"))]
            if op in ("DescribeAccessEntry", "ListAssociatedAccessPolicies"):
                role = params["principalArn"].rsplit("/", 1)[1]
                return [
                    Request(
                        f"eks:{op}",
                        arn("eks", f"access-entry/{cluster}/role/{self.account}/{role}/uuid"),
                    )
                ]
            if op == "ListPodIdentityAssociations":
                return [Request(f"eks:{op}", arn("eks", f"cluster/{cluster}"))]
            if op == "DescribePodIdentityAssociation":
                return [
                    Request(
                        f"eks:{op}",
                        arn("eks", f"podidentityassociation/{cluster}/{params['associationId']}"),
                    )
                ]
            if op == "DescribeAddon":
                return [
                    Request(
                        "eks:DescribeAddon",
                        arn("eks", f"addon/{cluster}/{params['addonName']}/uuid"),
                    )
                ]
            raise AssertionError(f"eks:{op}")
        if service == "ecr":
            if op == "GetAuthorizationToken":
                return [Request("ecr:GetAuthorizationToken", "*")]
            name = params.get("repositoryName") or params["repositoryNames"][0]
            return [Request(f"ecr:{op}", arn("ecr", f"repository/{name}"))]
        if service == "efs":
            return self.efs(op, params, response_ids)
        if service == "ec2":
            return self.ec2(op, params, response_ids)
        if service == "cloudwatch":
            return self.cloudwatch(op, params)
        raise AssertionError(f"{service}:{op}")

    def cloudwatch(self, op: str, params: dict) -> list[Request]:
        """Dashboards are global (no region in their ARN); alarms are authorised one by one."""
        if op in ("GetDashboard", "PutDashboard"):
            name = params["DashboardName"]
            return [Request(f"cloudwatch:{op}", self.arn("cloudwatch", f"dashboard/{name}", False))]
        if op == "DescribeAlarms":
            return [
                Request("cloudwatch:DescribeAlarms", self.arn("cloudwatch", f"alarm:{name}"))
                for name in params["AlarmNames"]
            ]
        if op == "PutMetricAlarm":
            context = {"cloudwatch:AlarmActions": params.get("AlarmActions", [])}
            resource = self.arn("cloudwatch", f"alarm:{params['AlarmName']}")
            return [Request("cloudwatch:PutMetricAlarm", resource, context)]
        raise AssertionError(f"cloudwatch:{op}")

    def efs(self, op: str, params: dict, ids: dict) -> list[Request]:
        def fs(fs_id: str) -> str:
            return self.arn("elasticfilesystem", f"file-system/{fs_id}")

        if op == "CreateFileSystem":
            tags = {f"aws:RequestTag/{t['Key']}": t["Value"] for t in params.get("Tags", [])}
            keys = {"aws:TagKeys": [t["Key"] for t in params.get("Tags", [])]} if tags else {}
            out = [
                Request(
                    "elasticfilesystem:CreateFileSystem",
                    "*",
                    {
                        "elasticfilesystem:Encrypted": str(params.get("Encrypted", False)).lower(),
                        **tags,
                        **keys,
                    },
                )
            ]
            if tags:
                out.append(
                    Request(
                        "elasticfilesystem:TagResource",
                        fs(ids["FileSystemId"]),
                        {"elasticfilesystem:CreateAction": "CreateFileSystem", **tags, **keys},
                    )
                )
            return out
        if op == "DescribeFileSystems":
            return [
                Request(
                    "elasticfilesystem:DescribeFileSystems", fs(params.get("FileSystemId", "*"))
                )
            ]
        if op in ("DescribeMountTargetSecurityGroups", "ModifyMountTargetSecurityGroups"):
            fs_id = self.fs_of_mount_target(params["MountTargetId"])
            out = [Request(f"elasticfilesystem:{op}", fs(fs_id), self.fs_tags(fs_id))]
            if op == "ModifyMountTargetSecurityGroups":
                vpc = self.vpc_arn()
                out += [
                    Request(
                        "ec2:ModifyNetworkInterfaceAttribute",
                        self.arn("ec2", "network-interface/eni-1"),
                        {"ec2:Vpc": vpc},
                    )
                ]
                out += [
                    Request(
                        "ec2:ModifyNetworkInterfaceAttribute",
                        self.arn("ec2", f"security-group/{g}"),
                        {"ec2:Vpc": vpc},
                    )
                    for g in params["SecurityGroups"]
                ]
            return out
        fs_id = params["FileSystemId"]
        out = [Request(f"elasticfilesystem:{op}", fs(fs_id), self.fs_tags(fs_id))]
        if op == "CreateMountTarget":
            # EFS makes the mount target's network interface with the caller's permissions.
            vpc = (
                f"arn:aws:ec2:{self.region}:{self.account}:vpc/"
                f"{self.vpc_of_subnet(params['SubnetId'])}"
            )
            out += [
                Request("ec2:DescribeSubnets", "*"),
                Request("ec2:DescribeNetworkInterfaces", "*"),
                Request("ec2:CreateNetworkInterface", self.arn("ec2", "network-interface/*")),
                Request(
                    "ec2:CreateNetworkInterface",
                    self.arn("ec2", f"subnet/{params['SubnetId']}"),
                    {"ec2:Vpc": vpc},
                ),
            ]
            out += [
                Request(
                    "ec2:CreateNetworkInterface",
                    self.arn("ec2", f"security-group/{g}"),
                    {"ec2:Vpc": vpc},
                )
                for g in params.get("SecurityGroups", [])
            ]
        return out

    def vpc_arn(self) -> str:
        cluster = self.observer.client("eks").describe_cluster(
            name=self.stack["eks"]["cluster_name"]
        )["cluster"]
        return self.arn("ec2", f"vpc/{cluster['resourcesVpcConfig']['vpcId']}")

    def ec2(self, op: str, params: dict, ids: dict) -> list[Request]:
        if op.startswith("Describe"):
            return [Request(f"ec2:{op}", "*")]
        if op == "CreateSecurityGroup":
            tags = [t for spec in params.get("TagSpecifications", []) for t in spec["Tags"]]
            context = {f"aws:RequestTag/{t['Key']}": t["Value"] for t in tags}
            if tags:
                context["aws:TagKeys"] = [t["Key"] for t in tags]
            out = [
                Request(
                    "ec2:CreateSecurityGroup",
                    self.arn("ec2", f"vpc/{params['VpcId']}"),
                    {**context, "ec2:VpcID": params["VpcId"]},
                ),
                Request(
                    "ec2:CreateSecurityGroup",
                    self.arn("ec2", f"security-group/{ids['GroupId']}"),
                    context,
                ),
            ]
            if tags:
                out.append(
                    Request(
                        "ec2:CreateTags",
                        self.arn("ec2", f"security-group/{ids['GroupId']}"),
                        {**context, "ec2:CreateAction": "CreateSecurityGroup"},
                    )
                )
            return out
        if op in ("AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress"):
            group = self.group(params["GroupId"])
            context = {f"aws:ResourceTag/{t['Key']}": t["Value"] for t in group.get("Tags", [])}
            context["ec2:Vpc"] = self.arn("ec2", f"vpc/{group['VpcId']}")
            return [
                Request(
                    f"ec2:{op}", self.arn("ec2", f"security-group/{params['GroupId']}"), context
                )
            ]
        raise AssertionError(f"ec2:{op}")


# --- the recording -------------------------------------------------------------------------


class Recorder:
    """Record the calls of one job on an instrumented session, with the ids they created."""

    def __init__(self, eks: EksExtras, account: str, region: str) -> None:
        self.target = session(account, region)
        self.log = instrument(self.target, eks)
        self.created: list[dict] = []
        self.run = ""  # the run: block being replayed
        self.target.events.register("after-call", self._ids)

    def _ids(self, parsed, model, **kwargs):
        ids = {}
        if model.name == "CreateFileSystem":
            ids["FileSystemId"] = parsed.get("FileSystemId")
        if model.name == "CreateSecurityGroup":
            ids["GroupId"] = parsed.get("GroupId")
        self.created.append(ids)

    def calls(self) -> list[tuple[str, str, dict, dict]]:
        # after-call fires once per call, in order, so ids line up with the calls.
        return [(s, o, p, ids) for (s, o, p), ids in zip(self.log.calls, self.created)]


def delete_cloudwatch_pieces(target, stack: dict) -> None:
    """As if the dashboard and alarms had never been made (apply then makes them)."""
    from airflow_gitops.aws.cloudwatch import wanted_alarms

    cloudwatch, metrics = target.client("cloudwatch"), stack["metrics"]
    cloudwatch.delete_dashboards(DashboardNames=[metrics["dashboard"]])
    names = [a["AlarmName"] for a in wanted_alarms(REPO, metrics["alarm_prefix"], stack)]
    cloudwatch.delete_alarms(AlarmNames=names)


def delete_efs_pieces(target, stack: dict) -> None:
    """As if the file system and its network had never been made (apply then makes them)."""
    efs, ec2 = target.client("efs"), target.client("ec2")
    token = stack["dags"]["efs"]["creation_token"]
    for fs in efs.describe_file_systems(CreationToken=token)["FileSystems"]:
        for mt in efs.describe_mount_targets(FileSystemId=fs["FileSystemId"])["MountTargets"]:
            efs.delete_mount_target(MountTargetId=mt["MountTargetId"])
        efs.delete_file_system(FileSystemId=fs["FileSystemId"])
    for group in ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{token}-mount-targets"]}]
    )["SecurityGroups"]:
        ec2.delete_security_group(GroupId=group["GroupId"])


def drift_efs_network(target, stack: dict) -> None:
    """What `apply` repairs: a 0.0.0.0/0 rule on the group, our group gone from a target."""
    efs, ec2 = target.client("efs"), target.client("ec2")
    token = stack["dags"]["efs"]["creation_token"]
    [group] = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{token}-mount-targets"]}]
    )["SecurityGroups"]
    ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 0,
                "ToPort": 65535,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    [fs] = efs.describe_file_systems(CreationToken=token)["FileSystems"]
    target_id = efs.describe_mount_targets(FileSystemId=fs["FileSystemId"])["MountTargets"][0][
        "MountTargetId"
    ]
    default = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]}])[
        "SecurityGroups"
    ][0]
    efs.modify_mount_target_security_groups(
        MountTargetId=target_id, SecurityGroups=[default["GroupId"]]
    )


def drift_iam(admin, stack: dict) -> None:
    """Someone widens the deploy role behind the tool's back: an inline policy, and a new
    default version of one of its policies."""
    iam = admin.client("iam")
    role = stack["aws"]["deploy_role"]
    wide = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}],
        }
    )
    iam.put_role_policy(RoleName=role, PolicyName="break-glass", PolicyDocument=wide)
    arn = f"arn:aws:iam::{stack['aws']['account_id']}:policy/{stack['project']}-read-state-policy"
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=wide, SetAsDefault=True)


def image_repository(run: str, stack: dict) -> str:
    """Which ECR repository a describe-images run: block asks about: the own Airflow image's
    (its build job builds image/Dockerfile; deploy waits for build-airflow-image.yml), else the
    s3-sync image's."""
    if re.search(r"--file image/Dockerfile|build-airflow-image\.yml", run):
        return stack["images"]["airflow_repository"]
    return stack["images"]["s3_sync_repository"]


def replay(name: str, stack: dict, root: Path, recorder: Recorder, admin, eks) -> None:
    target = recorder.target
    source = stack["dags"]["source"]
    if name == "apply":
        if stack.get("metrics", {}).get("backend") == "cloudwatch":  # first deploy makes them
            delete_cloudwatch_pieces(admin, stack)
        if source == "efs":  # first deploy makes the EFS pieces, a later one repairs them
            delete_efs_pieces(admin, stack)
            converge("apply", stack, root, target)
            drift_efs_network(admin, stack)
        converge("apply", stack, root, target)
        converge("apply", stack, root, target)
        drift_iam(admin, stack)  # apply reads it, changes nothing, says run make bootstrap
        with pytest.raises(ConvergeError, match=r"run `make bootstrap`$"):
            converge("apply", stack, root, target)
        converge("bootstrap", stack, root, admin)
    elif name == "kubeconfig":  # aws eks update-kubeconfig --name C --region R
        target.client("eks").describe_cluster(name=stack["eks"]["cluster_name"])
    elif name == "render" and source == "efs":
        from airflow_gitops.render import find_file_system_id

        find_file_system_id(stack, target)
    elif name == "check-image":
        from botocore.exceptions import ClientError

        try:  # aws ecr describe-images --repository-name R --image-ids imageTag=T
            target.client("ecr").describe_images(
                repositoryName=image_repository(recorder.run, stack),
                imageIds=[{"imageTag": "0123456789ab"}],
            )
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ImageNotFoundException"
    elif name == "registry-login":  # aws ecr get-login-password
        target.client("ecr").get_authorization_token()
    elif name == "push-dags" and source in ("s3-sync", "s3-bundle"):
        from airflow_gitops.dagsync.push import push_dags

        dags = root / "dags"
        shutil.copytree(REPO / "dags", dags)
        extra = dags / "retired_dag.py"
        extra.write_text("# removed by the next push\n")
        # moto serves plain HTTP and honours the bucket's TLS-only Deny, so the policy is set
        # aside while the job runs (the evaluator checks the role's side).
        bucket = stack["dags"]["bucket"]
        s3 = admin.client("s3")
        policy = s3.get_bucket_policy(Bucket=bucket)["Policy"]
        s3.delete_bucket_policy(Bucket=bucket)
        try:
            push_dags(dags, bucket, stack["dags"]["prefix"], session=target)
            extra.unlink()
            push_dags(
                dags, bucket, stack["dags"]["prefix"], session=target, max_delete_fraction=1.0
            )
        finally:
            s3.put_bucket_policy(Bucket=bucket, Policy=policy)
    elif name == "plan-bootstrap":
        results = converge("plan", stack, root, target, bootstrap_set=True)
        assert not [r for r in results if r.changes]
        drift_iam(admin, stack)
        results = converge("plan", stack, root, target, bootstrap_set=True)
        assert any("delete inline policy break-glass (not ours)" in r.details for r in results)
        converge("bootstrap", stack, root, admin)


@pytest.fixture(scope="module")
def recorded(moto, tmp_path_factory):
    """role key -> (policies of the role as bootstrap wrote them, authorisations of its job)."""
    moto.reset()
    stack = load_stack(REPO)
    account, region = stack["aws"]["account_id"], stack["aws"]["region"]
    root = tmp_path_factory.mktemp("repo")
    (root / "iam").mkdir()
    shutil.copy(REPO / "stack.yaml", root / "stack.yaml")
    for document in (REPO / "iam").glob("*.json"):
        shutil.copy(document, root / "iam" / document.name)
    shutil.copytree(REPO / "monitoring", root / "monitoring")  # the CloudWatch dashboard, alarms
    out = {}
    with aws_env(moto, region):
        create_cluster(session(account, region), stack["eks"]["cluster_name"])
        eks = EksExtras()
        admin = session(account, region)
        instrument(admin, eks)
        converge("bootstrap", stack, root, admin)
        requests = Requests(stack)
        # Replayed as if image/ added a package: the own Airflow image's steps then run (with
        # image/ empty they are skipped, and their grants would look unused).
        facts = {**ci_facts(stack, REPO), "airflow_image_tag": "src-replayed"}
        iam = session(account, region).client("iam")
        for role in ci_roles(stack):
            name = stack["aws"][role.key]
            policies = []
            for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"][
                    "DefaultVersionId"
                ]
                document = iam.get_policy_version(
                    PolicyArn=attached["PolicyArn"], VersionId=version
                )["PolicyVersion"]["Document"]
                policies.append(document if isinstance(document, dict) else json.loads(document))
            recorder = Recorder(eks, account, region)
            workflow, job = JOBS[role.key]
            for run in job_steps(workflow, job, facts):
                recorder.run = run
                for command in replayed(run):
                    replay(command, stack, root, recorder, admin, eks)
            calls = recorder.calls()
            out[role.key] = (
                policies,
                [r for s, o, p, ids in calls for r in requests.of(s, o, p, ids)],
                calls,
            )
    return stack, out


def test_every_aws_command_of_a_job_is_replayed():
    stack = load_stack(REPO)
    for role in ci_roles(stack):
        workflow, job = JOBS[role.key]
        for run in job_steps(workflow, job):
            replayed(run)  # raises for a run: block nobody replays


def test_every_call_of_a_job_is_allowed_by_its_own_role(recorded):
    _, jobs = recorded
    denied = {
        key: [r for r in requests if not allowed(policies, r)]
        for key, (policies, requests, _) in jobs.items()
    }
    assert denied == {key: [] for key in jobs}


def test_every_action_a_role_holds_is_used_by_its_job(recorded):
    _, jobs = recorded
    unused = {}
    for key, (policies, requests, _) in jobs.items():
        used = {r.action for r in requests}
        extra = {a for a in granted_actions(policies) if a not in used and a not in NOT_RECORDED}
        if extra:
            unused[key] = sorted(extra)
    assert unused == {}


def test_no_ci_role_can_write_iam_or_access_control(recorded):
    """The issue's line: no CI role holds an IAM write, a bucket-policy, public-access-block or
    lifecycle (log retention) write, or iam:PassRole, in any mode."""
    _, jobs = recorded
    forbidden = re.compile(
        r"^iam:(?!Get|List)|^s3:Put(Bucket(Policy|PublicAccessBlock)|"
        r"PublicAccessBlock|LifecycleConfiguration)|"
        r"^eks:(Create|Associate|Update|Delete)"
    )
    for key, (policies, _, _) in jobs.items():
        assert not [a for a in granted_actions(policies) if forbidden.search(a)], key


def test_jobs_really_ran(recorded):
    """The replay did reach AWS: each job made the calls its role exists for."""
    stack, jobs = recorded
    source = stack["dags"]["source"]
    actions = {key: {r.action for r in requests} for key, (_, requests, _) in jobs.items()}
    assert "eks:DescribeCluster" in actions["deploy_role"]
    assert "iam:GetRole" in actions["drift_check_role"]
    if source in ("s3-sync", "s3-bundle"):
        assert {"s3:PutObject", "s3:DeleteObject"} <= actions["sync_dags_role"]
    if source == "efs":
        assert {
            "elasticfilesystem:CreateFileSystem",
            "ec2:CreateSecurityGroup",
            "ec2:RevokeSecurityGroupIngress",
            "elasticfilesystem:CreateMountTarget",
            "elasticfilesystem:ModifyMountTargetSecurityGroups",
        } <= actions["deploy_role"]
    if "build_sync_image_role" in jobs:
        assert "ecr:GetAuthorizationToken" in actions["build_sync_image_role"]


def test_the_evaluator_denies_what_it_should():
    """The evaluator is what makes the replay mean something: it must say no."""
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringLike": {"s3:prefix": ["dags/*"]}},
            },
            {
                "Effect": "Allow",
                "Action": "ec2:AuthorizeSecurityGroupIngress",
                "Resource": "arn:aws:ec2:r:1:security-group/*",
                "Condition": {"StringEquals": {f"aws:ResourceTag/{TAG_KEY}": "p"}},
            },
            {
                "Effect": "Allow",
                "Action": "ec2:CreateSecurityGroup",
                "Resource": "arn:aws:ec2:r:1:security-group/*",
                "Condition": {
                    "ForAllValues:StringEquals": {"aws:TagKeys": [TAG_KEY]},
                    "StringEquals": {f"aws:RequestTag/{TAG_KEY}": "p"},
                },
            },
            {
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ]
    }
    assert allowed([policy], Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "dags/"}))
    assert not allowed([policy], Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": ""}))
    assert not allowed([policy], Request("s3:ListBucket", "arn:aws:s3:::b"))  # HeadBucket
    assert not allowed(
        [policy], Request("s3:ListBucket", "arn:aws:s3:::other", {"s3:prefix": "dags/"})
    )
    assert not allowed(
        [policy],
        Request(
            "s3:ListBucket",
            "arn:aws:s3:::b",
            {"s3:prefix": "dags/", "aws:SecureTransport": "false"},
        ),
    )
    sg = "arn:aws:ec2:r:1:security-group/sg-1"
    assert allowed(
        [policy],
        Request("ec2:AuthorizeSecurityGroupIngress", sg, {f"aws:ResourceTag/{TAG_KEY}": "p"}),
    )
    assert not allowed([policy], Request("ec2:AuthorizeSecurityGroupIngress", sg, {}))
    assert not allowed(
        [policy],
        Request("ec2:AuthorizeSecurityGroupIngress", sg, {f"aws:ResourceTag/{TAG_KEY}": "q"}),
    )
    assert allowed(
        [policy],
        Request(
            "ec2:CreateSecurityGroup",
            sg,
            {f"aws:RequestTag/{TAG_KEY}": "p", "aws:TagKeys": [TAG_KEY]},
        ),
    )
    assert not allowed(
        [policy],
        Request(
            "ec2:CreateSecurityGroup",
            sg,
            {f"aws:RequestTag/{TAG_KEY}": "p", "aws:TagKeys": [TAG_KEY, "Owner"]},
        ),
    )
    assert not allowed([policy], Request("ec2:CreateSecurityGroup", sg, {}))


# --- the DAG readers' policy against the calls the readers make ----------------------------


def reader_requests(stack: dict) -> list[Request]:
    """What the pods that read DAGs ask S3 for, per mode.

    s3-bundle: the amazon provider's S3DagBundle (providers/amazon/.../bundles/s3.py, with
    hooks/s3.py): ``check_for_bucket`` = HeadBucket; ``check_for_prefix(prefix, "/")`` lists
    the level above the prefix, i.e. the bucket root: ListObjectsV2 Prefix="" Delimiter="/";
    ``sync_to_local_dir`` lists Prefix=<prefix> and downloads each object (HeadObject and
    GetObject, both s3:GetObject). s3-sync: the sync agent lists Prefix="<prefix>/" and gets
    each object (airflow_gitops/dagsync).
    """
    bucket = f"arn:aws:s3:::{stack['dags']['bucket']}"
    prefix = stack["dags"]["prefix"].strip("/")
    key = f"{bucket}/{prefix}/example_dag.py"
    if stack["dags"]["source"] == "s3-bundle":
        return [
            Request("s3:ListBucket", bucket),  # HeadBucket: no s3:prefix key at all
            Request("s3:ListBucket", bucket, {"s3:prefix": "", "s3:delimiter": "/"}),
            Request("s3:ListBucket", bucket, {"s3:prefix": prefix}),
            Request("s3:ListBucket", bucket, {"s3:prefix": f"{prefix}/"}),
            Request("s3:GetObject", key),
        ]
    return [
        Request("s3:ListBucket", bucket, {"s3:prefix": f"{prefix}/"}),
        Request("s3:GetObject", key),
    ]


@pytest.mark.skipif(
    not (REPO / "iam" / "dag-read-policy.json").exists(), reason="no DAG bucket in this mode"
)
def test_dag_readers_can_do_what_their_reader_does_and_no_more():
    stack = load_stack(REPO)
    policy = json.loads((REPO / "iam" / "dag-read-policy.json").read_text())
    denied = [r for r in reader_requests(stack) if not allowed([policy], r)]
    assert denied == []
    bucket = f"arn:aws:s3:::{stack['dags']['bucket']}"
    prefix = stack["dags"]["prefix"].strip("/")
    for outside in (
        Request("s3:GetObject", f"{bucket}/secrets/creds.py"),
        Request("s3:ListBucket", bucket, {"s3:prefix": "secrets/"}),
        Request("s3:ListBucket", bucket, {"s3:prefix": ""}),  # whole bucket, deep
        Request("s3:PutObject", f"{bucket}/{prefix}/x.py"),
        Request("s3:GetObject", f"arn:aws:s3:::other-bucket/{prefix}/x.py"),
    ):
        assert not allowed([policy], outside), outside
    if stack["dags"]["source"] == "s3-sync":  # no listing without the prefix in this mode
        assert not allowed([policy], Request("s3:ListBucket", bucket))

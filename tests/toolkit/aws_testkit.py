"""Helpers for the tests of `plan` / `apply` / `bootstrap` (tests/test_aws_*.py).

- ``CallLog``: botocore event hooks on the session under test. ``before-send`` fires once per
  HTTP request actually sent (so it counts what reaches moto, retries included); the
  ``before-parameter-build`` hook records every operation the code asks for, with its
  parameters, whether it then goes to moto or to the EKS fake below.
- ``EksExtras``: moto 5.2.5 has no EKS add-on or access-entry API (it answers 404), so the
  whole-run tests answer those operations from the repo's one EKS fake
  (``airflow_gitops.local_eks``, also behind `make local-aws`), in process. They never reach
  moto and are counted apart (``CallLog.faked``). Their request shapes are checked
  with botocore's Stubber in test_aws_eks_stubbed.py.
- ``Faults``: make the k-th mutating call fail, before it is sent (refused) or after AWS did it
  (the answer lost).
- ``make_repo``: a throw-away repository (stack.yaml + iam/) for one DAG mode.
- ``create_cluster``: an EKS cluster in moto with a VPC, subnets in two zones (two subnets in
  one) and a cluster security group.
- ``snapshot``: every resource the toolkit manages, read back and normalised (ids replaced by
  names), to compare end states.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from pathlib import Path

import boto3
import yaml
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from airflow_gitops import local_aws, local_eks
from airflow_gitops.aws.iam_actions import is_read_only

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-1"
CLUSTER = "data-platform"
EKS_FAKED = local_eks.OPERATIONS


def session(account: str = ACCOUNT, region: str = REGION) -> boto3.Session:
    """A session on moto (AWS_ENDPOINT_URL is set by the fixture); in ``account`` if not moto's
    default, by assuming a role there (moto maps the returned keys to that account)."""
    base = boto3.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=region,
        botocore_session=_botocore_session(),
    )
    if account == ACCOUNT:
        return base
    creds = base.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/tests", RoleSessionName="tests"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
        botocore_session=_botocore_session(),
    )


_LOADER = None


def _botocore_session():
    """A fresh botocore session (own events, so hooks never leak between tests) that shares
    one model loader: parsing the service JSON once instead of per session keeps tests fast."""
    import botocore.session

    global _LOADER
    core = botocore.session.get_session()
    if _LOADER is None:
        _LOADER = core.get_component("data_loader")
    # boto3.Session appends its own data path to the loader each time; keep the list short.
    paths = _LOADER.search_paths
    paths[:] = list(dict.fromkeys(paths))
    core.register_component("data_loader", _LOADER)
    return core


# --- call counting -------------------------------------------------------------------------


class CallLog:
    def __init__(self, target: boto3.Session) -> None:
        self.sent: list[tuple[str, str]] = []  # (service, operation) per HTTP request sent
        self.calls: list[tuple[str, str, dict]] = []  # every operation asked for, with params
        target.events.register("before-send", self._on_send)
        target.events.register("before-parameter-build", self._on_call)

    def _on_send(self, request, **kwargs):
        _, service, operation = kwargs["event_name"].split(".")
        self.sent.append((service, operation))

    def _on_call(self, params, model, **kwargs):
        self.calls.append((model.service_model.service_name, model.name, dict(params)))

    def operations(self) -> list[str]:
        return [op for _, op, _ in self.calls]

    def mutating(self) -> list[str]:
        return [op for op in self.operations() if not is_read_only(op)]

    def sent_mutating(self) -> list[str]:
        return [op for _, op in self.sent if not is_read_only(op)]

    def faked(self) -> list[str]:
        return [op for op in self.operations() if op in EKS_FAKED]

    def clear(self) -> None:
        self.sent.clear()
        self.calls.clear()


# --- the EKS add-on / access-entry fake, and fault injection -------------------------------


def _response(status: int, body: dict):
    http = AWSResponse("https://eks.fake", status, {}, None)
    return http, body


class EksExtras(local_eks.EksExtras):
    """The one EKS fake (airflow_gitops.local_eks, also behind `make local-aws`), answering in
    process: ``answer`` returns what a botocore ``before-call`` hook returns instead of
    sending the request."""

    def answer(self, operation: str, p: dict):
        return _response(*super().answer(operation, p))


class Faults:
    """Fail the ``k``-th mutating call (1-based): ``when`` = "before" (AWS refuses it) or
    "after" (AWS did it, the caller sees an error). ``k=0`` never fails."""

    def __init__(self, k: int = 0, when: str = "before") -> None:
        self.k, self.when, self.seen, self.fired = k, when, 0, False

    def before(self, operation: str) -> None:
        if is_read_only(operation):
            return
        self.seen += 1
        if self.seen == self.k and self.when == "before":
            self._fire(operation)

    def after(self, operation: str) -> None:
        if (
            not is_read_only(operation)
            and self.seen == self.k
            and self.when == "after"
            and not self.fired
        ):
            self._fire(operation)

    def _fire(self, operation: str):
        self.fired = True
        raise ClientError(
            {
                "Error": {"Code": "InternalFailure", "Message": f"injected failure #{self.k}"},
                "ResponseMetadata": {"HTTPStatusCode": 500},
            },
            operation,
        )


def instrument(
    target: boto3.Session, eks: EksExtras | None = None, faults: Faults | None = None
) -> CallLog:
    """Count calls on ``target``; answer the EKS extras from ``eks``; inject ``faults``."""
    log = CallLog(target)
    eks = eks or EksExtras()
    params_by_call: list[dict] = []

    def remember(params, **kwargs):
        params_by_call.append(dict(params))

    def before_call(model, **kwargs):
        operation = model.name
        api_params = params_by_call.pop() if params_by_call else {}
        if faults:
            faults.before(operation)
        if model.service_model.service_name == "eks" and operation in EKS_FAKED:
            return eks.answer(operation, api_params)
        return None

    def after_call(model, **kwargs):
        if faults:
            faults.after(model.name)

    target.events.register("before-parameter-build", remember)
    target.events.register("before-call", before_call)
    target.events.register("after-call", after_call)
    log.eks = eks
    return log


# --- fixtures' building blocks -------------------------------------------------------------


def _cluster_client():
    return _observer_client(None, "eks")


def create_cluster(target: boto3.Session | None = None, name: str = CLUSTER) -> dict:
    """An EKS cluster in moto, with what DescribeCluster shows on AWS (local_aws.create_cluster,
    as `make local-aws` makes it)."""
    eks = target.client("eks") if target is not None else _cluster_client()
    return local_aws.create_cluster(_observer_client(target, "ec2"), eks, name, ACCOUNT)


def stack_for(
    source: str = "s3-sync",
    sync_image: str = "own-image",
    oidc_subject: str = "classic",
    account: str = ACCOUNT,
    pod_credentials: str = "irsa",
) -> dict:
    project = "airflow-gitops"
    aws = {
        "account_id": account,
        "region": REGION,
        "deploy_role": f"{project}-deploy",
        "drift_check_role": f"{project}-drift-check",
        "ebs_csi_driver_role": f"{project}-ebs-csi-driver",
        "pod_credentials": pod_credentials,
    }
    if source in ("s3-sync", "s3-bundle", "efs"):
        aws["sync_dags_role"] = f"{project}-sync-dags"
    if source == "s3-sync" and sync_image == "own-image":
        aws["build_sync_image_role"] = f"{project}-build-sync-image"
    aws["build_airflow_image_role"] = f"{project}-build-airflow-image"
    github = {
        "repository": "example-org/airflow-gitops",
        "deploy_branch": "main",
        "environment": "production",
        "oidc_subject": oidc_subject,
    }
    if oidc_subject == "immutable":
        github.update(owner_id="1001", repository_id="2002")
    dags: dict = {"source": source, "mount_path": "/opt/airflow/dags", "sync_interval_seconds": 30}
    images: dict = {"airflow": "apache/airflow:3.2.2", "airflow_repository": f"{project}/airflow"}
    if source in ("s3-sync", "s3-bundle"):
        dags.update(
            bucket=f"{project}-dags-{account}-{REGION}",
            prefix="dags",
            reader_service_account="airflow-dag-reader",
            parser_service_account="airflow-dag-parser",
            reader_role=f"{project}-dag-reader",
        )
    if source == "s3-sync":
        dags["sync_image"] = sync_image
        if sync_image == "own-image":
            images["s3_sync_repository"] = f"{project}/s3-sync"
    if source == "efs":
        dags["efs"] = {
            "creation_token": f"{project}-dags",
            "throughput_mode": "elastic",
            "storage_class": "airflow-efs-dags",
            "claim": "airflow-dags",
            "volume_size": "5Gi",
            "csi_driver_role": f"{project}-efs-csi-driver",
        }
    s3_mode = source in ("s3-sync", "s3-bundle")
    logs = {
        "bucket": f"{project}-logs-{account}",
        "prefix": "logs",
        "retention_days": 30,
        "writer_service_account": "airflow-dag-reader" if s3_mode else "airflow-airflow-worker",
        "writer_role": f"{project}-dag-reader" if s3_mode else f"{project}-airflow-worker",
        "reader_service_account": "airflow-api-server",
        "reader_role": f"{project}-api-server",
    }
    return {
        "project": project,
        "github": github,
        "aws": aws,
        "eks": {"cluster_name": CLUSTER, "deploy_kubernetes_group": f"{project}-deploy"},
        "airflow": {
            "namespace": "airflow",
            "release": "airflow",
            "chart_version": "1.22.0",
            "version": "3.2.2",
            "executor": "CeleryExecutor",
        },
        "dags": dags,
        "logs": logs,
        "secrets": {
            "connections_prefix": f"airflow/{project}/connections",
            "variables_prefix": f"airflow/{project}/variables",
        },
        "images": images,
    }


def _irsa_trust(account: str, subject: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{account}:oidc-provider/EKS_OIDC_ISSUER"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        "EKS_OIDC_ISSUER:sub": subject,
                        "EKS_OIDC_ISSUER:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def _pod_identity_trust(account: str, subject) -> dict:
    subjects = subject if isinstance(subject, list) else [subject]
    namespace = subjects[0].split(":")[2]
    accounts = [s.rsplit(":", 1)[1] for s in subjects]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/eks-cluster-arn": f"arn:aws:eks:{REGION}:{account}:cluster/{CLUSTER}",
                        "aws:RequestTag/kubernetes-namespace": namespace,
                        "aws:RequestTag/kubernetes-service-account": accounts,
                    }
                },
            }
        ],
    }


def make_repo(root: Path, stack: dict) -> Path:
    """stack.yaml and small but valid iam/ documents for ``stack`` under ``root``: GitHub trusts
    with the subjects the toolkit's rule gives, IRSA trusts, one-statement policies."""
    from airflow_gitops.aws import github
    from airflow_gitops.aws.resources import ci_roles, role_policy_files

    account = stack["aws"]["account_id"]
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::example/*"}
        ],
    }
    trust = (
        _pod_identity_trust
        if stack["aws"].get("pod_credentials") == "pod-identity"
        else _irsa_trust
    )
    documents = {
        "dag-read-policy.json": read_only,
        "dag-reader-trust.json": trust(
            account,
            [
                "system:serviceaccount:airflow:airflow-dag-reader",
                "system:serviceaccount:airflow:airflow-dag-parser",
            ],
        ),
        "efs-csi-driver-policy.json": read_only,
        "efs-csi-driver-trust.json": trust(
            account, "system:serviceaccount:kube-system:efs-csi-controller-sa"
        ),
        "ebs-csi-driver-trust.json": trust(
            account, "system:serviceaccount:kube-system:ebs-csi-controller-sa"
        ),
        "task-log-write-policy.json": read_only,
        "task-log-read-policy.json": read_only,
        "secrets-read-policy.json": read_only,
        "airflow-worker-trust.json": _irsa_trust(
            account, "system:serviceaccount:airflow:airflow-airflow-worker"
        ),
        "api-server-trust.json": _irsa_trust(
            account, "system:serviceaccount:airflow:airflow-api-server"
        ),
    }
    for role in ci_roles(stack):
        documents[role.trust_file] = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {
                        "Federated": f"arn:aws:iam::{account}:oidc-provider/"
                        "token.actions.githubusercontent.com"
                    },
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                            "token.actions.githubusercontent.com:sub": github.subject(
                                stack, role.workflow, role.environment
                            ),
                        }
                    },
                }
            ],
        }
        for policy in role_policy_files(role):
            documents[policy] = read_only
    (root / "iam").mkdir(parents=True, exist_ok=True)
    for filename, document in documents.items():
        (root / "iam" / filename).write_text(json.dumps(document, indent=2))
    (root / "stack.yaml").write_text(yaml.safe_dump(stack, sort_keys=False))
    return root


# --- end state -----------------------------------------------------------------------------

_OBSERVERS: dict = {}


def _observer_client(target: boto3.Session | None, service: str):
    """Clients for reading state back, made once: a snapshot per test iteration adds up."""
    if target is not None:
        return target.client(service)
    key = (service, os.environ.get("AWS_ENDPOINT_URL"))  # one moto server per module
    if key not in _OBSERVERS:
        _OBSERVERS[key] = session().client(service)
    return _OBSERVERS[key]


def snapshot(target: boto3.Session | None, eks: EksExtras | None = None) -> dict:
    """Everything the toolkit manages in moto, with generated ids replaced by stable names."""
    s3, iam, ecr, efs, ec2 = (
        _observer_client(target, name) for name in ("s3", "iam", "ecr", "efs", "ec2")
    )
    state: dict = {
        "buckets": {},
        "policies": {},
        "roles": {},
        "oidc": [],
        "ecr": {},
        "efs": [],
        "security_groups": {},
    }
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]

        def read(call, key, name=name):
            try:
                return call(Bucket=name).get(key)
            except ClientError as exc:
                return exc.response["Error"]["Code"]

        state["buckets"][name] = {
            "pab": read(s3.get_public_access_block, "PublicAccessBlockConfiguration"),
            "encryption": read(s3.get_bucket_encryption, "ServerSideEncryptionConfiguration"),
            "versioning": read(s3.get_bucket_versioning, "Status"),
            "policy": read(s3.get_bucket_policy, "Policy"),
            "lifecycle": read(s3.get_bucket_lifecycle_configuration, "Rules"),
        }
    for policy in iam.list_policies(Scope="Local")["Policies"]:
        versions = iam.list_policy_versions(PolicyArn=policy["Arn"])["Versions"]
        default = iam.get_policy_version(
            PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"]
        )
        state["policies"][policy["PolicyName"]] = {
            "versions": len(versions),
            "document": default["PolicyVersion"]["Document"],
        }
    for role in iam.list_roles()["Roles"]:
        attached = iam.list_attached_role_policies(RoleName=role["RoleName"])
        state["roles"][role["RoleName"]] = {
            "trust": role["AssumeRolePolicyDocument"],
            "attached": sorted(p["PolicyArn"] for p in attached["AttachedPolicies"]),
            "inline": sorted(iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]),
        }
    for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        detail = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider["Arn"])
        state["oidc"].append((provider["Arn"], sorted(detail["ClientIDList"])))
    state["oidc"].sort()
    for repo in ecr.describe_repositories()["repositories"]:
        try:
            lifecycle = ecr.get_lifecycle_policy(repositoryName=repo["repositoryName"])[
                "lifecyclePolicyText"
            ]
        except ClientError as exc:
            lifecycle = exc.response["Error"]["Code"]
        state["ecr"][repo["repositoryName"]] = {
            "mutability": repo["imageTagMutability"],
            "scan": repo["imageScanningConfiguration"]["scanOnPush"],
            "lifecycle": lifecycle,
        }
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
    sg_name = {gid: g["GroupName"] for gid, g in groups.items()}
    for group in groups.values():
        if group["GroupName"] == "default":
            continue
        state["security_groups"][group["GroupName"]] = sorted(
            (
                p.get("IpProtocol"),
                p.get("FromPort"),
                p.get("ToPort"),
                tuple(
                    sorted(
                        sg_name.get(pair["GroupId"], pair["GroupId"])
                        for pair in p.get("UserIdGroupPairs", [])
                    )
                ),
            )
            for p in group.get("IpPermissions", [])
        )
    for fs in efs.describe_file_systems()["FileSystems"]:
        targets = efs.describe_mount_targets(FileSystemId=fs["FileSystemId"])["MountTargets"]
        state["efs"].append(
            {
                "token": fs["CreationToken"],
                "encrypted": fs["Encrypted"],
                "throughput": fs.get("ThroughputMode"),
                "mount_targets": sorted(
                    (
                        t["AvailabilityZoneName"],
                        tuple(
                            sorted(
                                sg_name.get(g, g)
                                for g in efs.describe_mount_target_security_groups(
                                    MountTargetId=t["MountTargetId"]
                                )["SecurityGroups"]
                            )
                        ),
                    )
                    for t in targets
                ),
            }
        )
    if eks is not None:
        state["eks"] = eks.state()
    return state


# --- moto's own request log (server side) --------------------------------------------------


def recorder(server, action: str) -> str:
    request = urllib.request.Request(
        f"{server.endpoint}/moto-api/recorder/{action}",
        method="POST" if action != "download-recording" else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def server_operations(server) -> list[str]:
    """Operation names of the requests moto logged, from the request itself (X-Amz-Target,
    Action=, or the REST method and path); for counting, not for exact naming."""
    from urllib.parse import parse_qs, urlparse

    names = []
    for line in recorder(server, "download-recording").splitlines():
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        if "x-amz-target" in headers:
            names.append(headers["x-amz-target"].rsplit(".", 1)[-1])
        elif "Action=" in body:
            names.append(parse_qs(body)["Action"][0])
        else:
            names.append(f"{entry['method']} {urlparse(entry['url']).path}")
    return names


def server_mutating(server) -> list[str]:
    """Logged requests that change something: query/JSON actions not named Describe/Get/List,
    REST requests other than GET/HEAD."""
    out = []
    for name in server_operations(server):
        method = name.split(" ", 1)[0]
        if method in ("GET", "HEAD"):
            continue
        if method in ("PUT", "POST", "DELETE", "PATCH"):
            out.append(name)
        elif not is_read_only(name):
            out.append(name)
    return out


# --- pytest fixtures (imported by the test modules) ----------------------------------------

import pytest  # noqa: E402

from airflow_gitops.local_aws import MotoServer, aws_env  # noqa: E402


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """One moto server per test module; its request log goes to a temporary file."""
    saved = os.environ.get("MOTO_RECORDER_FILEPATH")
    os.environ["MOTO_RECORDER_FILEPATH"] = str(tmp_path_factory.mktemp("moto") / "requests.log")
    # AWS managed policies (the EBS CSI driver role attaches AmazonEBSCSIDriverPolicy) exist
    # in moto only when it loads them.
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    # Offline: with no token, bootstrap never calls GitHub's API (tests pass their own fake).
    tokens = {
        name: os.environ.pop(name) for name in ("GITHUB_TOKEN", "GH_TOKEN") if name in os.environ
    }
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()
        os.environ.update(tokens)
        if saved is None:
            os.environ.pop("MOTO_RECORDER_FILEPATH", None)
        else:
            os.environ["MOTO_RECORDER_FILEPATH"] = saved


@pytest.fixture
def aws(moto):
    """A clean moto (reset, not restarted) and this process's boto3 pointed at it."""
    moto.reset()
    with aws_env(moto, REGION):
        yield moto

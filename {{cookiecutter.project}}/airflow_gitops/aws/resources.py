"""Which resources each command converges, read from stack.yaml (dags.source, dags.sync_image).

| mode                  | apply                                                             |
|-----------------------|-------------------------------------------------------------------|
| s3-sync, s3-bundle    | DAG bucket, dag-read policy, cluster OIDC provider, dag-reader role |
| s3-sync + own-image   | ... and the s3-sync image's ECR repository                        |
| efs                   | efs-csi-driver policy, cluster OIDC provider, CSI driver role,     |
|                       | file system, mount-target security group + NFS rule, mount        |
|                       | targets, aws-efs-csi-driver add-on                                |
| git-sync, git-bundle  | nothing in AWS                                                    |

bootstrap (once, as an admin) adds what the deploy role cannot make for itself: the GitHub OIDC
provider, the deploy role and its policy, the EKS access entry; and the bucket and ECR
repository, so the first deploy can push before its `apply` runs.
"""

from __future__ import annotations

from airflow_gitops.aws.converge import Converger
from airflow_gitops.aws.ecr import EcrRepository
from airflow_gitops.aws.efs import EfsFileSystem, MountTargets, MountTargetSecurityGroup
from airflow_gitops.aws.eks import EFS_CSI_ADDON, DeployAccess, EksAddon
from airflow_gitops.aws.iam import IamRole, ManagedPolicy, OidcProvider
from airflow_gitops.aws.s3 import DagBucket

S3_MODES = {"s3-sync", "s3-bundle"}
GITHUB_OIDC = "token.actions.githubusercontent.com"

DAG_READ_POLICY = "dag-read-policy.json"
DAG_READER_TRUST = "dag-reader-trust.json"
EFS_CSI_POLICY = "efs-csi-driver-policy.json"
EFS_CSI_TRUST = "efs-csi-driver-trust.json"
DEPLOY_POLICY = "deploy-role-policy.json"
DEPLOY_TRUST = "deploy-role-trust.json"


def dag_source(stack: dict) -> str:
    return stack["dags"]["source"]


def uses_own_sync_image(stack: dict) -> bool:
    return dag_source(stack) == "s3-sync" and stack["dags"].get("sync_image") == "own-image"


def bucket_and_registry(stack: dict) -> list[Converger]:
    items: list[Converger] = []
    if dag_source(stack) in S3_MODES:
        items.append(DagBucket(stack["dags"]["bucket"]))
    if uses_own_sync_image(stack):
        items.append(EcrRepository(stack["images"]["s3_sync_repository"]))
    return items


def apply_resources(stack: dict) -> list[Converger]:
    """What `apply` (and `plan`) converge, in dependency order."""
    source = dag_source(stack)
    items = bucket_and_registry(stack)
    if source in S3_MODES:
        items += [
            ManagedPolicy(DAG_READ_POLICY, stack),
            OidcProvider(),
            IamRole(stack["dags"]["reader_role"], DAG_READER_TRUST, [DAG_READ_POLICY],
                    "Airflow pods that read DAGs from S3 (IRSA)"),
        ]
    if source == "efs":
        efs = stack["dags"]["efs"]
        items += [
            ManagedPolicy(EFS_CSI_POLICY, stack),
            OidcProvider(),
            IamRole(efs["csi_driver_role"], EFS_CSI_TRUST, [EFS_CSI_POLICY],
                    "EFS CSI driver controller (IRSA)"),
            EfsFileSystem(efs["creation_token"]),
            MountTargetSecurityGroup(f"{efs['creation_token']}-mount-targets"),
            MountTargets(efs["creation_token"]),
            EksAddon(EFS_CSI_ADDON, efs["csi_driver_role"]),
        ]
    return items


def bootstrap_resources(stack: dict) -> list[Converger]:
    role = stack["aws"]["deploy_role"]
    return [
        OidcProvider(GITHUB_OIDC),
        ManagedPolicy(DEPLOY_POLICY, stack),
        IamRole(role, DEPLOY_TRUST, [DEPLOY_POLICY],
                f"GitHub Actions deploys of {stack['github']['repository']}"),
        *bucket_and_registry(stack),
        DeployAccess(role),
    ]

"""Every AWS resource this repo owns, in dependency order, and who writes it.

`bootstrap` (an admin, once and after any change to iam/) converges all of them. `apply` (the
deploy role in CI) first reads every bootstrap-owned one and stops with "run `make bootstrap`"
if any drifted, then converges the few it owns: the EFS file system and its network. So the
roles CI assumes hold no IAM write, no bucket-policy write and no iam:PassRole.

| resource                                   | modes            | written by |
|--------------------------------------------|------------------|------------|
| GitHub OIDC provider, subject template     | all              | bootstrap  |
| one role + policy per CI job (CI_ROLES)    | by workflow      | bootstrap  |
| DAG bucket (private, TLS only, versioned)  | s3-sync, s3-bundle | bootstrap |
| s3-sync image ECR repository               | s3-sync + own-image | bootstrap |
| own Airflow image ECR repository, its CI role | all         | bootstrap  |
| task-log bucket (private, TLS only, expiring) | all           | bootstrap  |
| worker and API-server pod roles (logs)     | all              | bootstrap  |
| cluster OIDC provider (irsa), pod roles     | all (EBS CSI)    | bootstrap  |
| EKS access entries of CI roles             | deploy; sync-dags in efs | bootstrap |
| EKS add-ons (EBS CSI; EFS CSI in efs)      | all              | bootstrap  |
| pod-identity: agent add-on, associations   | all              | bootstrap  |
| CloudWatch agent pod role (metrics)        | cloudwatch       | bootstrap  |
| EFS file system, mount-target group, targets | efs            | apply      |
| CloudWatch dashboard and alarms            | cloudwatch       | apply      |
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_gitops.aws.cloudwatch import CloudWatchAlarms, CloudWatchDashboard
from airflow_gitops.aws.converge import APPLY, BOOTSTRAP, Converger
from airflow_gitops.aws.ecr import EcrRepository
from airflow_gitops.aws.efs import EfsFileSystem, MountTargets, MountTargetSecurityGroup
from airflow_gitops.aws.eks import (
    ADMIN_ACCESS_POLICY,
    EBS_CSI_ADDON,
    EDIT_ACCESS_POLICY,
    EFS_CSI_ADDON,
    POD_IDENTITY_AGENT_ADDON,
    EksAccess,
    EksAddon,
    PodIdentityAssociation,
)
from airflow_gitops.aws.iam import IamRole, ManagedPolicy, OidcProvider
from airflow_gitops.aws.s3 import DagBucket, LogBucket

S3_MODES = {"s3-sync", "s3-bundle"}
# Where the CSI drivers' ServiceAccounts live: the cluster's, not an environment's.
CLUSTER_NAMESPACE = "kube-system"
GITHUB_OIDC = "token.actions.githubusercontent.com"

DAG_READ_POLICY = "dag-read-policy.json"
DAG_READER_TRUST = "dag-reader-trust.json"
EFS_CSI_POLICY = "efs-csi-driver-policy.json"
EFS_CSI_TRUST = "efs-csi-driver-trust.json"
EBS_CSI_TRUST = "ebs-csi-driver-trust.json"
# AWS's own policy for the EBS CSI driver (the least it needs; AWS keeps it current).
EBS_CSI_MANAGED_POLICY = "service-role/AmazonEBSCSIDriverPolicy"
TASK_LOG_WRITE_POLICY = "task-log-write-policy.json"
TASK_LOG_READ_POLICY = "task-log-read-policy.json"
# Connections and variables (stack.yaml secrets.*), read by the same two kinds of pod.
SECRETS_READ_POLICY = "secrets-read-policy.json"
WORKER_TRUST = "airflow-worker-trust.json"
API_SERVER_TRUST = "api-server-trust.json"
# Every read `plan` and `apply` make of what we own: shared by the deploy and drift-check roles.
READ_STATE_POLICY = "read-state-policy.json"
# metrics.backend cloudwatch: the CloudWatch agent's role (PutMetricData to one namespace).
CLOUDWATCH_AGENT_POLICY = "cloudwatch-agent-policy.json"
CLOUDWATCH_AGENT_TRUST = "cloudwatch-agent-trust.json"


@dataclass(frozen=True)
class CiRole:
    """One GitHub Actions job's role: stack.yaml aws.<key>, iam/<stem>-trust.json and
    iam/<stem>-policy.json, trusted only for .github/workflows/<workflow> on the deploy branch."""

    key: str
    stem: str
    workflow: str
    environment: bool
    kube_access: str | None = None  # EKS access policy, namespace-scoped

    @property
    def trust_file(self) -> str:
        return f"{self.stem}-trust.json"

    @property
    def policy_file(self) -> str:
        return f"{self.stem}-policy.json"


DEPLOY = CiRole("deploy_role", "deploy-role", "deploy.yml", True, ADMIN_ACCESS_POLICY)
SYNC_DAGS = CiRole("sync_dags_role", "sync-dags-role", "sync-dags.yml", True)
SYNC_DAGS_EFS = CiRole(
    "sync_dags_role", "sync-dags-role", "sync-dags.yml", True, EDIT_ACCESS_POLICY
)
BUILD_SYNC_IMAGE = CiRole(
    "build_sync_image_role", "build-sync-image-role", "build-sync-image.yml", True
)
BUILD_AIRFLOW_IMAGE = CiRole(
    "build_airflow_image_role", "build-airflow-image-role", "build-airflow-image.yml", True
)
DRIFT_CHECK = CiRole("drift_check_role", "drift-check-role", "drift-check.yml", False)
# The deploy trust file keeps its name from before per-job roles.
DEPLOY_TRUST = DEPLOY.trust_file


def dag_source(stack: dict) -> str:
    return stack["dags"]["source"]


def uses_own_sync_image(stack: dict) -> bool:
    return dag_source(stack) == "s3-sync" and stack["dags"].get("sync_image") == "own-image"


def ci_roles(stack: dict) -> list[CiRole]:
    """The CI roles this repo's workflows use (a workflow pruned for this mode has none)."""
    roles = [DEPLOY]
    if dag_source(stack) in S3_MODES:
        roles.append(SYNC_DAGS)
    elif dag_source(stack) == "efs":
        roles.append(SYNC_DAGS_EFS)
    if uses_own_sync_image(stack):
        roles.append(BUILD_SYNC_IMAGE)
    if "build_airflow_image_role" in stack["aws"]:
        roles.append(BUILD_AIRFLOW_IMAGE)
    roles.append(DRIFT_CHECK)
    return roles


def role_policy_files(role: CiRole) -> list[str]:
    if role is DRIFT_CHECK:
        return [READ_STATE_POLICY]
    if role is DEPLOY:
        return [READ_STATE_POLICY, role.policy_file]
    return [role.policy_file]


def worker_policy_files(stack: dict) -> list[str]:
    """What the pods that run tasks and triggers may do beyond reading DAGs."""
    return [TASK_LOG_WRITE_POLICY, SECRETS_READ_POLICY]


def api_server_policy_files() -> list[str]:
    return [TASK_LOG_READ_POLICY, SECRETS_READ_POLICY]


def pod_identity(stack: dict) -> bool:
    """EKS Pod Identity instead of IRSA (stack.yaml aws.pod_credentials)."""
    return stack["aws"].get("pod_credentials", "irsa") == "pod-identity"


def cloudwatch_metrics(stack: dict) -> dict | None:
    """stack.yaml metrics when they go to CloudWatch (a repo from before metrics.* has none)."""
    metrics = stack.get("metrics") or {}
    return metrics if metrics.get("backend") == "cloudwatch" else None


def pod_roles(stack: dict) -> list[tuple[str, str, str]]:
    """(namespace, ServiceAccount, role) of every pod identity this repo gives."""
    items = []
    if dag_source(stack) in S3_MODES:
        namespace, dags = stack["airflow"]["namespace"], stack["dags"]
        items += [
            (namespace, dags["reader_service_account"], dags["reader_role"]),
            (namespace, dags["parser_service_account"], dags["reader_role"]),
        ]
    if dag_source(stack) == "efs":
        items.append(
            (CLUSTER_NAMESPACE, "efs-csi-controller-sa", stack["dags"]["efs"]["csi_driver_role"])
        )
    logs = stack.get("logs")
    if logs:  # task logs and secrets: the pods that run tasks (S3 modes: the reader, above)
        namespace = stack["airflow"]["namespace"]
        if dag_source(stack) not in S3_MODES:
            items.append((namespace, logs["writer_service_account"], logs["writer_role"]))
        items.append((namespace, logs["reader_service_account"], logs["reader_role"]))
    metrics = cloudwatch_metrics(stack)
    if metrics:
        namespace = stack["airflow"]["namespace"]
        items.append((namespace, metrics["agent_service_account"], metrics["agent_role"]))
    items.append((CLUSTER_NAMESPACE, "ebs-csi-controller-sa", stack["aws"]["ebs_csi_driver_role"]))
    return items


def all_resources(stack: dict, cluster_owner: str | None = None) -> list[Converger]:
    """Every resource of this repo, in dependency order (each knows its ``owner``).

    ``cluster_owner``: an earlier environment on the same cluster. It converges what the
    cluster has once (its OIDC provider, the CSI and Pod Identity add-ons, their roles and
    associations); this environment leaves them to it, so the two never undo each other."""
    source = dag_source(stack)
    own_cluster = cluster_owner is None
    aws = stack["aws"]
    repository = stack["github"]["repository"]
    items: list[Converger] = [OidcProvider(GITHUB_OIDC)]
    policies = {f for role in ci_roles(stack) for f in role_policy_files(role)}
    items += [ManagedPolicy(f, stack) for f in sorted(policies)]
    for role in ci_roles(stack):
        items.append(
            IamRole(
                aws[role.key],
                role.trust_file,
                role_policy_files(role),
                f"GitHub Actions {role.workflow} of {repository}",
            )
        )
    if source in S3_MODES:
        items.append(DagBucket(stack["dags"]["bucket"]))
    if uses_own_sync_image(stack):
        items.append(EcrRepository(stack["images"]["s3_sync_repository"]))
    if "airflow_repository" in stack["images"]:
        items.append(EcrRepository(stack["images"]["airflow_repository"]))
    # Task logs and secrets: every generated repo has stack.yaml logs.*; a repo made before them
    # converges as it did until the template update adds them.
    logs = stack.get("logs")
    if logs:
        items.append(LogBucket(logs["bucket"], logs["prefix"], logs["retention_days"]))
    by_pod_identity = pod_identity(stack)
    if not by_pod_identity and own_cluster:
        items.append(OidcProvider())
    worker_policies = worker_policy_files(stack) if logs else []
    if logs:
        shared = dict.fromkeys(
            [*worker_policies, *api_server_policy_files()]
        )  # once each, in order
        items += [ManagedPolicy(f, stack) for f in shared]
    if source in S3_MODES:
        items += [
            ManagedPolicy(DAG_READ_POLICY, stack),
            IamRole(
                stack["dags"]["reader_role"],
                DAG_READER_TRUST,
                [DAG_READ_POLICY, *worker_policies],
                "Airflow pods that read DAGs from S3 and run tasks",
            ),
        ]
    elif logs:
        items.append(
            IamRole(
                logs["writer_role"],
                WORKER_TRUST,
                worker_policies,
                "Airflow pods that run tasks and triggers",
            )
        )
    if logs:
        items.append(
            IamRole(
                logs["reader_role"],
                API_SERVER_TRUST,
                api_server_policy_files(),
                "Airflow API server",
            )
        )
    if source == "efs" and own_cluster:
        items += [
            ManagedPolicy(EFS_CSI_POLICY, stack),
            IamRole(
                stack["dags"]["efs"]["csi_driver_role"],
                EFS_CSI_TRUST,
                [EFS_CSI_POLICY],
                "EFS CSI driver controller",
            ),
        ]
    metrics = cloudwatch_metrics(stack)
    if metrics:
        items += [
            ManagedPolicy(CLOUDWATCH_AGENT_POLICY, stack),
            IamRole(
                metrics["agent_role"],
                CLOUDWATCH_AGENT_TRUST,
                [CLOUDWATCH_AGENT_POLICY],
                "CloudWatch agent publishing Airflow's StatsD metrics",
            ),
        ]
    if own_cluster:
        items.append(
            IamRole(
                aws["ebs_csi_driver_role"],
                EBS_CSI_TRUST,
                [],
                "EBS CSI driver controller",
                managed=(EBS_CSI_MANAGED_POLICY,),
            )
        )
    for role in ci_roles(stack):
        if role.kube_access:
            # The deploy role's group is what k8s/deploy-extensions-rbac.yaml grants more to.
            groups = (stack["eks"]["deploy_kubernetes_group"],) if role is DEPLOY else ()
            items.append(EksAccess(aws[role.key], role.kube_access, groups))
    if by_pod_identity:  # the agent first; then each ServiceAccount's association
        if own_cluster:
            items.append(EksAddon(POD_IDENTITY_AGENT_ADDON, None))
        items += [
            PodIdentityAssociation(*entry)
            for entry in pod_roles(stack)
            if own_cluster or entry[0] != CLUSTER_NAMESPACE
        ]
    if own_cluster:
        ebs_role = None if by_pod_identity else aws["ebs_csi_driver_role"]
        items.append(EksAddon(EBS_CSI_ADDON, ebs_role))
    if source == "efs":
        efs = stack["dags"]["efs"]
        if own_cluster:
            efs_role = None if by_pod_identity else efs["csi_driver_role"]
            items.append(EksAddon(EFS_CSI_ADDON, efs_role))
        items += [
            EfsFileSystem(efs["creation_token"]),
            MountTargetSecurityGroup(f"{efs['creation_token']}-mount-targets"),
            MountTargets(efs["creation_token"]),
        ]
    if metrics:  # read the metric namespace the agent writes; the deploy role keeps them
        items += [
            CloudWatchDashboard(metrics["dashboard"]),
            CloudWatchAlarms(metrics["alarm_prefix"]),
        ]
    return items


def bootstrap_owned(items: list[Converger]) -> list[Converger]:
    return [item for item in items if item.owner == BOOTSTRAP]


def apply_owned(items: list[Converger]) -> list[Converger]:
    return [item for item in items if item.owner == APPLY]

"""EKS pieces moto does not have: the CSI driver add-ons and the CI roles' access entries.

(Tests cover these with botocore's Stubber; see docs/aws-setup.md.) Both are bootstrap's:
an add-on is handed a role (iam:PassRole), an access entry grants Kubernetes rights.
"""

from __future__ import annotations

from airflow_gitops.aws.converge import Converger, Result, Step, document_diff, error_code
from airflow_gitops.aws.errors import AwsError
from airflow_gitops.aws.iam import PROJECT_TAG

EFS_CSI_ADDON = "aws-efs-csi-driver"
# EKS Pod Identity: the node agent that hands pods the credentials of their association.
POD_IDENTITY_AGENT_ADDON = "eks-pod-identity-agent"
# EBS volumes for the chart's claims (Redis, with Celery): clusters on Kubernetes 1.30+
# have no default StorageClass and no EBS provisioner without this add-on.
EBS_CSI_ADDON = "aws-ebs-csi-driver"
# Kubernetes `admin` ClusterRole, bound in the Airflow namespace only: enough for `helm upgrade`
# of the chart (Deployments, StatefulSets, Services, Secrets, ServiceAccounts, PVCs, and the
# Roles/RoleBindings the chart makes; `edit` cannot make those), and nothing cluster-wide.
ADMIN_ACCESS_POLICY = "AmazonEKSAdminPolicy"
# Kubernetes `edit` in the namespace: create a pod and exec into it (efs-publish), no RBAC.
EDIT_ACCESS_POLICY = "AmazonEKSEditPolicy"


def _not_found(exc) -> bool:
    return error_code(exc) == "ResourceNotFoundException"


class EksAddon(Converger):
    """An EKS managed add-on bound to an IRSA role; EKS picks the add-on version."""

    kind = "eks add-on"

    def __init__(self, addon: str, role_name: str | None) -> None:
        super().__init__(addon)
        # None: the add-on gets no IRSA role (the Pod Identity agent itself, or a driver whose
        # ServiceAccount has a Pod Identity association instead).
        self.role_name = role_name

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        from botocore.exceptions import ClientError

        eks = ctx.client("eks")
        cluster = ctx.stack["eks"]["cluster_name"]
        role = ctx.arn("iam", f"role/{self.role_name}") if self.role_name else None
        try:
            addon = eks.describe_addon(clusterName=cluster, addonName=self.name)["addon"]
        except ClientError as exc:
            if not _not_found(exc):
                raise
            extra = {"serviceAccountRoleArn": role} if role else {}
            # OVERWRITE: a driver installed earlier by hand (helm) is taken over by EKS.
            return False, [
                (
                    f"role {self.role_name}" if role else "no IRSA role",
                    lambda: eks.create_addon(
                        clusterName=cluster,
                        addonName=self.name,
                        resolveConflicts="OVERWRITE",
                        tags={PROJECT_TAG: ctx.stack["project"]},
                        **extra,
                    ),
                )
            ]
        if role is None or addon.get("serviceAccountRoleArn") == role:
            return True, []
        return True, [
            (
                f"role {self.role_name}",
                lambda: eks.update_addon(
                    clusterName=cluster,
                    addonName=self.name,
                    serviceAccountRoleArn=role,
                    resolveConflicts="PRESERVE",
                ),
            )
        ]

    def removal(self, ctx) -> list[Step]:
        """Only an add-on this repo created (our tag): one that was there before serves other
        workloads of the cluster. Run `helm uninstall` first: the chart's volumes need it."""
        from botocore.exceptions import ClientError

        eks = ctx.client("eks")
        cluster = ctx.stack["eks"]["cluster_name"]
        try:
            addon = eks.describe_addon(clusterName=cluster, addonName=self.name)["addon"]
        except ClientError as exc:
            if not _not_found(exc):
                raise
            return []
        if (addon.get("tags") or {}).get(PROJECT_TAG) != ctx.stack["project"]:
            return []
        return [
            (
                "made by this repo",
                lambda: eks.delete_addon(clusterName=cluster, addonName=self.name),
            )
        ]


class EksAccess(Converger):
    """A CI role's EKS access entry with exactly one access policy, scoped to the namespace,
    and exactly the Kubernetes groups given (RoleBindings in k8s/ grant those groups more).

    Any other access policy associated with the entry (cluster admin, say) or any other group
    is drift: `plan` shows it and `bootstrap` removes it.
    """

    kind = "eks access entry"

    def __init__(
        self, role_name: str, access_policy: str, kubernetes_groups: tuple[str, ...] = ()
    ) -> None:
        super().__init__(role_name)
        self.access_policy = access_policy
        self.kubernetes_groups = sorted(kubernetes_groups)

    def converge(self, ctx) -> list[Result]:
        from botocore.exceptions import ClientError

        eks = ctx.client("eks")
        cluster = ctx.stack["eks"]["cluster_name"]
        namespace = ctx.stack["airflow"]["namespace"]
        principal = ctx.arn("iam", f"role/{self.name}")
        policy = f"arn:{ctx.partition}:eks::aws:cluster-access-policy/{self.access_policy}"
        mode = (ctx.cluster().get("accessConfig") or {}).get("authenticationMode")
        if mode == "CONFIG_MAP":
            raise AwsError(
                f"eks cluster {cluster}: authentication mode is CONFIG_MAP, which has no access "
                "entries; run `aws eks update-cluster-config --name "
                f"{cluster} --access-config authenticationMode=API_AND_CONFIG_MAP` and bootstrap again"
            )
        try:
            found = eks.describe_access_entry(clusterName=cluster, principalArn=principal)
            entry_exists = True
        except ClientError as exc:
            if not _not_found(exc):
                raise
            found, entry_exists = {}, False
        groups = self.kubernetes_groups
        # Only given when there are any: an entry without groups is created as it always was.
        with_groups = {"kubernetesGroups": groups} if groups else {}
        entry_steps: list[Step] = []
        entry_diff = []
        if not entry_exists:
            entry_steps.append(
                (
                    f"STANDARD, groups {', '.join(groups)}" if groups else "STANDARD",
                    lambda: eks.create_access_entry(
                        clusterName=cluster, principalArn=principal, type="STANDARD", **with_groups
                    ),
                )
            )
        else:
            current_groups = sorted(found["accessEntry"].get("kubernetesGroups") or [])
            if current_groups != groups:
                entry_steps.append(
                    (
                        f"groups {', '.join(groups) or '(none)'}",
                        # The list given replaces the entry's groups: extra ones are dropped.
                        lambda: eks.update_access_entry(
                            clusterName=cluster, principalArn=principal, kubernetesGroups=groups
                        ),
                    )
                )
                entry_diff = document_diff(
                    f"kubernetes groups of {self.name}", current_groups, groups
                )
        entry = self.finish(ctx, entry_exists, entry_steps, diff=entry_diff)

        scope = {"type": "namespace", "namespaces": [namespace]}
        associated = []
        if entry_exists:
            associated = eks.list_associated_access_policies(
                clusterName=cluster, principalArn=principal
            )["associatedAccessPolicies"]
        current = next((a for a in associated if a["policyArn"] == policy), None)
        ok = (
            current is not None
            and current.get("accessScope", {}).get("type") == "namespace"
            and sorted(current["accessScope"].get("namespaces", [])) == [namespace]
        )
        steps: list[Step] = (
            []
            if ok
            else [
                (
                    f"namespace {namespace}",
                    lambda: eks.associate_access_policy(
                        clusterName=cluster,
                        principalArn=principal,
                        policyArn=policy,
                        accessScope=scope,
                    ),
                )
            ]
        )
        others = [a["policyArn"] for a in associated if a["policyArn"] != policy]
        for other in others:
            steps.append(
                (
                    f"disassociate {other.rsplit('/', 1)[1]} (not ours)",
                    lambda other=other: eks.disassociate_access_policy(
                        clusterName=cluster, principalArn=principal, policyArn=other
                    ),
                )
            )
        diff = []
        if steps and entry_exists:
            diff = document_diff(
                f"access policies of {self.name}",
                {a["policyArn"].rsplit("/", 1)[1]: a.get("accessScope") for a in associated},
                {self.access_policy: scope},
            )
        association = self.finish(
            ctx,
            current is not None or bool(others),
            steps,
            name=f"{self.name} {self.access_policy}",
            diff=diff,
        )
        association.kind = "eks access policy"
        return [entry, association]

    def removal(self, ctx) -> list[Step]:
        from botocore.exceptions import ClientError

        eks = ctx.client("eks")
        cluster = ctx.stack["eks"]["cluster_name"]
        principal = ctx.arn("iam", f"role/{self.name}")
        try:
            eks.describe_access_entry(clusterName=cluster, principalArn=principal)
        except ClientError as exc:
            if not _not_found(exc):
                raise
            return []
        return [
            (
                "and its access policies",
                lambda: eks.delete_access_entry(clusterName=cluster, principalArn=principal),
            )
        ]


class PodIdentityAssociation(Converger):
    """EKS Pod Identity: ServiceAccount ``namespace/service_account`` gets ``role_name``.

    Bootstrap's: making or changing one passes the role (iam:PassRole).
    """

    kind = "eks pod identity"

    def __init__(self, namespace: str, service_account: str, role_name: str) -> None:
        super().__init__(f"{namespace}/{service_account}")
        self.namespace, self.service_account, self.role_name = (
            namespace,
            service_account,
            role_name,
        )

    def _current(self, ctx) -> dict | None:
        eks = ctx.client("eks")
        found = eks.list_pod_identity_associations(
            clusterName=ctx.stack["eks"]["cluster_name"],
            namespace=self.namespace,
            serviceAccount=self.service_account,
        )["associations"]
        if not found:
            return None
        return eks.describe_pod_identity_association(
            clusterName=ctx.stack["eks"]["cluster_name"], associationId=found[0]["associationId"]
        )["association"]

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        eks = ctx.client("eks")
        cluster = ctx.stack["eks"]["cluster_name"]
        role = ctx.arn("iam", f"role/{self.role_name}")
        current = self._current(ctx)
        if current is None:
            return False, [
                (
                    f"role {self.role_name}",
                    lambda: eks.create_pod_identity_association(
                        clusterName=cluster,
                        namespace=self.namespace,
                        serviceAccount=self.service_account,
                        roleArn=role,
                        tags={PROJECT_TAG: ctx.stack["project"]},
                    ),
                )
            ]
        if current.get("roleArn") == role:
            return True, []
        self.show_diff(
            f"pod identity {self.name}", {"roleArn": current.get("roleArn")}, {"roleArn": role}
        )
        return True, [
            (
                f"role {self.role_name}",
                lambda: eks.update_pod_identity_association(
                    clusterName=cluster, associationId=current["associationId"], roleArn=role
                ),
            )
        ]

    def removal(self, ctx) -> list[Step]:
        current = self._current(ctx)
        if current is None:
            return []
        return [
            (
                current["associationId"],
                lambda: ctx.client("eks").delete_pod_identity_association(
                    clusterName=ctx.stack["eks"]["cluster_name"],
                    associationId=current["associationId"],
                ),
            )
        ]

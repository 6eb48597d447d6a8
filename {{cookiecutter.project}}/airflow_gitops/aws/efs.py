"""efs mode: the encrypted file system, its mount targets, and the NFS path from the cluster.

Everything is found by a stable name, so an interrupted run is finished by the next one: the
file system by its creation token (stack.yaml dags.efs.creation_token, which is also EFS's own
idempotency key), the security group by name in the cluster's VPC, mount targets by zone.

These are `apply`'s (the deploy role's): nothing here writes IAM. The file system and the group
carry the tag ``airflow-gitops/project = <project>`` from their creation on, and the deploy
role may change only tagged file systems and groups in the cluster's VPC.
"""

from __future__ import annotations

import time

from airflow_gitops.aws.converge import (
    APPLY,
    Converger,
    Result,
    Step,
    document_diff,
    error_code,
)
from airflow_gitops.aws.errors import AwsError

NFS_PORT = 2049
TAG_KEY = "airflow-gitops/project"
WAIT_SECONDS = 300
# EFS meters an empty file system at 6 KiB; more than that means files were written to it.
EMPTY_FS_BYTES = 6144


def cluster_network(ctx) -> tuple[str, list[str], str]:
    """(VPC id, subnet ids, cluster security group id) of the EKS cluster."""
    vpc = ctx.cluster().get("resourcesVpcConfig") or {}
    name = ctx.stack["eks"]["cluster_name"]
    if not vpc.get("clusterSecurityGroupId") or not vpc.get("subnetIds"):
        raise AwsError(
            f"eks cluster {name}: DescribeCluster shows no cluster security group or "
            "subnets; the EFS mount targets need both (EKS 1.14+ clusters have them)"
        )
    return vpc.get("vpcId", ""), sorted(vpc["subnetIds"]), vpc["clusterSecurityGroupId"]


def security_group_name(ctx) -> str:
    return f"{ctx.stack['dags']['efs']['creation_token']}-mount-targets"


def project_tags(ctx) -> list[dict]:
    return [{"Key": TAG_KEY, "Value": ctx.stack["project"]}]


class EfsFileSystem(Converger):
    kind = "efs file system"
    owner = APPLY

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        efs = ctx.client("efs")
        settings = ctx.stack["dags"]["efs"]
        token = settings["creation_token"]
        mode = settings.get("throughput_mode", "elastic")
        found = efs.describe_file_systems(CreationToken=token)["FileSystems"]
        if not found:

            def create():
                fs = efs.create_file_system(
                    CreationToken=token,
                    Encrypted=True,
                    PerformanceMode="generalPurpose",
                    ThroughputMode=mode,
                    Tags=project_tags(ctx),
                )
                ctx.found["efs_id"] = fs["FileSystemId"]
                self._wait_available(ctx, fs["FileSystemId"])

            return False, [(f"encrypted, {mode} throughput", create)]
        fs = found[0]
        ctx.found["efs_id"] = fs["FileSystemId"]
        if not fs.get("Encrypted"):
            raise AwsError(
                f"{self.label}: {fs['FileSystemId']} is not encrypted and EFS cannot encrypt in "
                "place; copy the DAGs off, delete it, and run `make apply` to make an encrypted one"
            )
        if fs.get("LifeCycleState") not in ("available", "creating", "updating"):
            raise AwsError(
                f"{self.label}: {fs['FileSystemId']} is {fs.get('LifeCycleState')}; "
                "wait for it to go, then run again"
            )
        steps: list[Step] = []
        tags = {t["Key"]: t["Value"] for t in fs.get("Tags", [])}
        if tags.get(TAG_KEY) != ctx.stack["project"]:
            steps.append(
                (
                    f"tag {TAG_KEY}",
                    lambda: efs.tag_resource(ResourceId=fs["FileSystemId"], Tags=project_tags(ctx)),
                )
            )
        if fs.get("ThroughputMode") != mode:
            steps.append(
                (
                    f"throughput mode {fs.get('ThroughputMode')} -> {mode}",
                    lambda: efs.update_file_system(
                        FileSystemId=fs["FileSystemId"], ThroughputMode=mode
                    ),
                )
            )
        if fs.get("LifeCycleState") == "creating" and not ctx.dry_run:
            self._wait_available(ctx, fs["FileSystemId"])
        return True, steps

    def removal(self, ctx) -> list[Step]:
        efs = ctx.client("efs")
        found = efs.describe_file_systems(CreationToken=self.name)["FileSystems"]
        if not found:
            return []
        fs = found[0]
        size = (fs.get("SizeInBytes") or {}).get("Value", 0)
        if size > EMPTY_FS_BYTES and not ctx.delete_data:
            raise AwsError(
                f"{self.label}: {fs['FileSystemId']} holds {size} bytes (the "
                "published DAGs); copy what you need, then run `make destroy "
                "DELETE_DATA=yes`"
            )
        return [
            (fs["FileSystemId"], lambda: efs.delete_file_system(FileSystemId=fs["FileSystemId"]))
        ]

    def _wait_available(self, ctx, fs_id: str) -> None:
        """Mount targets can only be made on an available file system (usually seconds)."""
        efs = ctx.client("efs")
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            fs = efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"][0]
            if fs["LifeCycleState"] == "available":
                return
            if time.monotonic() > deadline:
                raise AwsError(
                    f"{self.label}: {fs_id} still {fs['LifeCycleState']} after "
                    f"{WAIT_SECONDS}s; run `make apply` again later"
                )
            ctx.sleep(5)


class MountTargetSecurityGroup(Converger):
    """A security group for the mount targets, with one rule: NFS from the cluster's group."""

    kind = "ec2 security group"
    owner = APPLY

    def converge(self, ctx) -> list[Result]:
        ec2 = ctx.client("ec2")
        vpc_id, _, cluster_sg = cluster_network(ctx)
        self.name = security_group_name(ctx)
        groups = ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [self.name]},
                {"Name": "vpc-id", "Values": [vpc_id]},
            ]
        )["SecurityGroups"]
        group = groups[0] if groups else None
        if group:
            ctx.found["efs_sg"] = group["GroupId"]

        def create():
            created = ec2.create_security_group(
                GroupName=self.name,
                VpcId=vpc_id,
                Description=f"NFS from EKS cluster to EFS {ctx.stack['dags']['efs']['creation_token']}",
                TagSpecifications=[{"ResourceType": "security-group", "Tags": project_tags(ctx)}],
            )
            ctx.found["efs_sg"] = created["GroupId"]

        group_result = self.finish(
            ctx, group is not None, [] if group else [(f"in {vpc_id}", create)]
        )

        def has_rule(permission) -> bool:
            return (
                permission.get("IpProtocol") == "tcp"
                and permission.get("FromPort", 0) <= NFS_PORT <= permission.get("ToPort", -1)
                and any(
                    p.get("GroupId") == cluster_sg for p in permission.get("UserIdGroupPairs", [])
                )
            )

        ours = {
            "IpProtocol": "tcp",
            "FromPort": NFS_PORT,
            "ToPort": NFS_PORT,
            "UserIdGroupPairs": [
                {"GroupId": cluster_sg, "Description": "EKS cluster security group"}
            ],
        }
        current = group.get("IpPermissions", []) if group else []
        # Exactly our rule stays; any other ingress (0.0.0.0/0, another group or port, or ours
        # sharing an entry with other sources) is not ours and is revoked.
        exact = any(has_rule(p) and not _wider_than_ours(p, cluster_sg) for p in current)
        extra = [p for p in current if not has_rule(p) or _wider_than_ours(p, cluster_sg)]
        rule_steps: list[Step] = []
        for permission in extra:
            rule_steps.append(
                (
                    f"revoke {_describe(permission)} (not ours)",
                    lambda permission=permission: ec2.revoke_security_group_ingress(
                        GroupId=ctx.found["efs_sg"], IpPermissions=[_revocable(permission)]
                    ),
                )
            )
        if not exact:
            rule_steps.append(
                (
                    f"tcp {NFS_PORT} from {cluster_sg}",
                    lambda: ec2.authorize_security_group_ingress(
                        GroupId=ctx.found["efs_sg"], IpPermissions=[ours]
                    ),
                )
            )
        rule_exists = bool(current)
        diff = (
            document_diff(
                f"ingress of {self.name}",
                {"IpPermissions": [_describe(p) for p in current]},
                {"IpPermissions": [_describe(ours)]},
            )
            if rule_steps and group
            else []
        )
        rule = self.finish(
            ctx, bool(group) and rule_exists, rule_steps, name=f"{self.name} ingress", diff=diff
        )
        rule.kind = "ec2 ingress rules"
        return [group_result, rule]

    def removal(self, ctx) -> list[Step]:
        ec2 = ctx.client("ec2")
        vpc_id, _, _ = cluster_network(ctx)
        groups = ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [self.name]},
                {"Name": "vpc-id", "Values": [vpc_id]},
            ]
        )["SecurityGroups"]

        def delete(group_id: str) -> None:
            # The mount targets' network interfaces can outlive them by a little while.
            from botocore.exceptions import ClientError

            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                try:
                    ec2.delete_security_group(GroupId=group_id)
                    return
                except ClientError as exc:
                    if error_code(exc) != "DependencyViolation" or time.monotonic() > deadline:
                        raise
                ctx.sleep(5)

        return [
            (group["GroupId"], lambda group=group: delete(group["GroupId"])) for group in groups
        ]


def _describe(permission: dict) -> str:
    sources = (
        [p.get("GroupId") for p in permission.get("UserIdGroupPairs", [])]
        + [r.get("CidrIp") for r in permission.get("IpRanges", [])]
        + [r.get("CidrIpv6") for r in permission.get("Ipv6Ranges", [])]
        + [r.get("PrefixListId") for r in permission.get("PrefixListIds", [])]
    )
    ports = (
        f"{permission.get('FromPort')}-{permission.get('ToPort')}"
        if permission.get("FromPort") != permission.get("ToPort")
        else str(permission.get("FromPort"))
    )
    return f"{permission.get('IpProtocol')} {ports} from {', '.join(map(str, sources))}"


def _wider_than_ours(permission: dict, cluster_sg: str) -> bool:
    """Our NFS rule, but sharing its entry with other sources (AWS groups them by port)."""
    others = [p for p in permission.get("UserIdGroupPairs", []) if p.get("GroupId") != cluster_sg]
    return bool(
        others
        or permission.get("IpRanges")
        or permission.get("Ipv6Ranges")
        or permission.get("PrefixListIds")
    ) or (permission.get("FromPort"), permission.get("ToPort")) != (NFS_PORT, NFS_PORT)


def _revocable(permission: dict) -> dict:
    """A described permission in the shape RevokeSecurityGroupIngress takes."""
    keep = ("IpProtocol", "FromPort", "ToPort", "IpRanges", "Ipv6Ranges", "PrefixListIds")
    out = {k: v for k, v in permission.items() if k in keep and v not in ([], None)}
    pairs = [{"GroupId": p["GroupId"]} for p in permission.get("UserIdGroupPairs", [])]
    if pairs:
        out["UserIdGroupPairs"] = pairs
    return out


class MountTargets(Converger):
    """One mount target per availability zone of the cluster's subnets.

    EFS allows one mount target per zone, and a pod reaches any mount target in its own zone,
    so the first cluster subnet (by id) of each zone gets it. A zone that already has one (in
    any subnet) is fine as it is, provided our security group is on it.
    """

    kind = "efs mount target"
    owner = APPLY

    def converge(self, ctx) -> list[Result]:
        efs, ec2 = ctx.client("efs"), ctx.client("ec2")
        _, subnets, _ = cluster_network(ctx)
        token = ctx.stack["dags"]["efs"]["creation_token"]
        zones: dict[str, str] = {}
        for subnet in sorted(
            ec2.describe_subnets(SubnetIds=subnets)["Subnets"], key=lambda s: s["SubnetId"]
        ):
            zones.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
        fs_id = ctx.found.get("efs_id")
        existing = {}
        if fs_id:
            pages = efs.get_paginator("describe_mount_targets").paginate(FileSystemId=fs_id)
            for page in pages:
                for target in page["MountTargets"]:
                    existing[target["AvailabilityZoneName"]] = target
        results = []
        for zone, subnet in sorted(zones.items()):
            target = existing.get(zone)
            steps: list[Step] = []
            if target is None:
                steps.append(
                    (
                        f"in {subnet}",
                        lambda subnet=subnet: efs.create_mount_target(
                            FileSystemId=ctx.found["efs_id"],
                            SubnetId=subnet,
                            SecurityGroups=[ctx.found["efs_sg"]],
                        ),
                    )
                )
            else:
                groups = efs.describe_mount_target_security_groups(
                    MountTargetId=target["MountTargetId"]
                )["SecurityGroups"]
                sg = ctx.found.get("efs_sg")
                if sg not in groups:
                    steps.append(
                        (
                            f"add security group {security_group_name(ctx)}",
                            lambda target=target, groups=groups: (
                                efs.modify_mount_target_security_groups(
                                    MountTargetId=target["MountTargetId"],
                                    SecurityGroups=[*groups, ctx.found["efs_sg"]],
                                )
                            ),
                        )
                    )
            results.append(self.finish(ctx, target is not None, steps, name=f"{token} in {zone}"))
        return results

    def removal(self, ctx) -> list[Step]:
        """Every mount target of our file system, then wait until EFS has let them go (the
        security group and the file system can only be deleted after that)."""
        efs = ctx.client("efs")
        found = efs.describe_file_systems(CreationToken=self.name)["FileSystems"]
        if not found:
            return []
        fs_id = found[0]["FileSystemId"]
        targets = [
            t["MountTargetId"]
            for page in efs.get_paginator("describe_mount_targets").paginate(FileSystemId=fs_id)
            for t in page["MountTargets"]
        ]
        if not targets:
            return []

        def delete() -> None:
            for target in targets:
                efs.delete_mount_target(MountTargetId=target)
            deadline = time.monotonic() + WAIT_SECONDS
            while efs.describe_mount_targets(FileSystemId=fs_id)["MountTargets"]:
                if time.monotonic() > deadline:
                    raise AwsError(
                        f"{self.label}: mount targets of {fs_id} still there after "
                        f"{WAIT_SECONDS}s; run `make destroy` again later"
                    )
                ctx.sleep(5)

        return [(f"{len(targets)} of {fs_id}", delete)]

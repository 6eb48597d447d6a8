"""efs mode: the encrypted file system, its mount targets, and the NFS path from the cluster.

Everything is found by a stable name, so an interrupted run is finished by the next one: the
file system by its creation token (stack.yaml dags.efs.creation_token, which is also EFS's own
idempotency key), the security group by name in the cluster's VPC, mount targets by zone.
"""

from __future__ import annotations

import time

from airflow_gitops.aws.converge import Converger, Result, Step
from airflow_gitops.aws.errors import AwsError

NFS_PORT = 2049
TAG_KEY = "airflow-gitops/project"
WAIT_SECONDS = 300


def cluster_network(ctx) -> tuple[str, list[str], str]:
    """(VPC id, subnet ids, cluster security group id) of the EKS cluster."""
    vpc = ctx.cluster().get("resourcesVpcConfig") or {}
    name = ctx.stack["eks"]["cluster_name"]
    if not vpc.get("clusterSecurityGroupId") or not vpc.get("subnetIds"):
        raise AwsError(f"eks cluster {name}: DescribeCluster shows no cluster security group or "
                       "subnets; the EFS mount targets need both (EKS 1.14+ clusters have them)")
    return vpc.get("vpcId", ""), sorted(vpc["subnetIds"]), vpc["clusterSecurityGroupId"]


def security_group_name(ctx) -> str:
    return f"{ctx.stack['dags']['efs']['creation_token']}-mount-targets"


class EfsFileSystem(Converger):
    kind = "efs file system"

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        efs = ctx.client("efs")
        settings = ctx.stack["dags"]["efs"]
        token = settings["creation_token"]
        mode = settings.get("throughput_mode", "elastic")
        found = efs.describe_file_systems(CreationToken=token)["FileSystems"]
        if not found:
            def create():
                fs = efs.create_file_system(CreationToken=token, Encrypted=True,
                                            PerformanceMode="generalPurpose",
                                            ThroughputMode=mode)
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
            raise AwsError(f"{self.label}: {fs['FileSystemId']} is {fs.get('LifeCycleState')}; "
                           "wait for it to go, then run again")
        steps: list[Step] = []
        if fs.get("ThroughputMode") != mode:
            steps.append((f"throughput mode {fs.get('ThroughputMode')} -> {mode}",
                          lambda: efs.update_file_system(FileSystemId=fs["FileSystemId"],
                                                         ThroughputMode=mode)))
        if fs.get("LifeCycleState") == "creating" and not ctx.dry_run:
            self._wait_available(ctx, fs["FileSystemId"])
        return True, steps

    def _wait_available(self, ctx, fs_id: str) -> None:
        """Mount targets can only be made on an available file system (usually seconds)."""
        efs = ctx.client("efs")
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            fs = efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"][0]
            if fs["LifeCycleState"] == "available":
                return
            if time.monotonic() > deadline:
                raise AwsError(f"{self.label}: {fs_id} still {fs['LifeCycleState']} after "
                               f"{WAIT_SECONDS}s; run `make apply` again later")
            ctx.sleep(5)


class MountTargetSecurityGroup(Converger):
    """A security group for the mount targets, with one rule: NFS from the cluster's group."""

    kind = "ec2 security group"

    def converge(self, ctx) -> list[Result]:
        ec2 = ctx.client("ec2")
        vpc_id, _, cluster_sg = cluster_network(ctx)
        self.name = security_group_name(ctx)
        groups = ec2.describe_security_groups(Filters=[
            {"Name": "group-name", "Values": [self.name]},
            {"Name": "vpc-id", "Values": [vpc_id]},
        ])["SecurityGroups"]
        group = groups[0] if groups else None
        if group:
            ctx.found["efs_sg"] = group["GroupId"]

        def create():
            created = ec2.create_security_group(
                GroupName=self.name, VpcId=vpc_id,
                Description=f"NFS from EKS cluster to EFS {ctx.stack['dags']['efs']['creation_token']}",
                TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                    {"Key": "Name", "Value": self.name},
                    {"Key": TAG_KEY, "Value": ctx.stack["project"]}]}])
            ctx.found["efs_sg"] = created["GroupId"]

        group_result = self.finish(ctx, group is not None,
                                   [] if group else [(f"in {vpc_id}", create)])

        def has_rule(permission) -> bool:
            return (permission.get("IpProtocol") == "tcp"
                    and permission.get("FromPort", 0) <= NFS_PORT <= permission.get("ToPort", -1)
                    and any(p.get("GroupId") == cluster_sg
                            for p in permission.get("UserIdGroupPairs", [])))

        rule_exists = bool(group) and any(has_rule(p) for p in group.get("IpPermissions", []))
        rule_steps: list[Step] = [] if rule_exists else [(f"tcp {NFS_PORT} from {cluster_sg}",
            lambda: ec2.authorize_security_group_ingress(
                GroupId=ctx.found["efs_sg"],
                IpPermissions=[{"IpProtocol": "tcp", "FromPort": NFS_PORT, "ToPort": NFS_PORT,
                                "UserIdGroupPairs": [{
                                    "GroupId": cluster_sg,
                                    "Description": "EKS cluster security group"}]}]))]
        rule = self.finish(ctx, False, rule_steps, name=f"{self.name} nfs from cluster")
        rule.kind = "ec2 ingress rule"
        return [group_result, rule]


class MountTargets(Converger):
    """One mount target per availability zone of the cluster's subnets.

    EFS allows one mount target per zone, and a pod reaches any mount target in its own zone,
    so the first cluster subnet (by id) of each zone gets it. A zone that already has one (in
    any subnet) is fine as it is, provided our security group is on it.
    """

    kind = "efs mount target"

    def converge(self, ctx) -> list[Result]:
        efs, ec2 = ctx.client("efs"), ctx.client("ec2")
        _, subnets, _ = cluster_network(ctx)
        token = ctx.stack["dags"]["efs"]["creation_token"]
        zones: dict[str, str] = {}
        for subnet in sorted(ec2.describe_subnets(SubnetIds=subnets)["Subnets"],
                             key=lambda s: s["SubnetId"]):
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
                steps.append((f"in {subnet}", lambda subnet=subnet: efs.create_mount_target(
                    FileSystemId=ctx.found["efs_id"], SubnetId=subnet,
                    SecurityGroups=[ctx.found["efs_sg"]])))
            else:
                groups = efs.describe_mount_target_security_groups(
                    MountTargetId=target["MountTargetId"])["SecurityGroups"]
                sg = ctx.found.get("efs_sg")
                if sg not in groups:
                    steps.append((f"add security group {security_group_name(ctx)}",
                                  lambda target=target, groups=groups:
                                  efs.modify_mount_target_security_groups(
                                      MountTargetId=target["MountTargetId"],
                                      SecurityGroups=[*groups, ctx.found["efs_sg"]])))
            results.append(self.finish(ctx, target is not None, steps, name=f"{token} in {zone}"))
        return results

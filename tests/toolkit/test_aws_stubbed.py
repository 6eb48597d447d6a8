"""The calls moto 5.2.5 does not implement, checked with botocore's Stubber: exact requests,
in order, and nothing else. No server needed.

- EKS add-ons: DescribeAddon, CreateAddon, UpdateAddon (moto answers 404)
- EKS access entries: DescribeAccessEntry, CreateAccessEntry, ListAssociatedAccessPolicies,
  AssociateAccessPolicy (moto answers 404)
- EKS DisassociateAccessPolicy (drift: an extra access policy on a CI role's entry)
- IAM AddClientIDToOpenIDConnectProvider and EFS UpdateFileSystem, TagResource (update paths
  only: moto has the resources but not these operations)
"""

from __future__ import annotations

import boto3
import pytest
from aws_testkit import CLUSTER, stack_for
from botocore.stub import Stubber

from airflow_gitops.aws.command import ConvergeError
from airflow_gitops.aws.efs import EfsFileSystem
from airflow_gitops.aws.eks import (
    ADMIN_ACCESS_POLICY,
    EksAccess,
    EksAddon,
    PodIdentityAssociation,
)
from airflow_gitops.aws.iam import OidcProvider
from airflow_gitops.aws.errors import AwsError
from airflow_gitops.aws.session import AwsContext

ROLE = "arn:aws:iam::123456789012:role/airflow-gitops-efs-csi-driver"
DEPLOY = "arn:aws:iam::123456789012:role/airflow-gitops-deploy"
ADMIN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"
SCOPE = {"type": "namespace", "namespaces": ["airflow"]}


@pytest.fixture
def stubbed(monkeypatch):
    """(ctx, stubber): an AwsContext whose EKS client is stubbed; no endpoint is ever reached."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    target = boto3.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name="eu-west-1"
    )
    ctx = AwsContext(stack_for("efs"), ".", target, dry_run=False)
    client = ctx.client("eks")
    ctx._cluster = {"name": CLUSTER, "accessConfig": {"authenticationMode": "API_AND_CONFIG_MAP"}}
    with Stubber(client) as stubber:
        yield ctx, stubber
        stubber.assert_no_pending_responses()


def not_found(stubber, operation, params):
    stubber.add_client_error(
        operation, "ResourceNotFoundException", "not found", 404, expected_params=params
    )


def associated(*policies: dict) -> dict:
    """ListAssociatedAccessPolicies' answer for the deploy role's entry."""
    return {
        "clusterName": CLUSTER,
        "principalArn": DEPLOY,
        "associatedAccessPolicies": list(policies),
    }


def addon(role=ROLE):
    return {
        "addon": {
            "addonName": "aws-efs-csi-driver",
            "clusterName": CLUSTER,
            "status": "ACTIVE",
            "serviceAccountRoleArn": role,
        }
    }


def test_addon_created_with_the_csi_role(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "addonName": "aws-efs-csi-driver"}
    not_found(stub, "describe_addon", key)
    stub.add_response(
        "create_addon",
        addon(),
        {
            **key,
            "serviceAccountRoleArn": ROLE,
            "resolveConflicts": "OVERWRITE",
            "tags": {"airflow-gitops/project": "airflow-gitops"},
        },
    )
    [result] = EksAddon("aws-efs-csi-driver", "airflow-gitops-efs-csi-driver").converge(ctx)
    assert (result.action, result.kind) == ("create", "eks add-on")


def test_addon_with_another_role_is_updated_and_same_role_is_ok(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "addonName": "aws-efs-csi-driver"}
    stub.add_response("describe_addon", addon("arn:aws:iam::123456789012:role/old"), key)
    stub.add_response(
        "update_addon",
        {"update": {"id": "u1", "status": "InProgress"}},
        {**key, "serviceAccountRoleArn": ROLE, "resolveConflicts": "PRESERVE"},
    )
    stub.add_response("describe_addon", addon(), key)
    converger = EksAddon("aws-efs-csi-driver", "airflow-gitops-efs-csi-driver")
    assert converger.converge(ctx)[0].action == "update"
    assert converger.converge(ctx)[0].action == "ok"


def test_addon_plan_makes_no_mutating_call(stubbed):
    ctx, stub = stubbed
    ctx.dry_run = True
    not_found(stub, "describe_addon", {"clusterName": CLUSTER, "addonName": "aws-efs-csi-driver"})
    [result] = EksAddon("aws-efs-csi-driver", "airflow-gitops-efs-csi-driver").converge(ctx)
    assert result.action == "create"  # and the Stubber had no CreateAddon queued


def test_access_entry_and_namespace_scoped_admin_policy(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "principalArn": DEPLOY}
    not_found(stub, "describe_access_entry", key)
    stub.add_response(
        "create_access_entry",
        {"accessEntry": {"principalArn": DEPLOY}},
        {**key, "type": "STANDARD"},
    )
    stub.add_response(
        "associate_access_policy",
        {"clusterName": CLUSTER, "principalArn": DEPLOY},
        {**key, "policyArn": ADMIN, "accessScope": SCOPE},
    )
    entry, association = EksAccess("airflow-gitops-deploy", ADMIN_ACCESS_POLICY).converge(ctx)
    assert (entry.action, association.action) == ("create", "create")
    assert association.details == ["namespace airflow"]


def test_access_entry_is_created_with_the_deploy_group(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "principalArn": DEPLOY}
    not_found(stub, "describe_access_entry", key)
    stub.add_response(
        "create_access_entry",
        {"accessEntry": {"principalArn": DEPLOY}},
        {**key, "type": "STANDARD", "kubernetesGroups": ["airflow-gitops-deploy"]},
    )
    stub.add_response(
        "associate_access_policy", {}, {**key, "policyArn": ADMIN, "accessScope": SCOPE}
    )
    entry, _ = EksAccess(
        "airflow-gitops-deploy", ADMIN_ACCESS_POLICY, ("airflow-gitops-deploy",)
    ).converge(ctx)
    assert entry.action == "create" and entry.details == ["STANDARD, groups airflow-gitops-deploy"]


@pytest.mark.parametrize(
    "found",
    [[], ["airflow-gitops-deploy", "cluster-admins"], ["someone-elses"]],
    ids=["missing", "extra", "other"],
)
def test_access_entry_groups_other_than_ours_are_drift_set_back_exactly(stubbed, found):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "principalArn": DEPLOY}
    listed = associated({"policyArn": ADMIN, "accessScope": SCOPE})
    described = {"accessEntry": {"principalArn": DEPLOY, "kubernetesGroups": found}}
    converger = EksAccess("airflow-gitops-deploy", ADMIN_ACCESS_POLICY, ("airflow-gitops-deploy",))
    # plan: the drift and its diff, no call that changes anything (the Stubber has none queued)
    ctx.dry_run = True
    stub.add_response("describe_access_entry", described, key)
    stub.add_response("list_associated_access_policies", listed, key)
    entry, association = converger.converge(ctx)
    assert (entry.action, association.action) == ("update", "ok")
    ours = "airflow-gitops-deploy"
    removed = " ".join(line for line in entry.diff if line[:1] == "-" and line[:3] != "---")
    added = " ".join(line for line in entry.diff if line[:1] == "+" and line[:3] != "+++")
    assert all(group in removed for group in found if group != ours), entry.diff
    assert ours in added or ours in found, entry.diff
    # bootstrap: the entry gets exactly our group back
    ctx.dry_run = False
    stub.add_response("describe_access_entry", described, key)
    stub.add_response(
        "update_access_entry",
        {"accessEntry": {"principalArn": DEPLOY}},
        {**key, "kubernetesGroups": ["airflow-gitops-deploy"]},
    )
    stub.add_response("list_associated_access_policies", listed, key)
    assert [r.action for r in converger.converge(ctx)] == ["update", "ok"]


def test_deploy_role_entry_carries_the_stacks_group_and_others_none():
    from aws_testkit import stack_for

    from airflow_gitops.aws.resources import all_resources

    for source in ("s3-sync", "efs", "git-sync"):
        stack = stack_for(source)
        stack["eks"]["deploy_kubernetes_group"] = "team-a-deploy"
        entries = {
            c.name: c.kubernetes_groups for c in all_resources(stack) if isinstance(c, EksAccess)
        }
        assert entries.pop("airflow-gitops-deploy") == ["team-a-deploy"]
        assert all(groups == [] for groups in entries.values()), entries


def test_access_policy_with_cluster_scope_is_narrowed(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "principalArn": DEPLOY}
    stub.add_response("describe_access_entry", {"accessEntry": {"principalArn": DEPLOY}}, key)
    stub.add_response(
        "list_associated_access_policies",
        associated({"policyArn": ADMIN, "accessScope": {"type": "cluster"}}),
        key,
    )
    stub.add_response(
        "associate_access_policy", {}, {**key, "policyArn": ADMIN, "accessScope": SCOPE}
    )
    entry, association = EksAccess("airflow-gitops-deploy", ADMIN_ACCESS_POLICY).converge(ctx)
    assert (entry.action, association.action) == ("ok", "update")


def test_extra_access_policy_on_a_ci_role_is_removed(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "principalArn": DEPLOY}
    cluster_admin = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    stub.add_response("describe_access_entry", {"accessEntry": {"principalArn": DEPLOY}}, key)
    stub.add_response(
        "list_associated_access_policies",
        associated(
            {"policyArn": ADMIN, "accessScope": SCOPE},
            {"policyArn": cluster_admin, "accessScope": {"type": "cluster"}},
        ),
        key,
    )
    stub.add_response("disassociate_access_policy", {}, {**key, "policyArn": cluster_admin})
    entry, association = EksAccess("airflow-gitops-deploy", ADMIN_ACCESS_POLICY).converge(ctx)
    assert (entry.action, association.action) == ("ok", "update")
    assert association.details == ["disassociate AmazonEKSClusterAdminPolicy (not ours)"]
    assert '-  "AmazonEKSClusterAdminPolicy": {' in association.diff


def test_access_entry_in_place_is_ok(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "principalArn": DEPLOY}
    stub.add_response("describe_access_entry", {"accessEntry": {"principalArn": DEPLOY}}, key)
    stub.add_response(
        "list_associated_access_policies",
        associated({"policyArn": ADMIN, "accessScope": SCOPE}),
        key,
    )
    assert [
        r.action for r in EksAccess("airflow-gitops-deploy", ADMIN_ACCESS_POLICY).converge(ctx)
    ] == ["ok", "ok"]


def test_config_map_only_cluster_says_how_to_enable_access_entries(stubbed):
    ctx, _ = stubbed
    ctx._cluster["accessConfig"]["authenticationMode"] = "CONFIG_MAP"
    with pytest.raises(AwsError, match="authenticationMode=API_AND_CONFIG_MAP"):
        EksAccess("airflow-gitops-deploy", ADMIN_ACCESS_POLICY).converge(ctx)


def test_access_denied_on_create_addon_names_both_permissions(stubbed):
    from airflow_gitops.aws.errors import aws_call

    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "addonName": "aws-efs-csi-driver"}
    not_found(stub, "describe_addon", key)
    stub.add_client_error("create_addon", "AccessDeniedException", "not authorized", 403)
    converger = EksAddon("aws-efs-csi-driver", "airflow-gitops-efs-csi-driver")
    with pytest.raises(AwsError) as caught, aws_call(converger.label):
        converger.converge(ctx)
    assert str(caught.value).startswith(
        "eks add-on aws-efs-csi-driver: access denied for eks:CreateAddon, iam:PassRole"
    )
    assert not isinstance(caught.value, ConvergeError)


def stubbed_client(ctx, service):
    stubber = Stubber(ctx.client(service))
    stubber.activate()
    return stubber


def test_oidc_provider_without_sts_audience_gets_it_added(stubbed):
    ctx, _ = stubbed
    iam = stubbed_client(ctx, "iam")
    arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    iam.add_response(
        "get_open_id_connect_provider",
        {
            "Url": "token.actions.githubusercontent.com",
            "ClientIDList": ["other"],
            "ThumbprintList": ["a" * 40],
        },
        {"OpenIDConnectProviderArn": arn},
    )
    iam.add_response(
        "add_client_id_to_open_id_connect_provider",
        {},
        {"OpenIDConnectProviderArn": arn, "ClientID": "sts.amazonaws.com"},
    )
    [result] = OidcProvider("token.actions.githubusercontent.com").converge(ctx)
    assert (result.action, result.details) == ("update", ["add audience sts.amazonaws.com"])
    iam.assert_no_pending_responses()


def test_new_oidc_provider_is_created_without_thumbprint(stubbed):
    ctx, _ = stubbed
    iam = stubbed_client(ctx, "iam")
    iam.add_client_error("get_open_id_connect_provider", "NoSuchEntity", "no", 404)
    iam.add_response(
        "create_open_id_connect_provider",
        {"OpenIDConnectProviderArn": "arn:aws:iam::123456789012:oidc-provider/x"},
        {
            "Url": "https://token.actions.githubusercontent.com",
            "ClientIDList": ["sts.amazonaws.com"],  # no ThumbprintList: IAM handles it
            "Tags": [{"Key": "airflow-gitops/project", "Value": "airflow-gitops"}],
        },
    )
    assert OidcProvider("token.actions.githubusercontent.com").converge(ctx)[0].action == "create"
    iam.assert_no_pending_responses()


TAGS = [{"Key": "airflow-gitops/project", "Value": "airflow-gitops"}]


def file_system(mode, state="available", encrypted=True, tags=TAGS):
    return {
        "FileSystems": [
            {
                "OwnerId": "123456789012",
                "CreationToken": "airflow-gitops-dags",
                "FileSystemId": "fs-1",
                "CreationTime": "2026-01-01T00:00:00Z",
                "LifeCycleState": state,
                "NumberOfMountTargets": 0,
                "SizeInBytes": {"Value": 0},
                "PerformanceMode": "generalPurpose",
                "Encrypted": encrypted,
                "ThroughputMode": mode,
                "Tags": tags,
            }
        ]
    }


def test_untagged_file_system_gets_the_project_tag(stubbed):
    """The deploy role may change only file systems tagged for this project."""
    ctx, _ = stubbed
    efs = stubbed_client(ctx, "efs")
    efs.add_response(
        "describe_file_systems",
        file_system("elastic", tags=[]),
        {"CreationToken": "airflow-gitops-dags"},
    )
    efs.add_response("tag_resource", {}, {"ResourceId": "fs-1", "Tags": TAGS})
    [result] = EfsFileSystem("airflow-gitops-dags").converge(ctx)
    assert result.details == ["tag airflow-gitops/project"]
    efs.assert_no_pending_responses()


def test_efs_throughput_mode_follows_stack(stubbed):
    ctx, _ = stubbed
    efs = stubbed_client(ctx, "efs")
    efs.add_response(
        "describe_file_systems", file_system("bursting"), {"CreationToken": "airflow-gitops-dags"}
    )
    efs.add_response(
        "update_file_system",
        {**file_system("elastic")["FileSystems"][0]},
        {"FileSystemId": "fs-1", "ThroughputMode": "elastic"},
    )
    [result] = EfsFileSystem("airflow-gitops-dags").converge(ctx)
    assert (result.action, result.details) == ("update", ["throughput mode bursting -> elastic"])
    efs.assert_no_pending_responses()


def test_unencrypted_file_system_is_an_error_with_the_way_out(stubbed):
    ctx, _ = stubbed
    efs = stubbed_client(ctx, "efs")
    efs.add_response(
        "describe_file_systems",
        file_system("elastic", encrypted=False),
        {"CreationToken": "airflow-gitops-dags"},
    )
    with pytest.raises(AwsError, match="cannot encrypt in place"):
        EfsFileSystem("airflow-gitops-dags").converge(ctx)


def test_pod_identity_association_created_then_repointed(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "namespace": "airflow", "serviceAccount": "airflow-dag-reader"}
    role = "arn:aws:iam::123456789012:role/airflow-gitops-dag-reader"
    stub.add_response("list_pod_identity_associations", {"associations": []}, key)
    stub.add_response(
        "create_pod_identity_association",
        {"association": {}},
        {**key, "roleArn": role, "tags": {"airflow-gitops/project": "airflow-gitops"}},
    )
    converger = PodIdentityAssociation("airflow", "airflow-dag-reader", "airflow-gitops-dag-reader")
    assert converger.converge(ctx)[0].action == "create"
    stub.add_response(
        "list_pod_identity_associations", {"associations": [{**key, "associationId": "a-1"}]}, key
    )
    stub.add_response(
        "describe_pod_identity_association",
        {
            "association": {
                **key,
                "associationId": "a-1",
                "roleArn": "arn:aws:iam::123456789012:role/other",
            }
        },
        {"clusterName": CLUSTER, "associationId": "a-1"},
    )
    stub.add_response(
        "update_pod_identity_association",
        {"association": {}},
        {"clusterName": CLUSTER, "associationId": "a-1", "roleArn": role},
    )
    assert converger.converge(ctx)[0].action == "update"


def test_addon_without_a_role_for_pod_identity(stubbed):
    ctx, stub = stubbed
    key = {"clusterName": CLUSTER, "addonName": "eks-pod-identity-agent"}
    not_found(stub, "describe_addon", key)
    stub.add_response(
        "create_addon",
        {"addon": {}},
        {
            **key,
            "resolveConflicts": "OVERWRITE",
            "tags": {"airflow-gitops/project": "airflow-gitops"},
        },
    )
    [result] = EksAddon("eks-pod-identity-agent", None).converge(ctx)
    assert (result.action, result.details) == ("create", ["no IRSA role"])

"""The local AWS of `make local-aws` (and of these tests): moto with the EKS calls it lacks
answered by the one fake (airflow_gitops.local_eks), bucket policies evaluated as AWS does over
TLS, and answers that are no AWS error reported as one line."""

from __future__ import annotations

import json

import boto3
import pytest
from urllib.parse import urlencode
from aws_testkit import ACCOUNT, REGION, create_cluster
from botocore.exceptions import ClientError
from botocore.serialize import create_serializer

from airflow_gitops import local_eks
from airflow_gitops.aws.errors import AwsError, aws_call

PRINCIPAL = f"arn:aws:iam::{ACCOUNT}:role/deploy"
SCOPE = {"type": "namespace", "namespaces": ["airflow"]}
POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"


def client(server, service: str):
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.mark.parametrize("operation", sorted(local_eks.OPERATIONS))
def test_every_answered_operation_is_routed_from_the_request_botocore_sends(operation):
    """The HTTP routes come from botocore's model, so a handler is all a new call needs."""
    model = boto3.Session().client("eks", region_name=REGION).meta.service_model
    operation_model = model.operation_model(operation)
    params = {
        "clusterName": "data-platform",
        "principalArn": PRINCIPAL,
        "addonName": "aws-efs-csi-driver",
        "policyArn": POLICY,
        "accessScope": SCOPE,
        "serviceAccountRoleArn": f"arn:aws:iam::{ACCOUNT}:role/efs",
        "namespace": "airflow",
        "serviceAccount": "airflow-dag-reader",
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/dag-reader",
        "associationId": "a-1",
    }
    params = {k: v for k, v in params.items() if k in operation_model.input_shape.members}
    request = create_serializer("rest-json").serialize_to_request(params, operation_model)
    path, _, query = request["url_path"].partition("?")
    # botocore keeps query parameters apart; on the wire they follow the path
    query = "&".join(filter(None, [query, urlencode(request["query_string"], doseq=True)]))
    body = request["body"] if isinstance(request["body"], bytes) else request["body"].encode()
    assert local_eks.route(request["method"], path, query, body) == (operation, params)


def test_eks_extras_over_http_next_to_moto(aws):
    create_cluster(None)
    eks = client(aws, "eks")
    assert eks.describe_cluster(name="data-platform")["cluster"]["status"]  # moto's
    with pytest.raises(ClientError) as missing:
        eks.describe_access_entry(clusterName="data-platform", principalArn=PRINCIPAL)
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"

    eks.create_access_entry(clusterName="data-platform", principalArn=PRINCIPAL, type="STANDARD")
    with pytest.raises(ClientError) as twice:
        eks.create_access_entry(clusterName="data-platform", principalArn=PRINCIPAL)
    assert twice.value.response["Error"]["Code"] == "ResourceInUseException"
    eks.associate_access_policy(
        clusterName="data-platform", principalArn=PRINCIPAL, policyArn=POLICY, accessScope=SCOPE
    )
    listed = eks.list_associated_access_policies(
        clusterName="data-platform", principalArn=PRINCIPAL
    )
    assert listed["associatedAccessPolicies"] == [{"policyArn": POLICY, "accessScope": SCOPE}]

    eks.create_addon(
        clusterName="data-platform",
        addonName="aws-efs-csi-driver",
        serviceAccountRoleArn="arn:aws:iam::123456789012:role/a",
    )
    eks.update_addon(
        clusterName="data-platform",
        addonName="aws-efs-csi-driver",
        serviceAccountRoleArn="arn:aws:iam::123456789012:role/b",
    )
    addon = eks.describe_addon(clusterName="data-platform", addonName="aws-efs-csi-driver")
    assert addon["addon"]["serviceAccountRoleArn"].endswith("role/b")

    held = aws.state()
    assert [json.loads(e)["principalArn"] for e in held["entries"]] == [PRINCIPAL]
    assert held["answered"][0] == "DescribeAccessEntry"
    aws.reset()
    assert aws.state()["entries"] == []


def test_tls_only_bucket_policy_is_evaluated_as_aws_does(aws):
    """A Deny on SecureTransport=false (bootstrap's) never applies to AWS's HTTPS requests;
    a Deny whose condition holds still denies: the policy is evaluated, not switched off."""
    s3 = client(aws, "s3")

    def deny(bucket: str, secure: str) -> str:
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                        "Condition": {"Bool": {"aws:SecureTransport": secure}},
                    }
                ],
            }
        )

    outcome = {}
    for bucket, secure in (("tls-only", "false"), ("deny-all-tls", "true")):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_policy(Bucket=bucket, Policy=deny(bucket, secure))
        try:
            s3.put_object(Bucket=bucket, Key="k", Body=b"x")
            outcome[bucket] = "allowed"
        except ClientError as exc:
            outcome[bucket] = exc.response["ResponseMetadata"]["HTTPStatusCode"]
    assert outcome == {"tls-only": "allowed", "deny-all-tls": 403}


def test_an_answer_that_is_no_aws_error_is_one_line(aws):
    """moto lacks EKS insights (no handler here either) and answers with an HTML page."""
    with pytest.raises(AwsError) as caught, aws_call("eks insights"):
        client(aws, "eks").list_insights(clusterName="data-platform")
    message = str(caught.value)
    assert message == (
        "eks insights: ListInsights got HTTP 404 Not Found "
        "with a text/html body, not an AWS error; the endpoint does not answer this call as "
        "AWS does (AWS_ENDPOINT_URL?)"
    )

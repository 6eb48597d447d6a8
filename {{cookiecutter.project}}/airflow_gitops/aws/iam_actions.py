"""Which IAM actions each AWS operation the toolkit calls needs.

Most operations need the action of the same name in the service's IAM prefix. Those that do not
(S3's HeadBucket is authorised as s3:ListBucket, EFS's CreateMountTarget also needs EC2
network-interface actions, ...) are listed in ``EXCEPTIONS``. Error messages use this map to
name the missing permission, and the tests use it to check iam/deploy-role-policy.json against
the operations `apply` really makes.
"""

from __future__ import annotations

# botocore service name -> IAM action prefix, where they differ.
SERVICE_PREFIX = {"efs": "elasticfilesystem"}

# (service, operation) -> IAM actions, where not simply prefix:OperationName.
EXCEPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "HeadBucket"): ("s3:ListBucket",),
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "DeleteObjects"): ("s3:DeleteObject",),
    ("s3", "HeadObject"): ("s3:GetObject",),
    ("s3", "GetPublicAccessBlock"): ("s3:GetBucketPublicAccessBlock",),
    ("s3", "PutPublicAccessBlock"): ("s3:PutBucketPublicAccessBlock",),
    ("s3", "GetBucketEncryption"): ("s3:GetEncryptionConfiguration",),
    ("s3", "PutBucketEncryption"): ("s3:PutEncryptionConfiguration",),
    # EFS acts on the caller's behalf in EC2 when it makes a mount target's network interface.
    ("efs", "CreateMountTarget"): (
        "elasticfilesystem:CreateMountTarget",
        "ec2:DescribeSubnets",
        "ec2:DescribeNetworkInterfaces",
        "ec2:CreateNetworkInterface",
    ),
    ("efs", "ModifyMountTargetSecurityGroups"): (
        "elasticfilesystem:ModifyMountTargetSecurityGroups",
        "ec2:ModifyNetworkInterfaceAttribute",
    ),
    # Tags given at creation (TagSpecifications) are authorised as ec2:CreateTags too.
    ("ec2", "CreateSecurityGroup"): ("ec2:CreateSecurityGroup", "ec2:CreateTags"),
    # Handing a role to an add-on is passing it to EKS.
    ("eks", "CreateAddon"): ("eks:CreateAddon", "iam:PassRole"),
    ("eks", "UpdateAddon"): ("eks:UpdateAddon", "iam:PassRole"),
}

READ_PREFIXES = ("Describe", "Get", "List", "Head")


def iam_actions(service: str, operation: str) -> tuple[str, ...]:
    """IAM actions needed to call ``operation`` (botocore's name, e.g. "HeadBucket")."""
    if (service, operation) in EXCEPTIONS:
        return EXCEPTIONS[(service, operation)]
    return (f"{SERVICE_PREFIX.get(service, service)}:{operation}",)


def is_read_only(operation: str) -> bool:
    return operation.startswith(READ_PREFIXES)

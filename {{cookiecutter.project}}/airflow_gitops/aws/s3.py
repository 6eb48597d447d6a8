"""The DAG bucket (private, encrypted, versioned, reachable over TLS only) and the task-log
bucket (the same, unversioned, with its logs expiring).

Bootstrap's: their public access block, bucket policy and lifecycle are access control and
retention, which no CI role may write. The bucket policy is ours alone: any other statement (a
cross-account grant, say) is drift that `plan` shows as a diff and `bootstrap` removes.
"""

from __future__ import annotations

from airflow_gitops.aws.converge import Converger, Step, canonical, error_code, to_json
from airflow_gitops.aws.errors import AwsError

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
TLS_ONLY_SID = "DenyInsecureTransport"


def tls_only_statement(bucket_arn: str) -> dict:
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


class DagBucket(Converger):
    kind = "s3 bucket"
    # Where stack.yaml names it (for "choose another ..." errors), and what it holds.
    stack_field = "dags.bucket"
    contents = "DAGs and their history"
    versioned = True

    def extra_steps(self, s3, ctx, read) -> list[Step]:
        """Settings a kind of bucket adds (reads through ``read``, as ``steps`` does)."""
        return []

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        from botocore.exceptions import ClientError

        s3 = ctx.client("s3")
        bucket = self.name
        bucket_arn = f"arn:{ctx.partition}:s3:::{bucket}"
        exists = self._exists(s3, ctx)
        steps: list[Step] = []
        if not exists:
            steps.append(("new, in " + ctx.region, lambda: self._create(s3, ctx)))

        def read(call, missing_codes, **kwargs):
            if not exists:
                return None
            try:
                return call(Bucket=bucket, ExpectedBucketOwner=ctx.account, **kwargs)
            except ClientError as exc:
                if error_code(exc) in missing_codes:
                    return None
                raise

        pab = read(s3.get_public_access_block, {"NoSuchPublicAccessBlockConfiguration"})
        if not pab or pab["PublicAccessBlockConfiguration"] != PUBLIC_ACCESS_BLOCK:
            steps.append(
                (
                    "public access block",
                    lambda: s3.put_public_access_block(
                        Bucket=bucket,
                        ExpectedBucketOwner=ctx.account,
                        PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK,
                    ),
                )
            )

        encryption = read(
            s3.get_bucket_encryption, {"ServerSideEncryptionConfigurationNotFoundError"}
        )
        rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        # Any default encryption is kept (a KMS key someone chose is stronger than SSE-S3).
        if not any(r.get("ApplyServerSideEncryptionByDefault") for r in rules):
            steps.append(
                (
                    "default encryption SSE-S3",
                    lambda: s3.put_bucket_encryption(
                        Bucket=bucket,
                        ExpectedBucketOwner=ctx.account,
                        ServerSideEncryptionConfiguration={
                            "Rules": [
                                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                            ]
                        },
                    ),
                )
            )

        versioning = read(s3.get_bucket_versioning, set()) if self.versioned else None
        if self.versioned and (not versioning or versioning.get("Status") != "Enabled"):
            steps.append(
                (
                    "versioning",
                    lambda: s3.put_bucket_versioning(
                        Bucket=bucket,
                        ExpectedBucketOwner=ctx.account,
                        VersioningConfiguration={"Status": "Enabled"},
                    ),
                )
            )

        policy = read(s3.get_bucket_policy, {"NoSuchBucketPolicy"})
        current = self._normalised(policy)
        wanted = bucket_policy(bucket_arn)
        if current is None or canonical(current) != canonical(wanted):
            self.show_diff(f"bucket policy of {bucket}", current, wanted)
            steps.append(
                (
                    "TLS-only bucket policy",
                    lambda: s3.put_bucket_policy(
                        Bucket=bucket, ExpectedBucketOwner=ctx.account, Policy=to_json(wanted)
                    ),
                )
            )
        steps += self.extra_steps(s3, ctx, read)
        return exists, steps

    def removal(self, ctx) -> list[Step]:
        """A bucket with any object version is refused unless ``ctx.delete_data``."""
        s3 = ctx.client("s3")
        if not self._exists(s3, ctx):
            return []
        versions = []
        for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=self.name, ExpectedBucketOwner=ctx.account
        ):
            versions += [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
        if versions and not ctx.delete_data:
            raise AwsError(
                f"{self.label}: holds {len(versions)} object versions "
                f"({self.contents}); copy what you need, then run `make destroy "
                "DELETE_DATA=yes`"
            )

        def delete() -> None:
            for start in range(0, len(versions), 1000):
                s3.delete_objects(
                    Bucket=self.name,
                    ExpectedBucketOwner=ctx.account,
                    Delete={"Objects": versions[start : start + 1000], "Quiet": True},
                )
            s3.delete_bucket(Bucket=self.name, ExpectedBucketOwner=ctx.account)

        detail = f"and its {len(versions)} object versions" if versions else "empty"
        return [(detail, delete)]

    def _exists(self, s3, ctx) -> bool:
        from botocore.exceptions import ClientError

        try:
            s3.head_bucket(Bucket=self.name, ExpectedBucketOwner=ctx.account)
            return True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return False
            if status == 403:
                raise AwsError(
                    f"{self.label}: exists but is not this account's or not readable (403 on "
                    f"HeadBucket = s3:ListBucket, expected owner {ctx.account}); if another "
                    f"account owns the name, choose another {self.stack_field} in stack.yaml"
                ) from None
            if status == 301:
                region = (
                    exc.response.get("ResponseMetadata", {})
                    .get("HTTPHeaders", {})
                    .get("x-amz-bucket-region", "another region")
                )
                raise AwsError(
                    f"{self.label}: exists in {region}, not {ctx.region}; choose "
                    f"another {self.stack_field} in stack.yaml"
                ) from None
            raise

    def _create(self, s3, ctx) -> None:
        from botocore.exceptions import ClientError

        kwargs = {}
        if ctx.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
        try:
            s3.create_bucket(Bucket=self.name, **kwargs)
        except ClientError as exc:
            if error_code(exc) == "BucketAlreadyOwnedByYou":
                return  # an earlier, interrupted run made it
            if error_code(exc) == "BucketAlreadyExists":
                raise AwsError(
                    f"{self.label}: the name is taken by another AWS account (BucketAlreadyExists;"
                    f" S3 names are global); choose another {self.stack_field} in stack.yaml and bake "
                    "or edit iam/ to match"
                ) from None
            raise

    @staticmethod
    def _normalised(current) -> dict | None:
        """The bucket policy as a dict, with S3's {"AWS": "*"} read as "*" (both mean anyone)."""
        import json

        if not current:
            return None
        document = json.loads(current["Policy"])
        statements = document.get("Statement", [])
        statements = statements if isinstance(statements, list) else [statements]
        document["Statement"] = [
            {**s, "Principal": "*"} if s.get("Principal") == {"AWS": "*"} else s for s in statements
        ]
        return document


def bucket_policy(bucket_arn: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [tls_only_statement(bucket_arn)]}


def log_lifecycle(prefix: str, days: int) -> dict:
    """Task logs under ``prefix`` expire ``days`` after they are written; an upload that died
    half-way (a multipart log upload of a killed pod) is cleaned up after a day."""
    return {
        "Rules": [
            {
                "ID": "ExpireTaskLogs",
                "Status": "Enabled",
                "Filter": {"Prefix": f"{prefix}/"},
                "Expiration": {"Days": days},
            },
            {
                "ID": "AbortIncompleteUploads",
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
        ]
    }


class LogBucket(DagBucket):
    """Task logs (stack.yaml logs.*): a bucket of their own, so no pod that writes logs can
    write DAGs. Unversioned (a log is rewritten whole on every upload; old versions would only
    outlive the retention), with the lifecycle of ``log_lifecycle``."""

    stack_field = "logs.bucket"
    contents = "task logs"
    versioned = False

    def __init__(self, name: str, prefix: str, retention_days: int) -> None:
        super().__init__(name)
        self.lifecycle = log_lifecycle(prefix.strip("/"), int(retention_days))

    def extra_steps(self, s3, ctx, read) -> list[Step]:
        current = read(s3.get_bucket_lifecycle_configuration, {"NoSuchLifecycleConfiguration"})
        rules = (current or {}).get("Rules")
        wanted = self.lifecycle
        if rules is None or canonical(_comparable(rules)) != canonical(wanted["Rules"]):
            self.show_diff(f"lifecycle of {self.name}", current and {"Rules": rules}, wanted)
            return [
                (
                    f"lifecycle: logs expire after {wanted['Rules'][0]['Expiration']['Days']} days",
                    lambda: s3.put_bucket_lifecycle_configuration(
                        Bucket=self.name,
                        ExpectedBucketOwner=ctx.account,
                        LifecycleConfiguration=wanted,
                    ),
                )
            ]
        return []


def _comparable(rules: list[dict]) -> list[dict]:
    """Rules as S3 returns them, without the fields it adds (an empty Prefix may come back as
    a Filter of its own or be dropped) that we never set."""
    keep = ("ID", "Status", "Filter", "Expiration", "AbortIncompleteMultipartUpload")
    out = []
    for rule in rules:
        rule = {k: v for k, v in rule.items() if k in keep}
        if "Filter" not in rule or rule["Filter"] == {}:
            rule["Filter"] = {"Prefix": ""}
        out.append(rule)
    return out

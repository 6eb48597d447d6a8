"""The DAG bucket: private, encrypted, versioned, reachable over TLS only.

Bootstrap's: its public access block and bucket policy are access control, which no CI role
may write. The bucket policy is ours alone: any other statement (a cross-account grant, say) is
drift that `plan` shows as a diff and `bootstrap` removes.
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
            steps.append(("public access block", lambda: s3.put_public_access_block(
                Bucket=bucket, ExpectedBucketOwner=ctx.account,
                PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)))

        encryption = read(s3.get_bucket_encryption,
                          {"ServerSideEncryptionConfigurationNotFoundError"})
        rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        # Any default encryption is kept (a KMS key someone chose is stronger than SSE-S3).
        if not any(r.get("ApplyServerSideEncryptionByDefault") for r in rules):
            steps.append(("default encryption SSE-S3", lambda: s3.put_bucket_encryption(
                Bucket=bucket, ExpectedBucketOwner=ctx.account,
                ServerSideEncryptionConfiguration={"Rules": [
                    {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})))

        versioning = read(s3.get_bucket_versioning, set())
        if not versioning or versioning.get("Status") != "Enabled":
            steps.append(("versioning", lambda: s3.put_bucket_versioning(
                Bucket=bucket, ExpectedBucketOwner=ctx.account,
                VersioningConfiguration={"Status": "Enabled"})))

        policy = read(s3.get_bucket_policy, {"NoSuchBucketPolicy"})
        current = self._normalised(policy)
        wanted = bucket_policy(bucket_arn)
        if current is None or canonical(current) != canonical(wanted):
            self.show_diff(f"bucket policy of {bucket}", current, wanted)
            steps.append(("TLS-only bucket policy", lambda: s3.put_bucket_policy(
                Bucket=bucket, ExpectedBucketOwner=ctx.account, Policy=to_json(wanted))))
        return exists, steps

    def removal(self, ctx) -> list[Step]:
        """A bucket with any object version is refused unless ``ctx.delete_data``."""
        s3 = ctx.client("s3")
        if not self._exists(s3, ctx):
            return []
        versions = []
        for page in s3.get_paginator("list_object_versions").paginate(
                Bucket=self.name, ExpectedBucketOwner=ctx.account):
            versions += [{"Key": v["Key"], "VersionId": v["VersionId"]}
                         for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if versions and not ctx.delete_data:
            raise AwsError(f"{self.label}: holds {len(versions)} object versions (DAGs and "
                           "their history); copy what you need, then run `make destroy "
                           "DELETE_DATA=yes`")

        def delete() -> None:
            for start in range(0, len(versions), 1000):
                s3.delete_objects(Bucket=self.name, ExpectedBucketOwner=ctx.account,
                                  Delete={"Objects": versions[start:start + 1000],
                                          "Quiet": True})
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
                    "account owns the name, choose another dags.bucket in stack.yaml"
                ) from None
            if status == 301:
                region = exc.response.get("ResponseMetadata", {}).get(
                    "HTTPHeaders", {}).get("x-amz-bucket-region", "another region")
                raise AwsError(f"{self.label}: exists in {region}, not {ctx.region}; choose "
                               "another dags.bucket in stack.yaml") from None
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
                    " S3 names are global); choose another dags.bucket in stack.yaml and bake "
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
        document["Statement"] = [{**s, "Principal": "*"} if s.get("Principal") == {"AWS": "*"}
                                 else s for s in statements]
        return document


def bucket_policy(bucket_arn: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [tls_only_statement(bucket_arn)]}

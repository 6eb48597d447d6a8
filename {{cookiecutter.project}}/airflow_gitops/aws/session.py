"""The one way the toolkit talks to AWS: clients from an injectable boto3 session.

Endpoints are boto3's own business: since botocore 1.31 it reads ``AWS_ENDPOINT_URL`` (and
``AWS_ENDPOINT_URL_<SERVICE>``) itself, so pointing the toolkit at moto or at a VPC endpoint
needs no code here. Retries use botocore's *standard* mode (exponential backoff with jitter,
retries throttling and transient errors, 3 attempts unless AWS_MAX_ATTEMPTS says otherwise).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from airflow_gitops.errors import ToolkitError

RETRY_CONFIG: dict[str, Any] = {"mode": "standard"}


def client_config():
    from botocore.config import Config

    retries = dict(RETRY_CONFIG)
    if os.environ.get("AWS_MAX_ATTEMPTS", "").isdigit():
        retries["total_max_attempts"] = int(os.environ["AWS_MAX_ATTEMPTS"])
    return Config(retries=retries, user_agent_extra="airflow-gitops")


def new_session(region: str):
    import boto3

    return boto3.Session(region_name=region)


class AwsContext:
    """What a converger needs: clients, the stack's facts, and what earlier convergers found.

    ``dry_run`` is True for ``plan``: convergers then read and report, and never call a
    mutating operation. ``found`` carries identifiers between convergers (a file system id,
    a security group id) so that later ones need not look them up again.
    """

    def __init__(
        self, stack: dict, root, session, dry_run: bool, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.stack = stack
        self.root = root
        self.session = session
        self.dry_run = dry_run
        self.sleep = sleep
        self.region: str = stack["aws"]["region"]
        self.account: str = str(stack["aws"]["account_id"])
        self.found: dict[str, Any] = {}
        # `destroy --delete-data`: a bucket with objects or a file system with files may go.
        self.delete_data = False
        self._clients: dict[str, Any] = {}
        self._cluster: dict | None = None
        self._config = client_config()

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service, region_name=self.region, config=self._config
            )
        return self._clients[service]

    @property
    def partition(self) -> str:
        return self.session.get_partition_for_region(self.region)

    def arn(self, service: str, resource: str, region: str = "", account: str | None = None) -> str:
        account = self.account if account is None else account
        return f"arn:{self.partition}:{service}:{region}:{account}:{resource}"

    def cluster(self) -> dict:
        """eks:DescribeCluster of stack.yaml's cluster, once per run."""
        if self._cluster is None:
            from airflow_gitops.aws.errors import aws_call

            from botocore.exceptions import ClientError

            from airflow_gitops.aws.errors import AwsError

            name = self.stack["eks"]["cluster_name"]
            with aws_call(f"eks cluster {name}"):
                try:
                    self._cluster = self.client("eks").describe_cluster(name=name)["cluster"]
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                        raise
                    raise AwsError(
                        f"eks cluster {name}: not found in account {self.account}, region "
                        f"{self.region} (ResourceNotFoundException); check eks.cluster_name and "
                        "aws.region in stack.yaml, and that the cluster exists"
                    ) from None
        return self._cluster

    def oidc_issuer(self) -> str:
        """The cluster's OIDC issuer as IAM names it: host/path, without https://."""
        issuer = (self.cluster().get("identity") or {}).get("oidc", {}).get("issuer")
        if not issuer:
            raise ToolkitError(
                f"eks cluster {self.stack['eks']['cluster_name']}: DescribeCluster returned no "
                "OIDC issuer; this cluster cannot use IAM roles for service accounts"
            )
        return issuer.removeprefix("https://").rstrip("/")

    def cluster_vpc(self) -> str:
        """The cluster's VPC id: the ec2:Vpc the deploy role's EC2 permissions are bound to."""
        vpc = (self.cluster().get("resourcesVpcConfig") or {}).get("vpcId")
        if not vpc:
            raise ToolkitError(
                f"eks cluster {self.stack['eks']['cluster_name']}: DescribeCluster returned no "
                "VPC id; the EFS network permissions are bound to the cluster's VPC"
            )
        return vpc

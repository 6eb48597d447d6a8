"""IAM: managed policies from iam/*.json, OIDC identity providers, and roles that use them."""

from __future__ import annotations

import json

from airflow_gitops.aws.converge import (
    Converger,
    Step,
    as_document,
    error_code,
    load_document,
    same_document,
    to_json,
)

# Tag on what this repo creates where the resource may be shared (OIDC providers): `destroy`
# removes only what carries it.
PROJECT_TAG = "airflow-gitops/project"
# IAM keeps at most five versions of a managed policy.
MAX_POLICY_VERSIONS = 5
STS_AUDIENCE = "sts.amazonaws.com"


def policy_name(stack: dict, filename: str) -> str:
    """The IAM name of the managed policy made from iam/<filename>: the project, then the file.

    e.g. iam/dag-read-policy.json -> airflow-gitops-dag-read-policy. One rule, so the name is
    never written down twice.
    """
    return f"{stack['project']}-{filename.removesuffix('.json')}"


def policy_arn(ctx, filename: str) -> str:
    return ctx.arn("iam", f"policy/{policy_name(ctx.stack, filename)}")


def role_arn(ctx, role: str) -> str:
    return ctx.arn("iam", f"role/{role}")


def _missing(exc) -> bool:
    return error_code(exc) == "NoSuchEntity"


class ManagedPolicy(Converger):
    """A customer managed policy whose default version is iam/<filename>.

    A changed document becomes a new default version (so roles pick it up at once and the old
    one stays for a rollback); at IAM's limit of five versions the oldest non-default one goes
    first. `plan` shows the change as a diff of the document.
    """

    kind = "iam policy"

    def __init__(self, filename: str, stack: dict) -> None:
        super().__init__(policy_name(stack, filename))
        self.filename = filename

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        from botocore.exceptions import ClientError

        iam = ctx.client("iam")
        arn = policy_arn(ctx, self.filename)
        document = load_document(ctx, self.filename)
        try:
            policy = iam.get_policy(PolicyArn=arn)["Policy"]
        except ClientError as exc:
            if not _missing(exc):
                raise
            self.show_diff(f"iam/{self.filename}", None, document)
            return False, [
                (
                    f"from iam/{self.filename}",
                    lambda: iam.create_policy(
                        PolicyName=self.name,
                        PolicyDocument=to_json(document),
                        Description=f"airflow-gitops: iam/{self.filename}",
                    ),
                )
            ]
        current = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
        current_document = as_document(current["PolicyVersion"]["Document"])
        if same_document(current_document, document):
            return True, []
        self.show_diff(f"policy {self.name}", current_document, document)
        steps: list[Step] = []
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        if len(versions) >= MAX_POLICY_VERSIONS:
            oldest = min(
                (v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"]
            )
            steps.append(
                (
                    f"delete oldest version {oldest['VersionId']} (limit of five)",
                    lambda: iam.delete_policy_version(PolicyArn=arn, VersionId=oldest["VersionId"]),
                )
            )
        steps.append(
            (
                f"new default version from iam/{self.filename}",
                lambda: iam.create_policy_version(
                    PolicyArn=arn, PolicyDocument=to_json(document), SetAsDefault=True
                ),
            )
        )
        return True, steps

    def removal(self, ctx) -> list[Step]:
        from botocore.exceptions import ClientError

        iam = ctx.client("iam")
        arn = policy_arn(ctx, self.filename)
        try:
            iam.get_policy(PolicyArn=arn)
        except ClientError as exc:
            if not _missing(exc):
                raise
            return []

        def delete() -> None:
            # Detach first (our roles are usually gone already), then old versions, then it.
            for page in iam.get_paginator("list_entities_for_policy").paginate(PolicyArn=arn):
                for role in page["PolicyRoles"]:
                    iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=arn)
                for user in page["PolicyUsers"]:
                    iam.detach_user_policy(UserName=user["UserName"], PolicyArn=arn)
                for group in page["PolicyGroups"]:
                    iam.detach_group_policy(GroupName=group["GroupName"], PolicyArn=arn)
            for version in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
                if not version["IsDefaultVersion"]:
                    iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
            iam.delete_policy(PolicyArn=arn)

        return [("policy and its versions", delete)]


class OidcProvider(Converger):
    """An IAM OIDC identity provider for ``url`` that accepts STS as its audience.

    No thumbprint is sent: CreateOpenIDConnectProvider's ThumbprintList is optional, IAM then
    fetches the top intermediate CA's thumbprint itself, and for providers whose JWKS endpoint
    has a certificate from a trusted root CA (EKS and GitHub both do) IAM verifies with its own
    CA library and does not use thumbprints at all. Thumbprints already on a provider are left
    alone: changing them is a privileged act this tool has no reason to take.
    """

    kind = "iam oidc provider"

    def __init__(self, host_path: str | None = None) -> None:
        super().__init__(host_path or "(cluster issuer)")
        self.host_path = host_path

    def resolve(self, ctx) -> str:
        return self.host_path or ctx.oidc_issuer()

    def converge(self, ctx):
        self.name = self.resolve(ctx)
        return super().converge(ctx)

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        from botocore.exceptions import ClientError

        iam = ctx.client("iam")
        arn = ctx.arn("iam", f"oidc-provider/{self.name}")
        try:
            provider = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)
        except ClientError as exc:
            if not _missing(exc):
                raise
            return False, [
                (
                    f"audience {STS_AUDIENCE}",
                    lambda: iam.create_open_id_connect_provider(
                        Url=f"https://{self.name}",
                        ClientIDList=[STS_AUDIENCE],
                        Tags=[{"Key": PROJECT_TAG, "Value": ctx.stack["project"]}],
                    ),
                )
            ]
        if STS_AUDIENCE in provider.get("ClientIDList", []):
            return True, []
        return True, [
            (
                f"add audience {STS_AUDIENCE}",
                lambda: iam.add_client_id_to_open_id_connect_provider(
                    OpenIDConnectProviderArn=arn, ClientID=STS_AUDIENCE
                ),
            )
        ]

    def destroy(self, ctx):
        self.name = self.resolve(ctx)
        return super().destroy(ctx)

    def removal(self, ctx) -> list[Step]:
        """Only a provider this repo made (our tag) and no role still trusts: OIDC providers
        are shared by every role of the account that federates with the same issuer."""
        from botocore.exceptions import ClientError

        iam = ctx.client("iam")
        arn = ctx.arn("iam", f"oidc-provider/{self.name}")
        try:
            provider = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)
        except ClientError as exc:
            if not _missing(exc):
                raise
            return []
        tags = {t["Key"]: t["Value"] for t in provider.get("Tags", [])}
        if tags.get(PROJECT_TAG) != ctx.stack["project"]:
            return []

        def delete() -> None:
            users = [
                r["RoleName"]
                for page in iam.get_paginator("list_roles").paginate()
                for r in page["Roles"]
                if arn in json.dumps(as_document(r.get("AssumeRolePolicyDocument") or {}))
            ]
            if users:  # another repo's role relies on it: keep it
                return
            iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=arn)

        return [("made by this repo, if no role trusts it any more", delete)]


class IamRole(Converger):
    """A role whose trust is iam/<trust_file> and whose permissions are exactly our policies.

    The role is ours, so anything else on it is drift and is removed by `bootstrap`: a policy
    attached by someone else (an AWS managed ``AdministratorAccess``, say) and every inline
    policy. `plan` shows each as a diff. ``managed`` names AWS managed policies to attach (by
    name under arn:<partition>:iam::aws:policy/).
    """

    kind = "iam role"

    def __init__(
        self,
        name: str,
        trust_file: str,
        policy_files: list[str],
        description: str,
        managed: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name)
        self.trust_file = trust_file
        self.policy_files = policy_files
        self.description = description
        self.managed = managed

    def wanted_policies(self, ctx) -> list[str]:
        aws_managed = [f"arn:{ctx.partition}:iam::aws:policy/{name}" for name in self.managed]
        return [policy_arn(ctx, f) for f in self.policy_files] + aws_managed

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        from botocore.exceptions import ClientError

        iam = ctx.client("iam")
        trust = load_document(ctx, self.trust_file)
        wanted = self.wanted_policies(ctx)
        steps: list[Step] = []
        try:
            role = iam.get_role(RoleName=self.name)["Role"]
        except ClientError as exc:
            if not _missing(exc):
                raise
            role = None
            self.show_diff(f"iam/{self.trust_file}", None, trust)
            steps.append(
                (
                    f"trust from iam/{self.trust_file}",
                    lambda: iam.create_role(
                        RoleName=self.name,
                        AssumeRolePolicyDocument=to_json(trust),
                        Description=self.description,
                    ),
                )
            )
        if role and not same_document(as_document(role["AssumeRolePolicyDocument"]), trust):
            self.show_diff(
                f"role {self.name} trust", as_document(role["AssumeRolePolicyDocument"]), trust
            )
            steps.append(
                (
                    f"trust from iam/{self.trust_file}",
                    lambda: iam.update_assume_role_policy(
                        RoleName=self.name, PolicyDocument=to_json(trust)
                    ),
                )
            )
        attached: list[str] = []
        inline: list[str] = []
        if role:
            pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=self.name)
            attached = [p["PolicyArn"] for page in pages for p in page["AttachedPolicies"]]
            pages = iam.get_paginator("list_role_policies").paginate(RoleName=self.name)
            inline = [name for page in pages for name in page["PolicyNames"]]
        if sorted(attached) != sorted(wanted):
            self.show_diff(
                f"role {self.name} attached policies",
                {"AttachedPolicies": sorted(attached)},
                {"AttachedPolicies": sorted(wanted)},
            )
        for arn in attached:
            if arn not in wanted:
                steps.append(
                    (
                        f"detach {arn.rsplit('/', 1)[1]} (not ours)",
                        lambda arn=arn: iam.detach_role_policy(RoleName=self.name, PolicyArn=arn),
                    )
                )
        for arn in wanted:
            if arn not in attached:
                steps.append(
                    (
                        f"attach {arn.rsplit('/', 1)[1]}",
                        lambda arn=arn: iam.attach_role_policy(RoleName=self.name, PolicyArn=arn),
                    )
                )
        for name in inline:
            document = as_document(
                iam.get_role_policy(RoleName=self.name, PolicyName=name)["PolicyDocument"]
            )
            self.show_diff(f"role {self.name} inline policy {name}", document, None)
            steps.append(
                (
                    f"delete inline policy {name} (not ours)",
                    lambda name=name: iam.delete_role_policy(RoleName=self.name, PolicyName=name),
                )
            )
        return role is not None, steps

    def removal(self, ctx) -> list[Step]:
        from botocore.exceptions import ClientError

        iam = ctx.client("iam")
        try:
            iam.get_role(RoleName=self.name)
        except ClientError as exc:
            if not _missing(exc):
                raise
            return []

        def delete() -> None:
            for page in iam.get_paginator("list_attached_role_policies").paginate(
                RoleName=self.name
            ):
                for policy in page["AttachedPolicies"]:
                    iam.detach_role_policy(RoleName=self.name, PolicyArn=policy["PolicyArn"])
            for page in iam.get_paginator("list_role_policies").paginate(RoleName=self.name):
                for name in page["PolicyNames"]:
                    iam.delete_role_policy(RoleName=self.name, PolicyName=name)
            iam.delete_role(RoleName=self.name)

        return [("detach, delete inline policies, delete", delete)]

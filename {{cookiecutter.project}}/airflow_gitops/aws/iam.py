"""IAM: managed policies from iam/*.json, OIDC identity providers, and roles that use them."""

from __future__ import annotations

from airflow_gitops.aws.converge import (
    Converger,
    Step,
    as_document,
    error_code,
    load_document,
    same_document,
    to_json,
)
from airflow_gitops.errors import ToolkitError

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
    first.
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
            return False, [(f"from iam/{self.filename}", lambda: iam.create_policy(
                PolicyName=self.name, PolicyDocument=to_json(document),
                Description=f"airflow-gitops: iam/{self.filename}"))]
        current = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
        if same_document(current["PolicyVersion"]["Document"], document):
            return True, []
        steps: list[Step] = []
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        if len(versions) >= MAX_POLICY_VERSIONS:
            oldest = min((v for v in versions if not v["IsDefaultVersion"]),
                         key=lambda v: v["CreateDate"])
            steps.append((f"delete oldest version {oldest['VersionId']} (limit of five)",
                          lambda: iam.delete_policy_version(PolicyArn=arn,
                                                            VersionId=oldest["VersionId"])))
        steps.append((f"new default version from iam/{self.filename}",
                      lambda: iam.create_policy_version(PolicyArn=arn,
                                                        PolicyDocument=to_json(document),
                                                        SetAsDefault=True)))
        return True, steps


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
            return False, [(f"audience {STS_AUDIENCE}", lambda: iam.create_open_id_connect_provider(
                Url=f"https://{self.name}", ClientIDList=[STS_AUDIENCE]))]
        if STS_AUDIENCE in provider.get("ClientIDList", []):
            return True, []
        return True, [(f"add audience {STS_AUDIENCE}", lambda: iam.add_client_id_to_open_id_connect_provider(
            OpenIDConnectProviderArn=arn, ClientID=STS_AUDIENCE))]


class IamRole(Converger):
    """A role with the trust policy of iam/<trust_file> and our managed policies attached.

    Policies attached by someone else are left attached (and not reported): detaching what this
    tool did not attach could break a workload it knows nothing about.
    """

    kind = "iam role"

    def __init__(self, name: str, trust_file: str, policy_files: list[str],
                 description: str) -> None:
        super().__init__(name)
        self.trust_file = trust_file
        self.policy_files = policy_files
        self.description = description

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        from botocore.exceptions import ClientError

        iam = ctx.client("iam")
        trust = load_document(ctx, self.trust_file)
        wanted = [policy_arn(ctx, f) for f in self.policy_files]
        steps: list[Step] = []
        try:
            role = iam.get_role(RoleName=self.name)["Role"]
        except ClientError as exc:
            if not _missing(exc):
                raise
            role = None
            steps.append((f"trust from iam/{self.trust_file}", lambda: iam.create_role(
                RoleName=self.name, AssumeRolePolicyDocument=to_json(trust),
                Description=self.description)))
        if role and not same_document(as_document(role["AssumeRolePolicyDocument"]), trust):
            steps.append((f"trust from iam/{self.trust_file}", lambda: iam.update_assume_role_policy(
                RoleName=self.name, PolicyDocument=to_json(trust))))
        attached = set()
        if role:
            pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=self.name)
            attached = {p["PolicyArn"] for page in pages for p in page["AttachedPolicies"]}
        for arn in wanted:
            if arn not in attached:
                steps.append((f"attach {arn.rsplit('/', 1)[1]}", lambda arn=arn: iam.attach_role_policy(
                    RoleName=self.name, PolicyArn=arn)))
        return role is not None, steps


def github_subject(github: dict) -> str:
    """The `sub` claim of the deploy job's GitHub OIDC token, from stack.yaml's ``github`` facts
    (classic: repo:owner/name:environment:ENV; immutable: repo:owner@ID/name@ID:environment:ENV).
    Pure, so bootstrap and `validate` ask the same function."""
    owner, _, name = github["repository"].partition("/")
    if github.get("oidc_subject") == "immutable":
        repo = f"{owner}@{github['owner_id']}/{name}@{github['repository_id']}"
    else:
        repo = github["repository"]
    return f"repo:{repo}:environment:{github['environment']}"


def check_github_subject(ctx, trust_file: str) -> None:
    """The deploy role's trust must pin the subject stack.yaml describes (classic or immutable)."""
    expected = github_subject(ctx.stack["github"])
    document = load_document(ctx, trust_file)
    subjects = [
        value
        for statement in document["Statement"]
        for condition in (statement.get("Condition") or {}).values()
        for key, value in condition.items()
        if key.endswith(":sub")
    ]
    if subjects != [expected]:
        raise ToolkitError(
            f"iam/{trust_file}: subject {subjects} does not match stack.yaml's github settings "
            f"({expected!r}); fix the file or stack.yaml so the deploy role trusts exactly this "
            "repository's environment"
        )

"""What every converger shares: the result line, the read-then-act pattern, IAM documents."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from airflow_gitops.aws.errors import AwsError
from airflow_gitops.errors import ToolkitError

CREATE, UPDATE, DELETE, OK = "create", "update", "delete", "ok"
# A step only a person can take (no GitHub token given, an environment rule to set by hand):
# reported, never counted as a change, never a failure.
MANUAL = "manual"

# Who writes a resource. IAM, trust, access control and anything handed a role are written only
# by `bootstrap` (an admin, once); `apply` (the deploy role in CI) converges the rest and only
# reads these, failing with "run `make bootstrap`" when they drifted.
BOOTSTRAP, APPLY = "bootstrap", "apply"

# Tokens for facts unknown when the repo is generated, replaced in iam/ documents at run time
# from eks:DescribeCluster: the cluster's OIDC issuer (host/path) and its VPC id.
ISSUER_TOKEN = "EKS_OIDC_ISSUER"
VPC_TOKEN = "EKS_CLUSTER_VPC"


@dataclass
class Result:
    action: str
    kind: str
    name: str
    details: list[str] = field(default_factory=list)
    owner: str = BOOTSTRAP
    # Unified diff (current -> wanted) of the documents this result would change.
    diff: list[str] = field(default_factory=list)

    def line(self) -> str:
        detail = f"  ({'; '.join(self.details)})" if self.details else ""
        text = f"{self.action:<7}{self.kind:<22}{self.name}{detail}"
        return "\n".join([text, *(f"         {line}" for line in self.diff)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "kind": self.kind,
            "name": self.name,
            "details": self.details,
            "owner": self.owner,
            "diff": self.diff,
        }

    @property
    def changes(self) -> bool:
        return self.action not in (OK, MANUAL)


Step = tuple[str, Callable[[], Any]]


class Converger:
    """One resource: ``converge(ctx)`` reads it, then (unless ``ctx.dry_run``) fixes it.

    Subclasses implement ``steps(ctx) -> (exists, [(description, action), ...])`` with reads
    only; the base class decides create/update/ok and runs the actions in order. A converger
    that stands for several resources (mount targets, one per zone) overrides ``converge``.
    """

    kind = "resource"
    owner = BOOTSTRAP

    def __init__(self, name: str) -> None:
        self.name = name
        self.diff: list[str] = []

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        raise NotImplementedError

    def converge(self, ctx) -> list[Result]:
        self.diff = []
        exists, steps = self.steps(ctx)
        return [self.finish(ctx, exists, steps)]

    def finish(
        self,
        ctx,
        exists: bool,
        steps: list[Step],
        name: str | None = None,
        diff: list[str] | None = None,
    ) -> Result:
        action = OK if not steps else UPDATE if exists else CREATE
        if not ctx.dry_run:
            for _, act in steps:
                act()
        shown = self.diff if diff is None else diff
        return Result(
            action,
            self.kind,
            name or self.name,
            [d for d, _ in steps],
            self.owner,
            list(shown) if steps else [],
        )

    def removal(self, ctx) -> list[Step]:
        """Reads only: the steps that delete this resource (none when it is absent or not
        ours to delete). ``ctx.delete_data`` allows deleting a bucket or file system that
        holds data; without it a converger raises AwsError instead."""
        raise NotImplementedError

    def destroy(self, ctx) -> list[Result]:
        self.diff = []
        steps = self.removal(ctx)
        if not ctx.dry_run:
            for _, act in steps:
                act()
        return [
            Result(DELETE if steps else OK, self.kind, self.name, [d for d, _ in steps], self.owner)
        ]

    def show_diff(self, label: str, current, wanted) -> None:
        """Add the diff of one document (current -> wanted) to this resource's result."""
        self.diff += document_diff(label, current, wanted)


def error_code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def load_document(ctx, filename: str) -> dict:
    """iam/<filename> as a dict, filled for the environment acted on (``${stack.path}`` references to
    stack.yaml), with the cluster's OIDC issuer substituted when it asks for it."""
    from airflow_gitops.stack import read_filled

    path = Path(ctx.root) / "iam" / filename
    try:
        text = read_filled(path, ctx.stack)
    except FileNotFoundError:
        raise ToolkitError(
            f"{path}: not found; it is generated with the repo (mode-specific "
            "files are removed for other modes; check dags.source in stack.yaml)"
        ) from None
    if ISSUER_TOKEN in text:
        text = text.replace(ISSUER_TOKEN, ctx.oidc_issuer())
    if VPC_TOKEN in text:
        text = text.replace(VPC_TOKEN, ctx.cluster_vpc())
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolkitError(
            f"{path}: not valid JSON ({exc}); fix it and run `make validate`"
        ) from None
    if not isinstance(document, dict) or "Statement" not in document:
        raise ToolkitError(f"{path}: not an IAM policy document (no Statement)")
    return document


def as_document(value) -> dict:
    """A policy document as IAM returns it (dict, JSON text or URL-encoded JSON) -> dict."""
    from urllib.parse import unquote

    if isinstance(value, dict):
        return value
    text = value if value.lstrip().startswith("{") else unquote(value)
    return json.loads(text)


def canonical(value):
    """A policy document in a form where equal meaning compares equal: keys sorted, and a
    one-element list the same as its element (IAM accepts both and may return either)."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        items = [canonical(v) for v in value]
        return items[0] if len(items) == 1 else sorted(items, key=json.dumps)
    return value


def same_document(a, b) -> bool:
    return canonical(as_document(a)) == canonical(as_document(b))


def to_json(document: dict) -> str:
    return json.dumps(document, separators=(",", ":"))


def document_diff(label: str, current, wanted) -> list[str]:
    """Unified diff of two documents in canonical form; ``current`` None means "absent"."""
    import difflib

    def lines(value) -> list[str]:
        if value is None:
            return []
        return json.dumps(canonical(value), indent=2, sort_keys=True).splitlines()

    return list(
        difflib.unified_diff(
            lines(current), lines(wanted), f"{label} (now)", f"{label} (wanted)", lineterm="", n=2
        )
    )


__all__ = [
    "APPLY",
    "BOOTSTRAP",
    "CREATE",
    "DELETE",
    "MANUAL",
    "OK",
    "UPDATE",
    "AwsError",
    "Converger",
    "Result",
]

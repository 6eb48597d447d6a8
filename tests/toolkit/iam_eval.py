"""A small evaluator of IAM identity policies, for the replay tests (moto enforces no IAM).

``Request(action, resource, context)`` is one authorisation AWS makes for a call (a call can
need several: CreateMountTarget also creates a network interface in EC2). ``allowed(policies,
request)`` follows AWS's evaluation logic for identity policies in one account: an explicit
Deny wins, otherwise some Allow statement must match the action (wildcards, case-insensitive),
the resource (wildcards) and every condition.

Conditions: String*, Arn*, Bool and Null operators, the ``IfExists`` suffix and the
``ForAllValues:`` / ``ForAnyValue:`` set qualifiers. A key missing from the request context
makes its condition false (except Null, IfExists and ForAllValues), as in IAM; so a context
the test does not know fails closed. Unknown operators fail closed too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict = field(default_factory=dict, hash=False, compare=False)

    def __repr__(self) -> str:
        extra = f" {self.context}" if self.context else ""
        return f"{self.action} on {self.resource}{extra}"


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _wild(pattern: str, value: str, case: bool = True) -> bool:
    # IAM's wildcards are * and ?; fnmatch also knows [..], which IAM patterns never use here.
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatchcase(value, pattern)


def _matches(statement: dict, key: str, negated_key: str, value: str, case: bool) -> bool:
    if key in statement:
        return any(_wild(p, value, case) for p in _list(statement[key]))
    if negated_key in statement:
        return not any(_wild(p, value, case) for p in _list(statement[negated_key]))
    return False


def _compare(operator: str, wanted: str, actual) -> bool:
    actual = str(actual).lower() if operator == "Bool" else str(actual)
    if operator in ("StringEquals", "ArnEquals", "Bool"):
        return actual == (str(wanted).lower() if operator == "Bool" else str(wanted))
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() == str(wanted).lower()
    if operator in ("StringLike", "ArnLike"):
        return _wild(str(wanted), actual)
    raise ValueError(operator)


def _condition(operator: str, key: str, wanted, context: dict) -> bool:
    lowered = {k.lower(): v for k, v in context.items()}
    present = key.lower() in lowered
    actual = lowered.get(key.lower())
    if operator == "Null":
        return str(_list(wanted)[0]).lower() == ("false" if present else "true")
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    negated = base.startswith(("StringNot", "ArnNot"))
    positive = base.replace("StringNot", "String").replace("ArnNot", "Arn")
    if positive not in (
        "StringEquals",
        "StringEqualsIgnoreCase",
        "StringLike",
        "ArnEquals",
        "ArnLike",
        "Bool",
    ):
        return False  # an operator this evaluator does not know: fail closed
    if not present:
        return if_exists or qualifier == "ForAllValues"
    values = _list(actual)
    hits = [any(_compare(positive, w, v) for w in _list(wanted)) for v in values]
    if qualifier == "ForAllValues":
        result = all(hits)
    elif qualifier == "ForAnyValue":
        result = any(hits)
    else:
        result = hits[0] if len(values) == 1 else any(hits)
    return not result if negated else result


def statement_matches(statement: dict, request: Request) -> bool:
    if not _matches(statement, "Action", "NotAction", request.action, case=False):
        return False
    if not _matches(statement, "Resource", "NotResource", request.resource, case=True):
        return False
    return all(
        _condition(operator, key, wanted, request.context)
        for operator, conditions in (statement.get("Condition") or {}).items()
        for key, wanted in conditions.items()
    )


def allowed(policies: list[dict], request: Request) -> bool:
    statements = [s for policy in policies for s in _list(policy.get("Statement", []))]
    if any(s.get("Effect") == "Deny" and statement_matches(s, request) for s in statements):
        return False
    return any(s.get("Effect") == "Allow" and statement_matches(s, request) for s in statements)


def granted_actions(policies: list[dict]) -> set[str]:
    return {
        a
        for policy in policies
        for s in _list(policy.get("Statement", []))
        if s.get("Effect") == "Allow"
        for a in _list(s.get("Action", []))
    }

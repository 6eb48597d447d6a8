"""IAM documents on their own: trust policies pin aud and sub; no wildcard Action or Resource
(``"*"`` only for actions that take no resource type, per AWS's reference: iam_reference.py)."""

from __future__ import annotations

from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import as_dict, as_list, as_str

STS_AUDIENCE = "sts.amazonaws.com"


def check(repo) -> Iterator[Finding]:
    for doc in repo.iam.values():
        for index, statement in enumerate(as_list(doc.get("Statement"))):
            statement = as_dict(statement)
            spath = ("Statement", index)
            if "Principal" in statement:
                yield from _trust(doc, spath, statement)
            else:
                yield from _wildcards(doc, spath, statement)


def _values(value) -> list:
    return value if isinstance(value, list) else [value]


def _trust(doc, spath, statement) -> Iterator[Finding]:
    if statement.get("Effect") != "Allow":
        return
    federated = as_str(as_dict(statement.get("Principal")).get("Federated"))
    if "oidc-provider/" not in federated:
        return
    provider = federated.split("oidc-provider/", 1)[1]
    condition = as_dict(statement.get("Condition"))
    equals = as_dict(condition.get("StringEquals"))
    cpath = spath + ("Condition",) if "Condition" in statement else spath
    for claim in ("aud", "sub"):
        key = f"{provider}:{claim}"
        if key not in equals:
            loose = [
                op
                for op, conds in condition.items()
                if op != "StringEquals" and key in as_dict(conds)
            ]
            how = f"it is only under {loose[0]}" if loose else "it is missing"
            yield doc.finding(
                cpath + ("StringEquals",) if "StringEquals" in condition else cpath,
                f"trust policy does not pin {key} with StringEquals ({how}); any "
                f"{'audience' if claim == 'aud' else 'workload of that identity provider'} could assume the role",
                "trust-unpinned",
                at_key=True,
            )
            continue
        value_path = cpath + ("StringEquals", key)
        for value in _values(equals[key]):
            if not isinstance(value, str) or any(c in value for c in "*?"):
                yield doc.finding(
                    value_path, f"{key} must be one exact value, not {value!r}", "trust-unpinned"
                )
            elif claim == "aud" and value != STS_AUDIENCE:
                yield doc.finding(
                    value_path,
                    f"{key} is {value!r}; the audience is {STS_AUDIENCE!r}",
                    "trust-unpinned",
                )
    for op, conds in condition.items():
        for key in as_dict(conds):
            if key.endswith((":sub", ":aud")) and not key.startswith(provider + ":"):
                yield doc.finding(
                    cpath + (op, key),
                    f"condition key {key!r} does not belong to the provider {provider!r} in Principal.Federated, so it pins nothing",
                    "trust-unpinned",
                    at_key=True,
                )


def _wildcards(doc, spath, statement) -> Iterator[Finding]:
    if statement.get("Effect") != "Allow":
        return
    for key in ("NotAction", "NotResource"):
        if key in statement:
            yield doc.finding(
                spath + (key,),
                f"Allow with {key} grants everything not listed; name what is allowed",
                "iam-wildcard",
                at_key=True,
            )
    actions = [a for a in _values(statement.get("Action")) if isinstance(a, str)]
    raw_actions = statement.get("Action")
    for index, action in enumerate(_values(raw_actions)):
        if isinstance(action, str) and (action == "*" or action.endswith(":*")):
            where = spath + ("Action",) + ((index,) if isinstance(raw_actions, list) else ())
            yield doc.finding(
                where,
                f"Action {action!r} grants every action{' of ' + action[:-2] if action != '*' else ''}; list the actions needed",
                "iam-wildcard",
            )
    raw = statement.get("Resource")
    for index, resource in enumerate(_values(raw)):
        if resource != "*":
            continue
        # "*" is right exactly for actions that take no resource type (AWS's Service
        # Authorization Reference, via parliament's data); unknown actions are reported apart.
        from airflow_gitops.validate.rules.iam_reference import star_is_required

        needing = [a for a in actions if star_is_required(a) is False]
        if needing:
            where = spath + ("Resource",) + ((index,) if isinstance(raw, list) else ())
            yield doc.finding(
                where,
                f"Resource '*' for {', '.join(needing[:3])}{' ...' if len(needing) > 3 else ''}; "
                "name the resources (only actions without resource-level permissions may use '*')",
                "iam-wildcard",
            )

"""Permission policies checked as AWS checks them, against AWS's Service Authorization Reference.

The reference (every service's actions, the resource types each action takes and their ARN
formats) comes as data with parliament (duo-labs), which also runs its own audit; findings it
rates MEDIUM or worse are reported. parliament loads a 10 MB file, so it is imported only
here, only when iam/ has a permission policy.

Our own checks on the same data, with messages that point at the value:
- every action exists (parliament rates an unknown action LOW; AWS grants nothing for it);
- every resource has the ARN format of a resource type the action takes, and ``"*"`` is used
  exactly for actions that take no resource type (AWS: "Resource types" column empty);
- S3 bucket and object ARNs carry no region or account (they never match anything);
- statement ids are unique in a policy.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import sys
import types
from collections.abc import Iterator
from functools import lru_cache

from airflow_gitops.errors import UsageError
from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import as_dict, as_list

# parliament issues our checks above report more precisely (same reference data).
COVERED = {
    "RESOURCE_MISMATCH",
    "DUPLICATE_SID",
    "UNKNOWN_ACTION",
    "UNKNOWN_PREFIX",
    "MALFORMED_JSON",
}
REPORTED_SEVERITIES = {"MEDIUM", "HIGH", "CRITICAL"}
_S3_WITH_LOCATION = re.compile(
    r"^arn:aws[a-z-]*:s3:([^:]*):([^:]*):(?!accesspoint/|job/|storage-lens/)"
)


def load_parliament():
    """``import parliament``, without importing pkg_resources for it.

    parliament calls only ``pkg_resources.resource_filename`` (to find its data files), but
    importing pkg_resources costs ~0.45 s, more than all of `validate`. A stand-in with that
    one function is in sys.modules only while parliament imports; anything importing
    pkg_resources afterwards gets the real one.
    """
    if "parliament" in sys.modules:
        return sys.modules["parliament"]
    stand_in = None
    if "pkg_resources" not in sys.modules:
        stand_in = types.ModuleType("pkg_resources")
        stand_in.resource_filename = lambda package, name: os.path.join(
            os.path.dirname(sys.modules[package].__file__), name
        )
        sys.modules["pkg_resources"] = stand_in
    try:
        import parliament
    except ImportError:
        raise UsageError(
            "parliament is not installed, and validate checks iam/ with it: "
            "run `make install` (requirements.txt pins it)"
        ) from None
    finally:
        if stand_in is not None and sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]
    return parliament


@lru_cache(maxsize=1)
def reference() -> dict:
    """{service prefix: {action in lower case: (action, [(resource type, ARN format)])}}."""
    parliament = load_parliament()

    index: dict = {}
    for service in parliament.iam_definition:
        formats = {r["resource"]: r["arn"] for r in service["resources"]}
        actions = index.setdefault(service["prefix"], {})
        for privilege in service["privileges"]:
            types = [
                (t["resource_type"], formats.get(t["resource_type"].rstrip("*"), ""))
                for t in privilege["resource_types"]
                if t["resource_type"]
            ]
            actions[privilege["privilege"].lower()] = (privilege["privilege"], types)
    return index


ACCEPTED_FILE = "iam/parliament-accepted.yaml"


def check(repo) -> Iterator[Finding]:
    policies = {path: doc for path, doc in repo.iam.items() if not _is_trust(doc)}
    if not policies:
        return
    accepted, findings = _accepted(repo)
    yield from findings
    used: set = set()
    for path, doc in policies.items():
        yield from _statements(doc)
        for finding, issue in _parliament(path, doc, repo.texts.get(path, "")):
            if (path, issue) in accepted:
                used.add((path, issue))
            else:
                yield finding
    for key, (doc, entry_path) in accepted.items():
        if key not in used:
            yield doc.finding(
                entry_path,
                f"parliament no longer reports {key[1]} in {key[0]}: remove this acceptance",
                "iam-parliament",
                at_key=True,
            )


def _accepted(repo) -> tuple[dict, list]:
    """{(file, issue): (document, path of the entry)} from iam/parliament-accepted.yaml: the
    parliament findings this repository accepts, each with its reason (reviewed like code)."""
    from airflow_gitops.validate.loader import parse_text

    text = repo.other_texts.get(ACCEPTED_FILE)
    if text is None:
        return {}, []
    parsed = parse_text(ACCEPTED_FILE, text)
    findings = list(parsed.findings)
    accepted: dict = {}
    doc = parsed.documents[0] if parsed.documents else None
    entries = doc.get("accepted") if doc is not None and isinstance(doc.data, dict) else None
    if doc is not None and not isinstance(entries, list) and entries is not None:
        findings.append(
            doc.finding(
                ("accepted",), "accepted: must be a list of {file, issue, reason}", "wrong-type"
            )
        )
    for index, entry in enumerate(as_list(entries)):
        entry = as_dict(entry)
        missing = [
            k
            for k in ("file", "issue", "reason")
            if not isinstance(entry.get(k), str) or not entry[k].strip()
        ]
        if missing:
            findings.append(
                doc.finding(
                    ("accepted", index),
                    f"an acceptance needs {', '.join(missing)} (a reason a reviewer can check)",
                    "missing-key",
                    at_key=True,
                )
            )
            continue
        accepted[(entry["file"], entry["issue"])] = (doc, ("accepted", index))
    return accepted, findings


def _is_trust(doc) -> bool:
    return any("Principal" in as_dict(s) for s in as_list(doc.get("Statement")))


def _values(statement: dict, key: str) -> list[tuple[tuple, object]]:
    raw = statement.get(key)
    if isinstance(raw, list):
        return [((key, i), v) for i, v in enumerate(raw)]
    return [((key,), raw)] if raw is not None else []


def _statements(doc) -> Iterator[Finding]:
    sids: dict = {}
    for index, statement in enumerate(as_list(doc.get("Statement"))):
        statement = as_dict(statement)
        spath = ("Statement", index)
        sid = statement.get("Sid")
        if isinstance(sid, str):
            if sid in sids:
                yield doc.finding(
                    spath + ("Sid",),
                    f"Sid {sid!r} is also statement {sids[sid]}'s; IAM refuses "
                    "a policy with two equal Sids",
                    "iam-duplicate-sid",
                )
            sids.setdefault(sid, index)
        actions = []  # (path, action as written, [(name, resource types)])
        for apath, action in _values(statement, "Action"):
            if not isinstance(action, str):
                continue
            known = _expand(action)
            if known is None:
                yield doc.finding(spath + apath, _unknown(action), "iam-unknown-action")
            else:
                actions.append((spath + apath, action, known))
        resources = []
        for rpath, resource in _values(statement, "Resource"):
            if not isinstance(resource, str):
                continue
            match = _S3_WITH_LOCATION.match(resource)
            if match and (match.group(1) or match.group(2)):
                yield doc.finding(
                    spath + rpath,
                    f"S3 bucket and object ARNs have no region or account "
                    f"(arn:aws:s3:::bucket/key); {resource!r} matches nothing",
                    "iam-s3-arn",
                )
            else:
                resources.append((spath + rpath, resource))
        if statement.get("Effect") == "Allow" and actions and resources:
            yield from _resources_fit(doc, actions, resources)


def _expand(action: str) -> list | None:
    """[(name, resource types)] the action (wildcards allowed) stands for; None when unknown."""
    if action == "*":
        return []
    service, _, name = action.partition(":")
    actions = reference().get(service.lower())
    if actions is None or not name:
        return None
    if "*" in name or "?" in name:
        found = [info for key, info in actions.items() if fnmatch.fnmatchcase(key, name.lower())]
        return found or None
    info = actions.get(name.lower())
    return [info] if info else None


def _unknown(action: str) -> str:
    service, _, name = action.partition(":")
    actions = reference().get(service.lower())
    if actions is None:
        close = difflib.get_close_matches(service.lower(), list(reference()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"no AWS service has the prefix {service!r}{hint}"
    close = difflib.get_close_matches(name.lower(), list(actions), n=1, cutoff=0.7)
    hint = f"; did you mean '{service}:{actions[close[0]][0]}'?" if close else ""
    return f"{action!r} is not an action of {service} in AWS's Service Authorization Reference, so it grants nothing{hint}"


_VARIABLE = re.compile(r"\$\{.*?\}")


def _arn_matches(resource_type: str, arn_format: str, resource: str) -> bool:
    """Does ``resource`` (which may hold * and ?) fit the reference's ARN format?
    parliament's matcher, with the format's ${Variables} as globs, as parliament does."""
    parliament = load_parliament()
    try:
        return parliament.is_arn_match(resource_type, _VARIABLE.sub("*", arn_format), resource)
    except Exception:  # noqa: BLE001 - parliament raises a bare Exception for a non-ARN
        return False


def _fits(resource: str, expanded: list) -> bool:
    """Does ``resource`` name something one of the expanded actions acts on?"""
    return any(
        _arn_matches(kind, fmt, resource) for _, types in expanded for kind, fmt in types if fmt
    )


def _resources_fit(doc, actions: list, resources: list) -> Iterator[Finding]:
    """AWS pairs every action with every resource of a statement: each resource must fit some
    action (else it grants nothing), and each action must have some resource it takes."""
    named = [(path, r) for path, r in resources if r != "*"]
    if not named:
        return  # "*" alone: whether the actions may use it is rules/iam.py's iam-wildcard
    flagged = False
    for path, resource in named:
        if not any(_fits(resource, expanded) for _, _, expanded in actions):
            flagged = True
            yield doc.finding(
                path,
                f"{resource!r} is no resource type that {_names(actions)} act{'s' if len(actions) == 1 else ''} on; "
                f"{_takes(actions)}",
                "iam-resource-format",
            )
    if flagged or any(r == "*" for _, r in resources):
        return
    for path, action, expanded in actions:
        if not any(_fits(resource, expanded) for _, resource in named):
            yield doc.finding(
                path,
                f"no Resource of this statement is one {action} acts on; {_takes([(path, action, expanded)])}",
                "iam-resource-format",
            )


def _names(actions: list) -> str:
    names = [action for _, action, _ in actions]
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _takes(actions: list) -> str:
    """What the actions take, from the reference: ARN formats, or only "*"."""
    parts = []
    for _, action, expanded in actions[:3]:
        formats = sorted({fmt for _, types in expanded for _, fmt in types if fmt})
        parts.append(
            f"{action} takes "
            + (" or ".join(formats[:3]) if formats else 'only "*" (no resource type)')
        )
    return "; ".join(parts)


def star_is_required(action: str) -> bool | None:
    """True when AWS accepts only "*" for ``action`` (no resource type); None when unknown."""
    known = _expand(action)
    if not known:
        return None
    return all(not types for _, types in known)


def _parliament(path: str, doc, text: str) -> Iterator[tuple[Finding, str]]:
    parliament = load_parliament()
    analyze_policy_string, enhance_finding = (
        parliament.analyze_policy_string,
        parliament.enhance_finding,
    )
    policy = analyze_policy_string(text, filepath=path, ignore_private_auditors=True)
    for found in policy.findings:
        if found.issue in COVERED:
            continue
        enhance_finding(found)
        if found.severity not in REPORTED_SEVERITIES:
            continue
        location = found.location or {}
        line, col = location.get("line") or 1, location.get("column") or 1
        detail = found.detail if isinstance(found.detail, str) else str(found.detail)
        message = (
            f"parliament rates this {found.severity}: {found.title} ({found.issue})"
            f"{': ' + detail[:160] if detail else ''}; fix it, or accept it with a reason in {ACCEPTED_FILE}"
        )
        yield Finding(path, int(line), int(col), message, "iam-parliament"), found.issue

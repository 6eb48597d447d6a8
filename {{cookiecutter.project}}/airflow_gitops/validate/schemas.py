"""Validate documents against the JSON Schemas in schemas/ and put each error at its line.

Validators are built once per schema file. jsonschema's error paths are mapped back to the
positions the loader recorded; an unexpected key is reported at the key itself, with the
closest allowed key as a suggestion.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from airflow_gitops.errors import UsageError
from airflow_gitops.validate import patterns
from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.loader import Document

SCHEMA_FILES = {
    "stack": "stack.schema.json",
    "helm-values": "helm-values.schema.json",
    "k8s": "k8s-manifest.schema.json",
    "iam-policy": "iam-policy.schema.json",
    "iam-trust": "iam-trust.schema.json",
    "workflow": "github-workflow.schema.json",
}

_UNEXPECTED = re.compile(r"\((.*) (?:was|were) unexpected\)")


class SchemaSet:
    """The compiled validator of each file kind, made on first use.

    Two things keep a thousand manifests fast: local ``$ref``s are inlined once (jsonschema
    would otherwise look each one up on every document), and a schema whose ``allOf`` picks
    a branch by a constant (``kind: ServiceAccount`` -> the ServiceAccount rules) gets one
    validator per value, so a document is checked against its own branch only. Both give the
    same verdicts as the schema file itself.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._schemas: dict = {}
        self._validators: dict = {}

    def missing(self) -> list[str]:
        return [name for name in SCHEMA_FILES.values() if not (self.folder / name).is_file()]

    def _load(self, name: str) -> dict:
        path = self.folder / name
        if "/" in name or not path.is_file():
            raise UsageError(
                f"{path}: missing (a schema refers to it); is this a generated repository?"
            )
        return json.loads(path.read_text(encoding="utf-8"))

    def schema(self, kind: str) -> dict:
        if kind not in self._schemas:
            raw = self._load(SCHEMA_FILES[kind])
            self._schemas[kind] = inline_refs(raw, self._load)
        return self._schemas[kind]

    def validator(self, kind: str, data=None):
        schema = self.schema(kind)
        branch_key, schema = pick_branches(schema, data)
        key = (kind, branch_key)
        if key not in self._validators:
            self._validators[key] = patterns.validator_class()(schema)
        return self._validators[key]

    def check(self, kind: str, doc: Document) -> list[Finding]:
        findings: list[Finding] = []
        for error in self.validator(kind, doc.data).iter_errors(doc.data):
            findings.extend(_to_findings(doc, _deepest(error)))
        return findings


# The chart's own definitions (Kubernetes types, copied into helm-values.schema.json): hundreds,
# nested, each used by few documents; jsonschema looks them up when a value reaches them.
KEEP_REFS = ("#/$defs/chart.",)


def inline_refs(schema: dict, load=None) -> dict:
    """``schema`` with every non-recursive ``$ref`` replaced by what it points to.

    ``#/...`` points into the same file; ``other.schema.json#/...`` into a sibling file, read
    with ``load(name)`` (stack.schema.json takes its rules from answers.schema.json's $defs,
    so each rule has one copy).
    """
    roots = {"": schema}

    def resolve(ref: str, root_name: str):
        name, _, pointer = ref.partition("#")
        name = name or root_name
        if name not in roots:
            if load is None:
                raise ValueError(f"$ref {ref!r}: no loader for other schema files")
            roots[name] = load(name)
        node = roots[name]
        for part in pointer.lstrip("/").split("/") if pointer.strip("/") else []:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, name

    def walk(node, active: tuple, root_name: str):
        if isinstance(node, list):
            return [walk(item, active, root_name) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        key = (root_name, ref)
        if isinstance(ref, str) and ref.startswith(KEEP_REFS):
            return {k: (v if k == "$ref" else walk(v, active, root_name)) for k, v in node.items()}
        if isinstance(ref, str) and (ref.startswith("#/") or ".json#" in ref) and key not in active:
            target_node, target_root = resolve(ref, root_name)
            target = walk(target_node, active + (key,), target_root)
            rest = {k: walk(v, active, root_name) for k, v in node.items() if k != "$ref"}
            return {"allOf": [target, rest]} if rest else target
        return {
            k: (v if k in ("const", "enum", "default", "examples") else walk(v, active, root_name))
            for k, v in node.items()
        }

    return walk(schema, (), "")


def pick_branches(schema: dict, data) -> tuple:
    """(key, schema) with an ``allOf`` of ``if: {<p>: const}`` / ``then`` branches narrowed to
    the branches whose constant ``data`` has; other schemas come back unchanged (key None)."""
    branches = schema.get("allOf") if isinstance(schema, dict) else None
    if not isinstance(branches, list) or not branches:
        return None, schema
    kept, key = [], []
    for branch in branches:
        condition = branch.get("if") if isinstance(branch, dict) else None
        properties = condition.get("properties") if isinstance(condition, dict) else None
        if (
            set(branch) != {"if", "then"}
            or not isinstance(properties, dict)
            or len(properties) != 1
            or condition.get("required") != list(properties)
            or set(condition) - {"properties", "required"}
        ):
            return None, schema
        ((name, rule),) = properties.items()
        if not isinstance(rule, dict) or set(rule) != {"const"}:
            return None, schema
        if (
            isinstance(data, dict)
            and name in data
            and data[name] == rule["const"]
            and type(data[name]) is type(rule["const"])
        ):
            kept.append(branch["then"])
            key.append(f"{name}={rule['const']}")
    narrowed = {k: v for k, v in schema.items() if k != "allOf"}
    if kept:
        narrowed["allOf"] = kept
    return tuple(key), narrowed


def _deepest(error):
    """For anyOf/oneOf, the branch jsonschema ranks most relevant (what the author likely meant)."""
    from jsonschema.exceptions import best_match

    while error.context:
        better = best_match(error.context)
        if better is None:
            break
        error = better
    return error


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_findings(doc: Document, error) -> Iterator[Finding]:
    path = tuple(error.absolute_path)
    where = _dotted(path)
    validator = error.validator
    if validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = list((error.schema.get("properties") or {}).keys())
        patterns = list((error.schema.get("patternProperties") or {}).keys())
        instance = error.instance if isinstance(error.instance, dict) else {}
        for key in instance:
            if key in allowed or any(re.search(p, str(key)) for p in patterns):
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            here = f" under {where}" if path else ""
            yield doc.finding(
                path + (key,), f"unknown key {key!r}{here}{hint}", "unknown-key", at_key=True
            )
        return
    if validator == "required":
        match = re.match(r"'(.*)' is a required property", error.message)
        name = match.group(1) if match else error.message
        yield doc.finding(
            path, f"{where}: missing required key {name!r}", "missing-key", at_key=True
        )
        return
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        got = type(error.instance).__name__
        got = {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "NoneType": "null",
            "dict": "mapping",
            "list": "list",
        }.get(got, got)
        yield doc.finding(
            path, f"{where}: expected {expected}, got {got} {_short(error.instance)}", "wrong-type"
        )
        return
    allowed_words = error.schema.get("x-allowed") if isinstance(error.schema, dict) else None
    if allowed_words and validator in (
        "pattern",
        "enum",
        "const",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
    ):
        yield doc.finding(
            path, f"{where}: {_short(error.instance)} is not {allowed_words}", "invalid-value"
        )
        return
    if validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in error.validator_value)
        yield doc.finding(
            path, f"{where}: {_short(error.instance)} is not one of {allowed}", "invalid-value"
        )
        return
    if validator == "const":
        yield doc.finding(
            path,
            f"{where}: must be {json.dumps(error.validator_value)}, not {_short(error.instance)}",
            "invalid-value",
        )
        return
    if validator == "pattern":
        yield doc.finding(
            path,
            f"{where}: {_short(error.instance)} does not match {error.validator_value}",
            "invalid-value",
        )
        return
    if error.schema is False:
        yield doc.finding(path, f"{where}: not allowed here", "unknown-key", at_key=True)
        return
    message = error.message
    if len(message) > 200:
        message = message[:197] + "..."
    yield doc.finding(path, f"{where}: {message}", "invalid-value")

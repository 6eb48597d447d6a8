"""Validate documents against the JSON Schemas in schemas/ and put each error at its line.

Validators are built once per schema file. jsonschema's error paths are mapped back to the
positions the loader recorded; an unexpected key is reported at the key itself, with the
closest allowed key as a suggestion.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Iterator

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
    """The compiled validator of each file kind, made on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._validators: dict = {}

    def missing(self) -> list[str]:
        return [name for name in SCHEMA_FILES.values() if not (self.folder / name).is_file()]

    def validator(self, kind: str):
        if kind not in self._validators:
            from jsonschema import Draft202012Validator

            schema = json.loads((self.folder / SCHEMA_FILES[kind]).read_text(encoding="utf-8"))
            self._validators[kind] = Draft202012Validator(schema)
        return self._validators[kind]

    def check(self, kind: str, doc: Document) -> list[Finding]:
        findings: list[Finding] = []
        for error in self.validator(kind).iter_errors(doc.data):
            findings.extend(_to_findings(doc, _deepest(error)))
        return findings


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
            yield doc.finding(path + (key,), f"unknown key {key!r}{here}{hint}", "unknown-key", at_key=True)
        return
    if validator == "required":
        match = re.match(r"'(.*)' is a required property", error.message)
        name = match.group(1) if match else error.message
        yield doc.finding(path, f"{where}: missing required key {name!r}", "missing-key", at_key=True)
        return
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        got = type(error.instance).__name__
        got = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
               "NoneType": "null", "dict": "mapping", "list": "list"}.get(got, got)
        yield doc.finding(
            path, f"{where}: expected {expected}, got {got} {_short(error.instance)}", "wrong-type"
        )
        return
    if validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in error.validator_value)
        yield doc.finding(path, f"{where}: {_short(error.instance)} is not one of {allowed}", "invalid-value")
        return
    if validator == "const":
        yield doc.finding(
            path, f"{where}: must be {json.dumps(error.validator_value)}, not {_short(error.instance)}",
            "invalid-value",
        )
        return
    if validator == "pattern":
        yield doc.finding(
            path, f"{where}: {_short(error.instance)} does not match {error.validator_value}", "invalid-value"
        )
        return
    if error.schema is False:
        yield doc.finding(path, f"{where}: not allowed here", "unknown-key", at_key=True)
        return
    message = error.message
    if len(message) > 200:
        message = message[:197] + "..."
    yield doc.finding(path, f"{where}: {message}", "invalid-value")

"""Our schemas/helm-values.schema.json agrees with the official chart 1.22.0's values.schema.json.

Ours is stricter and smaller (only what `make validate` needs, with our own rules), so this is
not an equality: every property path our schema allows must exist in the chart's schema, with a
type the chart accepts, and every enum value we allow must be one the chart allows. A chart
upgrade that renames or retypes a key we emit fails here first.
"""

from __future__ import annotations

import json
from functools import lru_cache

import pytest

from conftest import TEMPLATE
from helm_chart import chart_schema

CHART_SCHEMA = "chart"  # the chart package's values.schema.json (tests/chart/)
OURS = TEMPLATE / "schemas" / "helm-values.schema.json"


@lru_cache(maxsize=None)
def _load(path):
    if path == CHART_SCHEMA:
        return chart_schema()
    return json.loads(path.read_text())


def _resolve(node: dict, root: dict) -> dict:
    """Follow $ref (the chart's #/definitions/..., our #/$defs/...) and merge the siblings."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
        assert seen < 20, "reference loop"
    return node


def _types(node: dict) -> set | None:
    kind = node.get("type")
    if kind is None:
        return None  # any type
    types = set(kind if isinstance(kind, list) else [kind])
    if "number" in types:
        types.add("integer")
    return types


def _walk(ours: dict, chart: dict, path: str, problems: list[str]) -> None:
    ours = _resolve(ours, _load(OURS))
    chart = _resolve(chart, _load(CHART_SCHEMA))
    for branch in ours.get("allOf", []):
        _walk(branch, chart, path, problems)
    our_types, chart_types = _types(ours), _types(chart)
    if our_types and chart_types and not our_types <= chart_types:
        problems.append(
            f"{path or '(top)'}: we allow {sorted(our_types)}, the chart {sorted(chart_types)}"
        )
    if "enum" in ours and "enum" in chart:
        extra = [v for v in ours["enum"] if v not in chart["enum"]]
        if extra:
            problems.append(f"{path}: enum values {extra} are not in the chart's enum")
    for key, sub in ours.get("properties", {}).items():
        chart_props = chart.get("properties", {})
        if key in chart_props:
            _walk(sub, chart_props[key], f"{path}.{key}" if path else key, problems)
        elif isinstance(chart.get("additionalProperties"), dict):
            _walk(sub, chart["additionalProperties"], f"{path}.{key}" if path else key, problems)
        elif chart.get("additionalProperties") is False or chart_props:
            problems.append(
                f"{path}.{key}: not a key of the chart"
                if path
                else f"{key}: not a key of the chart"
            )
    if isinstance(ours.get("additionalProperties"), dict) and isinstance(
        chart.get("additionalProperties"), dict
    ):
        _walk(ours["additionalProperties"], chart["additionalProperties"], f"{path}.*", problems)
    if isinstance(ours.get("items"), dict) and isinstance(chart.get("items"), dict):
        _walk(ours["items"], chart["items"], f"{path}[]", problems)


def test_every_key_we_allow_exists_in_the_chart_with_a_compatible_type():
    problems: list[str] = []
    _walk(_load(OURS), _load(CHART_SCHEMA), "", problems)
    assert problems == []


def test_the_keys_we_emit_are_described_strictly():
    """The keys the template writes have real rules in our schema, not just the chart's type."""
    ours = _load(OURS)
    props = ours["properties"]
    assert ours["additionalProperties"] is False
    for component in ("dagProcessor", "triggerer", "scheduler"):
        section = props[component]["properties"]
        assert section["extraContainers"]["items"] == {"$ref": "#/$defs/container"}
        account = section["serviceAccount"]["properties"]
        assert account["create"] == {"type": "boolean"} and account["name"] == {
            "type": ["string", "null"]
        }
    for flavour in ("celery", "kubernetes"):
        assert props["workers"]["properties"][flavour]["properties"]["extraInitContainers"][
            "items"
        ] == {"$ref": "#/$defs/container"}
    assert props["dags"]["properties"]["gitSync"]["properties"]["knownHosts"] == {
        "type": ["string", "null"]
    }
    assert ours["$defs"]["container"]["required"] == ["name"]


@pytest.mark.parametrize(
    "bad_path",
    ["dagProcessor.extraVolumeMount", "workers.kubernetes.replicas", "dags.gitSync.sshKnownHosts"],
)
def test_the_walk_catches_a_key_the_chart_does_not_have(bad_path):
    """The agreement check itself: a made-up key in a copy of our schema is reported."""
    import copy

    ours = copy.deepcopy(_load(OURS))
    node = ours
    *parents, leaf = bad_path.split(".")
    for part in parents:
        node = node["properties"][part]
    node["properties"][leaf] = {"type": "string"}
    problems: list[str] = []
    _walk(ours, _load(CHART_SCHEMA), "", problems)
    assert any(bad_path in p for p in problems), problems

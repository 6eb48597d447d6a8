"""Our helm values schema refuses at least what the chart 1.22.0 refuses (issue: `env` entries
the chart's schema refused passed ours, and `helm upgrade` then failed after merge).

Walks the chart's own values.schema.json (read from the chart package in tests/chart/) side by
side with schemas/helm-values.schema.json:
wherever the chart closes an object, requires a key, limits a type or an enum, ours does too.
Then values the chart refuses, at keys we emit and keys users commonly add, must be refused by
`validate`'s schema check.
"""

from __future__ import annotations

import copy
import json
from functools import cache

import pytest
from conftest import TEMPLATE
from helm_chart import chart_schema
from jsonschema import Draft202012Validator

CHART_RULES = "chart"  # the chart package's values.schema.json (tests/chart/)
OURS = TEMPLATE / "schemas" / "helm-values.schema.json"


@cache
def _load(path):
    if path == CHART_RULES:
        return chart_schema()
    return json.loads(path.read_text())


def _resolve(node, root: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    while isinstance(node, dict) and list(node) == ["allOf"] and len(node["allOf"]) == 1:
        node = node["allOf"][0]
    return node if isinstance(node, dict) else {}


def _types(node: dict) -> set | None:
    t = node.get("type")
    return (
        None
        if t is None
        else set(t if isinstance(t, list) else [t]) | ({"number"} if t == "integer" else set())
    )


def _looser(ours, chart, path: str, seen: set, problems: list) -> None:
    """Append to ``problems`` every place where ``ours`` accepts what ``chart`` refuses."""
    o, c = _resolve(ours, _load(OURS)), _resolve(chart, _load(CHART_RULES))
    key = (id(o), id(c))
    if key in seen or not c:
        return
    seen.add(key)
    chart_types, our_types = _types(c), _types(o)
    widened = (
        chart_types | ({"integer"} if "number" in chart_types else set()) if chart_types else set()
    )
    if (
        chart_types is not None
        and "enum" not in o
        and "const" not in o
        and (our_types is None or not our_types <= widened)
    ):
        problems.append(
            f"{path}: ours allows type {our_types or 'any'}, the chart only {sorted(chart_types)}"
        )
    for name in c.get("required", []):
        if name not in o.get("required", []):
            problems.append(f"{path}: the chart requires {name!r}, ours does not")
    if "enum" in c and not set(map(json.dumps, o.get("enum", [None]))) <= set(
        map(json.dumps, c["enum"])
    ):
        problems.append(
            f"{path}: ours allows {o.get('enum', 'any value')}, the chart only {c['enum']}"
        )
    chart_props, our_props = c.get("properties", {}), o.get("properties", {})
    if c.get("additionalProperties") is False:
        if o.get("additionalProperties") is not False:
            problems.append(f"{path}: the chart allows only its keys, ours any")
        for name in our_props:
            if name not in chart_props:
                problems.append(f"{path}.{name}: not a key of the chart")
    for name, sub in chart_props.items():
        if name in our_props:
            _looser(our_props[name], sub, f"{path}.{name}", seen, problems)
        elif o.get("additionalProperties") not in (False, None) and isinstance(
            o.get("additionalProperties"), dict
        ):
            _looser(o["additionalProperties"], sub, f"{path}.{name}", seen, problems)
        elif o.get("additionalProperties") is not False and (
            our_types is None or "object" in our_types
        ):
            problems.append(f"{path}.{name}: the chart has rules for it, ours none")
    if isinstance(c.get("items"), dict):
        if isinstance(o.get("items"), dict):
            _looser(o["items"], c["items"], f"{path}[]", seen, problems)
        elif our_types is None or "array" in our_types:
            problems.append(f"{path}[]: the chart has rules for the items, ours none")
    if isinstance(c.get("additionalProperties"), dict) and isinstance(
        o.get("additionalProperties"), dict
    ):
        _looser(o["additionalProperties"], c["additionalProperties"], f"{path}.*", seen, problems)


def test_our_schema_is_at_least_as_strict_as_the_charts_everywhere():
    problems: list = []
    _looser(_load(OURS), _load(CHART_RULES), "values", set(), problems)
    assert problems == [], "\n".join(problems[:40])


# Values the chart's schema refuses, at keys we emit and keys users commonly add.
REFUSED_BY_THE_CHART = {
    "env entry with valueFrom": (
        "env",
        [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    ),
    "env entry without value": ("env", [{"name": "X"}]),
    "env entry with an unknown key": ("env", [{"name": "X", "value": "1", "valu": "2"}]),
    "secret without secretName": ("secret", [{"envName": "X"}]),
    "worker replicas as text": ("workers", {"replicas": "2"}),
    "nodeSelector with a number": ("nodeSelector", {"disk": 1}),
    "toleration with an unknown key": ("tolerations", [{"key": "a", "operatr": "Exists"}]),
    "resources with an unknown key": ("scheduler", {"resources": {"limit": {"cpu": "1"}}}),
    "config section that is a list": ("config", {"core": ["a"]}),
    "executor that does not exist": ("executor", "CeleryExecutr"),
    "component env with an unknown key": (
        "triggerer",
        {"env": [{"name": "X", "value": "1", "x": 1}]},
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_BY_THE_CHART))
def test_values_the_chart_refuses_are_refused_by_ours(case):
    key, value = REFUSED_BY_THE_CHART[case]
    chart = Draft202012Validator(_load(CHART_RULES))
    ours = Draft202012Validator(_load(OURS))
    document = {key: copy.deepcopy(value)}
    assert list(chart.iter_errors(document)), f"the chart accepts {document}; the case is wrong"
    assert list(ours.iter_errors(document)), f"the chart refuses {document}, ours accepts it"

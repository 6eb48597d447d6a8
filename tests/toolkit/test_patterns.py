"""A schema `pattern` means what ECMA-262 says (airflow_gitops/validate/patterns.py), for the
hook that checks the answers and for `validate` alike: `$` is the end of the text, not also the
place before a final newline, as Python's `re` reads it."""

import json
import re

import pytest
from airflow_gitops.validate import patterns
from conftest import TEMPLATE

SCHEMAS = [
    json.loads((TEMPLATE / "schemas" / name).read_text())
    for name in ("answers.schema.json", "stack.schema.json")
]


@pytest.mark.parametrize(
    ("pattern", "text", "meets"),
    [
        ("^[a-z]+$", "airflow", True),
        ("^[a-z]+$", "airflow\n", False),  # re.search says True
        ("^[a-z$]+$", "a$b", True),  # $ in a class is a dollar sign
        (r"^[a-z]+\$$", "abc$", True),  # so is an escaped one
        (r"^[a-z]+\$$", "abc$\n", False),
        ("^(a|b)$", "b", True),
        ("^(a|b)$", "b\n", False),
        ("^x", "x\n", True),  # no $: what follows is free, in both dialects
    ],
)
def test_dollar_is_the_end_of_the_text(pattern, text, meets):
    assert patterns.search(pattern, text) is meets


def patterns_in(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from patterns_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from patterns_in(item)


@pytest.mark.parametrize("pattern", sorted({p for s in SCHEMAS for p in patterns_in(s)}))
def test_every_schema_pattern_compiles_and_keeps_its_meaning(pattern):
    """Each pattern of both schemas compiles, and differs from plain `re` only at a newline."""
    compiled = patterns.compile_pattern(pattern)
    assert compiled.pattern.count(r"\Z") == re.sub(r"\\.|\[[^\]]*\]", "", pattern).count("$")


def test_the_validator_rejects_a_trailing_newline_jsonschema_alone_accepts():
    from jsonschema import Draft202012Validator

    schema = {"type": "string", "pattern": "^[a-z0-9-]+$"}
    assert Draft202012Validator(schema).is_valid("airflow\n")  # what this module is for
    assert not patterns.validator_class()(schema).is_valid("airflow\n")
    assert patterns.validator_class()(schema).is_valid("airflow")

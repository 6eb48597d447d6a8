"""What a JSON Schema ``pattern`` means, in Python.

A schema's patterns are ECMA-262 regular expressions, where ``$`` (no multiline flag) is the end
of the text. Python's ``re`` also lets ``$`` match before a final newline, so with plain ``re``
(what jsonschema uses) ``"airflow\\n"`` meets ``^[a-z0-9-]+$``, and a namespace, a bucket or a
role name could carry a newline into every file made from it. Here ``$`` means what the schema
says, for the hook that checks the answers and for ``validate`` alike.

This file is the one copy: the template's pre_gen hook loads it from the template's toolkit
before the repo it belongs to exists, so it imports nothing but the standard library.
"""

import re
from functools import lru_cache


@lru_cache(maxsize=None)
def compile_pattern(pattern: str) -> re.Pattern:
    """``pattern`` for Python's ``re`` with ECMA-262's ``$``: an unescaped ``$`` outside a
    character class becomes ``\\Z`` (the very end). Escapes and classes are copied as they are;
    both dialects read them alike for the patterns the schemas use."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))


def search(pattern: str, text: str) -> bool:
    """Whether ``text`` meets ``pattern`` as JSON Schema's ``pattern`` keyword means it."""
    return compile_pattern(pattern).search(text) is not None


@lru_cache(maxsize=1)
def validator_class():
    """jsonschema's Draft 2020-12 validator with this ``pattern`` (imported only when called:
    the hook does so only for answers its quick check is not sure of). Made once: validate
    builds a validator per schema branch from it."""
    from jsonschema import Draft202012Validator, ValidationError, validators

    def pattern(validator, patrn, instance, schema):
        if validator.is_type(instance, "string") and not search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    return validators.extend(Draft202012Validator, {"pattern": pattern})

"""The README's Quickstart is the contract with a new user: two commands that exist and that CI runs."""

from __future__ import annotations

import re

from conftest import TEMPLATE


def quickstart_commands() -> list[str]:
    readme = (TEMPLATE / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```console\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_make_targets_that_exist():
    commands = quickstart_commands()
    assert len(commands) == 2
    makefile = (TEMPLATE / "Makefile").read_text()
    for command in commands:
        target = command.removeprefix("make ").strip()
        assert command.startswith("make ") and re.search(rf"^{target}:", makefile, re.M), command


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in quickstart_commands() if "test" in c)
    assert test_command in (TEMPLATE / ".ci" / "run").read_text()

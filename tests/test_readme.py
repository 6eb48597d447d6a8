"""The README's Quickstart is the contract with a new user: two commands that exist and that CI runs."""

from __future__ import annotations

import re
import subprocess

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


def test_readme_sample_output_has_the_real_file_count(baked):
    """The demo's sample output in the README names the number of files its bake has."""
    from test_demo import load_demo

    repo = baked(**load_demo().ANSWERS)
    readme = (TEMPLATE / "README.md").read_text()
    shown = {int(n) for n in re.findall(r"out/airflow-gitops/?: (\d+) files", readme)}
    files = [p for p in repo.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert shown == {len(files)}


def test_readme_generates_outside_the_template_clone():
    section = (TEMPLATE / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ")[0]
    commands = [line for line in section.splitlines() if line.startswith(".venv/bin/")]
    assert commands and all("--output-dir .." in line for line in commands), commands


def test_make_help_shows_real_values():
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(TEMPLATE), "help", "OUT=elsewhere"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "$(" not in result.stdout and "./elsewhere/" in result.stdout, result.stdout
    targets = {line.split()[0] for line in result.stdout.splitlines()}
    assert {"test", "test-slow", "bake", "demo", "bench"} <= targets


def test_ci_also_runs_the_documented_slow_target():
    assert "make test-slow" in (TEMPLATE / "README.md").read_text()
    assert re.search(r"^make test-slow$", (TEMPLATE / ".ci" / "run").read_text(), re.M)

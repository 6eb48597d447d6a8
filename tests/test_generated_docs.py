"""What the generated README and docs tell a user to run exists in that same repository.

Every `make TARGET` is a target of the generated Makefile, every `python -m airflow_gitops CMD`
is a toolkit command, and every repository file a `kubectl apply -f` names is there (or is one
`make render` writes into build/). A doc that sends a user to a command that is not there is
the first thing a new team meets.
"""

from __future__ import annotations

import ast
import re

import pytest

MODES = ["s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle"]
MAKE = re.compile(r"(?<![\w/.-])make ((?:[a-z][a-z-]*[ \t]*)+)")
TOOLKIT = re.compile(r"python -m airflow_gitops ([a-z][a-z-]*)")
APPLIED = re.compile(r"kubectl apply (?:-f \S+\s*)+")


def code_of(markdown: str) -> str:
    """The parts a user copies: fenced blocks and inline `code` spans (not the prose)."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", markdown, re.S)
    rest = re.sub(r"```[a-z]*\n.*?```", "", markdown, flags=re.S)
    return "\n".join(fenced + re.findall(r"`([^`\n]+)`", rest))


def doc_texts(repo):
    yield "README.md", code_of((repo / "README.md").read_text())
    for path in sorted((repo / "docs").glob("*.md")):
        yield f"docs/{path.name}", code_of(path.read_text())


def make_targets(repo) -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (repo / "Makefile").read_text(), re.M))


def toolkit_commands(repo) -> set[str]:
    """The CLI's command names, read from the repo's cli.py as data: importing another bake's
    toolkit here would replace the one tests/toolkit imports (same package name)."""
    tree = ast.parse((repo / "airflow_gitops" / "cli.py").read_text())
    table = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "COMMANDS"
    )
    return set(ast.literal_eval(table))


@pytest.mark.parametrize("mode", [*MODES, "cloudwatch"])
def test_every_command_the_docs_name_exists(baked, mode):
    answers = {"metrics_backend": mode} if mode == "cloudwatch" else {"dag_source": mode}
    repo = baked(**answers)
    targets, commands = make_targets(repo), toolkit_commands(repo)
    seen_make = set()
    for name, text in doc_texts(repo):
        for match in MAKE.finditer(text):
            for word in match.group(1).split():
                if "=" in word:
                    break  # a variable assignment ends the target list
                seen_make.add(word)
                assert word in targets, f"{name}: `make {word}` is not a target of the Makefile"
        for command in TOOLKIT.findall(text):
            assert command in commands, (
                f"{name}: `python -m airflow_gitops {command}` does not exist"
            )
        for match in APPLIED.finditer(text):
            for path in re.findall(r"-f (\S+)", match.group(0)):
                if path.startswith("build/"):
                    assert (repo / path.replace("build/", "", 1)).exists(), f"{name}: {path}"
                else:
                    assert (repo / path).exists(), (
                        f"{name}: `kubectl apply -f {path}`: no such file"
                    )
    # The first-login path is documented in every mode.
    assert {"admin-user", "ui", "bootstrap", "validate"} <= seen_make

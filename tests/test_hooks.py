"""The hooks never crash: they find the template however cookiecutter is started, and every
shape of jsonschema error (also those about the answers as a whole, which have no `path`)
comes out as one ERROR line."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEFAULTS, TEMPLATE

NOT_TEMPLATE = shutil.ignore_patterns(
    ".git", ".venv*", "out", "__pycache__", ".pytest_cache", ".ruff_cache", "build"
)


def run(argv: list[str], cwd: Path, pwd: Path) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``cwd`` while PWD says ``pwd``: a caller that changed directory
    without its shell knowing (``make -C``, ``os.chdir``, an IDE)."""
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PWD": str(pwd)},
    )


def errors(stderr: str) -> list[str]:
    return [line[len("ERROR: ") :] for line in stderr.splitlines() if line.startswith("ERROR: ")]


@pytest.mark.parametrize("pwd_is", ["elsewhere", "cwd"])
def test_relative_template_path_from_another_directory(tmp_path, pwd_is):
    """`cookiecutter ../x/template` from a folder beside it, with PWD right or stale."""
    here = tmp_path / "somewhere" / "else"
    here.mkdir(parents=True)
    relative = os.path.relpath(TEMPLATE, here)
    result = run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", "out", relative],
        cwd=here,
        pwd=tmp_path if pwd_is == "elsewhere" else here,
    )
    assert result.returncode == 0, result.stderr
    repo = here / "out" / "airflow-gitops"
    assert (repo / "schemas" / "answers.schema.json").is_file()
    assert (repo / "stack.yaml").is_file()
    assert "Traceback" not in result.stderr


def test_api_call_after_chdir_with_relative_path(tmp_path):
    """The Python API with a relative template path after os.chdir: `_repo_dir` is relative
    to a directory PWD does not name."""
    code = (
        "import os, sys; from cookiecutter.main import cookiecutter; os.chdir(sys.argv[1]); "
        "print(cookiecutter(sys.argv[2], no_input=True, output_dir=sys.argv[3]))"
    )
    result = run(
        [sys.executable, "-c", code, str(TEMPLATE.parent), TEMPLATE.name, str(tmp_path / "out")],
        cwd=tmp_path,
        pwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "airflow-gitops" / "schemas").is_dir()


@pytest.mark.parametrize("question", ["project", "namespace", "airflow_release", "aws_region"])
def test_an_answer_ending_in_a_newline_is_one_line_error(tmp_path, question):
    """A schema pattern's `$` is the end of the answer: Python's re alone let "airflow\\n" pass,
    and the newline went into every name made from it."""
    result = run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", "out", str(TEMPLATE),
         f"{question}={DEFAULTS[question]}\n"],
        cwd=tmp_path,
        pwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert question in [line.split(" ", 1)[0] for line in errors(result.stderr)]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "airflow-gitops").exists()


def test_hooks_never_import_from_the_temp_folder(tmp_path):
    """cookiecutter renders each hook into the temp folder and runs it from there, so Python
    puts that folder first on sys.path; a module anyone left there must not replace one of the
    standard library's (before the hooks dropped that entry, this bake ran the planted json.py)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    for name in ("json", "re", "shutil"):
        (temp / f"{name}.py").write_text("raise SystemExit('imported from the temp folder')\n")
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path / "out"),
         str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(temp)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "imported from the temp folder" not in result.stdout + result.stderr
    assert (tmp_path / "out" / "airflow-gitops" / "stack.yaml").is_file()


def test_generation_says_where_the_repo_went_and_what_to_run(tmp_path):
    result = run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", "out", str(TEMPLATE)],
        cwd=tmp_path,
        pwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Created "))
    assert lines[start].startswith("Created out/airflow-gitops/ ")
    commands = [line.split("#")[0].strip() for line in lines[start + 1 : start + 4]]
    assert commands == ["cd out/airflow-gitops", "make install", "make validate"]
    makefile = (tmp_path / "out" / "airflow-gitops" / "Makefile").read_text()
    assert "\ninstall:" in makefile and "\nvalidate:" in makefile


@pytest.fixture(scope="module")
def template_copy(tmp_path_factory) -> Path:
    """A copy of the template whose answers schema the tests below may change."""
    copy = tmp_path_factory.mktemp("template") / "template"
    shutil.copytree(TEMPLATE, copy, ignore=NOT_TEMPLATE)
    return copy


def with_schema(template: Path, **changes) -> None:
    path = template / "schemas" / "answers.schema.json"
    original = json.loads((TEMPLATE / "schemas" / "answers.schema.json").read_text())
    path.write_text(json.dumps({**original, **changes}))


def replay(tmp_path: Path, template: Path, **extra: str) -> Path:
    """A replay file: answers reach the hook verbatim (also unknown ones)."""
    answers = json.loads((template / "cookiecutter.json").read_text())
    answers = {
        k: (v[0] if isinstance(v, list) and not k.startswith("_") else v)
        for k, v in answers.items()
    }
    answers["dag_bucket"] = "airflow-gitops-dags-123456789012-eu-west-1"
    answers["git_repo_url"] = "git@github.com:example-org/airflow-gitops.git"
    path = tmp_path / "replay.json"
    path.write_text(json.dumps({"cookiecutter": {**answers, **extra}}))
    return path


def bake_with_replay(tmp_path: Path, template: Path, answers: Path):
    out = tmp_path / "out"
    result = run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "-o",
            str(out),
            "--replay-file",
            str(answers),
            str(template),
        ],
        cwd=tmp_path,
        pwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr.split("Stopping generation")[0], result.stderr
    assert not out.exists() or list(out.iterdir()) == [], "a refused answer left files behind"
    return errors(result.stderr)


def test_missing_answer_is_one_line(tmp_path, template_copy):
    """Top-level `required` (a schema asking for a question cookiecutter.json lacks; a replay
    file cannot lack one, cookiecutter prompts for it): no path, the name only in the rule."""
    original = json.loads((TEMPLATE / "schemas" / "answers.schema.json").read_text())
    with_schema(template_copy, required=[*original["required"], "team"])
    lines = bake_with_replay(tmp_path, template_copy, replay(tmp_path, template_copy))
    assert lines == [
        "team: missing; cookiecutter.json (or the replay file) must define it",
        "1 answer(s) rejected; nothing was generated.",
    ]


def test_unknown_answer_is_one_line(tmp_path, template_copy):
    """Top-level `additionalProperties`: no path, the extra names only in the instance."""
    with_schema(template_copy, additionalProperties=False)
    lines = bake_with_replay(
        tmp_path, template_copy, replay(tmp_path, template_copy, colour="blue")
    )
    assert lines[:-1] == ['colour = "blue": not a question of this template']


def test_whole_answers_error_is_one_line(tmp_path, template_copy):
    """Any other rule about the answers as a whole names them as `answers`."""
    with_schema(template_copy, maxProperties=3)
    lines = bake_with_replay(tmp_path, template_copy, replay(tmp_path, template_copy))
    assert len(lines) == 2 and lines[0].startswith("answers: "), lines
    assert "\n" not in lines[0]


ANSWERS_SCHEMA = json.loads((TEMPLATE / "schemas" / "answers.schema.json").read_text())
TOOLKIT_PATTERNS = (
    next(TEMPLATE.glob("*cookiecutter.project*")) / "airflow_gitops/validate/patterns.py"
)
HOOK_ANSWERS = 'r"""{{ cookiecutter | tojson }}"""'


def pre_gen_hook(tmp_path: Path) -> Path:
    """pre_gen_project.py as cookiecutter runs it, with empty answers (its source is a template)."""
    source = (TEMPLATE / "hooks" / "pre_gen_project.py").read_text()
    assert source.count(HOOK_ANSWERS) == 1
    hook = tmp_path / "pre_gen_project.py"
    hook.write_text(source.replace(HOOK_ANSWERS, '"{}"'))
    return hook


def answer_variants() -> list[dict]:
    """The default answers, then each question given a value of every kind the schema judges:
    other types, empty, too long, a trailing newline, each allowed choice and every other
    question's default (which fits some patterns and not others); one answer left out; one
    question too many."""
    questions = {
        key: value
        for key, value in json.loads((TEMPLATE / "cookiecutter.json").read_text()).items()
        if not key.startswith("_")
    }
    defaults = {key: v[0] if isinstance(v, list) else v for key, v in questions.items()}
    defaults["dag_bucket"] = "airflow-gitops-dags-123456789012-eu-west-1"
    defaults["git_repo_url"] = "git@github.com:example-org/airflow-gitops.git"
    choices = [choice for v in questions.values() if isinstance(v, list) for choice in v]
    values = [None, True, 0, 5, 3600, 3601, -1, [], {}, "", " ", "x" * 401, "Airflow", "30s"]
    values += [v for v in defaults.values() if isinstance(v, str)] + choices
    values += [v + "\n" for v in defaults.values() if isinstance(v, str)]
    variants = [defaults]
    for key in defaults:
        variants += [{**defaults, key: value} for value in values]
        variants.append({k: v for k, v in defaults.items() if k != key})
    variants.append({**defaults, "colour": "blue"})
    return variants


def schema_validator():
    """jsonschema with a schema `pattern`'s own meaning (the toolkit's patterns.py, which the
    hook uses too): `$` is the end of the text."""
    namespace = runpy.run_path(str(TOOLKIT_PATTERNS))
    return namespace["validator_class"]()(ANSWERS_SCHEMA)


def test_quick_answer_check_agrees_with_jsonschema(tmp_path):
    """The hook skips jsonschema for answers it is sure meet the schema: sure must mean valid,
    and for valid answers it must be sure (else every bake pays for jsonschema again)."""
    hook = runpy.run_path(str(pre_gen_hook(tmp_path)), run_name="pre_gen_hook")
    validator = schema_validator()
    variants = answer_variants()
    disagreements, valid = [], 0
    for answers in variants:
        expected = not any(validator.iter_errors(answers))
        valid += expected
        if hook["surely_valid"](answers, ANSWERS_SCHEMA, ANSWERS_SCHEMA) != expected:
            changed = {k: answers.get(k, "(missing)") for k in {*answers, *variants[0]}}
            changed = {k: v for k, v in changed.items() if v != variants[0].get(k, "(missing)")}
            disagreements.append((f"jsonschema says valid={expected}", changed))
    assert not disagreements, disagreements[:5]
    assert 500 < valid < len(variants) - 500  # both verdicts, many times over


def test_good_answers_never_import_jsonschema(tmp_path):
    """The point of the quick check: a bake with good answers does not import jsonschema; a
    keyword the quick check does not know sends the answers to jsonschema, which reports."""
    defaults = answer_variants()[0]
    code = (
        "import json, runpy, sys\n"
        "hook = runpy.run_path(sys.argv[1], run_name='pre_gen_hook')\n"
        "answers, schema = json.loads(sys.argv[2]), json.loads(sys.argv[3])\n"
        "print(json.dumps([hook['schema_problems'](answers, schema), 'jsonschema' in sys.modules]))"
    )
    hook = str(pre_gen_hook(tmp_path))

    def check(schema: dict) -> list:
        result = subprocess.run(
            [sys.executable, "-c", code, hook, json.dumps(defaults), json.dumps(schema)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(result.stdout)

    assert check(ANSWERS_SCHEMA) == [[], False]
    problems, imported = check({**ANSWERS_SCHEMA, "maxProperties": 3})
    assert imported and [field for field, _ in problems] == ["answers"]

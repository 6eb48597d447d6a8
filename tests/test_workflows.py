"""The generated GitHub Actions workflows, in every baked mode: real linters (actionlint with
its shellcheck integration, zizmor offline, the GitHub workflow schema, shellcheck, yamllint on
every YAML file) and the supply-chain rules of DESIGN.md checked on the parsed files. Then the
DAG import check, once, with the real apache-airflow release stack.yaml names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import PYTHON, TEMPLATE, run_make

BIN = Path(sys.executable).parent
TOOL_ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

MODES = ["s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle"]
EXECUTORS = ["CeleryExecutor", "KubernetesExecutor"]
COMBOS = [dict(dag_source=m, executor=e) for m in MODES for e in EXECUTORS] + [
    dict(dag_source="s3-sync", s3_sync_image="aws-cli", executor=e) for e in EXECUTORS
]

SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\b")


def combo_id(answers: dict) -> str:
    return "-".join(answers.values())


# The workflows are copied verbatim: they differ by mode (pruning), never by executor.
WORKFLOW_MODES = [dict(dag_source=m) for m in MODES] + [
    dict(dag_source="s3-sync", s3_sync_image="aws-cli")
]


@pytest.fixture(params=COMBOS, ids=combo_id, scope="module")
def any_repo(request, baked) -> Path:
    """Every combination: for the checks of every file (values differ by executor)."""
    return baked(**request.param)


@pytest.fixture(params=WORKFLOW_MODES, ids=combo_id, scope="module")
def repo(request, baked) -> Path:
    """One bake per set of workflows."""
    return baked(**request.param)


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not in the template venv (requirements.txt)"
    return str(path)


def run_tool(repo: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, env=TOOL_ENV)


def workflow_files(repo: Path) -> list[Path]:
    return sorted((repo / ".github" / "workflows").glob("*.yml"))


def action_files(repo: Path) -> list[Path]:
    return sorted((repo / ".github" / "actions").glob("*/action.yml"))


# --- real linters ----------------------------------------------------------------------------


def test_actionlint_with_shellcheck(repo):
    files = [str(p) for p in workflow_files(repo)]
    result = run_tool(repo, tool("actionlint"), "-shellcheck", tool("shellcheck"), *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_really_runs_shellcheck(tmp_path):
    """Negative control: an unquoted variable in a run: block is reported through shellcheck."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: rm -rf $TARGET/*\n"
    )
    result = run_tool(tmp_path, tool("actionlint"), "-shellcheck", tool("shellcheck"), str(bad))
    assert result.returncode != 0 and "shellcheck reported issue" in result.stdout, result.stdout


def test_zizmor_offline_finds_nothing(repo):
    result = run_tool(repo, tool("zizmor"), "--offline", "--no-progress", ".github")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "No findings to report" in output, output


def test_workflows_fit_the_github_schemas(repo):
    for schema, files in (
        ("vendor.github-workflows", workflow_files(repo)),
        ("vendor.github-actions", action_files(repo)),
        ("vendor.dependabot", [repo / ".github" / "dependabot.yml"]),
    ):
        assert files
        result = run_tool(
            repo, tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_every_yaml_file(any_repo):
    repo = any_repo
    assert (repo / ".yamllint").is_file()
    result = run_tool(repo, tool("yamllint"), "--strict", "--format", "parsable", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def shell_scripts(repo: Path) -> list[Path]:
    scripts = []
    for path in repo.rglob("*"):
        if not path.is_file() or ".venv" in path.parts:
            continue
        if path.suffix == ".sh":
            scripts.append(path)
        elif path.suffix == "":
            first_line = path.read_bytes()[:128].split(b"\n")[0]
            if first_line.startswith(b"#!") and first_line.endswith((b"sh", b"bash")):
                scripts.append(path)
    return scripts


def test_shellcheck_every_script(any_repo):
    repo = any_repo
    scripts = shell_scripts(repo)
    if not scripts:
        pytest.skip("no shell scripts in this mode (run: blocks are covered by actionlint)")
    result = run_tool(repo, tool("shellcheck"), *map(str, scripts))
    assert result.returncode == 0, result.stdout


def test_make_lint_runs_the_same_checks(default_repo):
    """`make lint` is what the validate workflow and a laptop run; it passes as generated."""
    run_make(default_repo, "lint", env=TOOL_ENV)


# --- supply-chain rules, on the parsed files -------------------------------------------------


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def steps_of(document: dict):
    if "runs" in document:  # composite action
        yield "action", document["runs"].get("steps", [])
        return
    for name, job in document["jobs"].items():
        yield name, job.get("steps", [])


def test_permissions_timeouts_and_triggers(repo):
    for path in workflow_files(repo):
        workflow = load(path)
        on = workflow.get("on", workflow.get(True))
        assert workflow["permissions"] == {}, f"{path.name}: top-level permissions must be {{}}"
        assert not {"pull_request_target", "workflow_run"} & set(on), path.name
        for name, job in workflow["jobs"].items():
            where = f"{path.name}: job {name}"
            assert isinstance(job.get("permissions"), dict), f"{where}: no permissions"
            assert isinstance(job.get("timeout-minutes"), int), f"{where}: no timeout"
            assert job.get("runs-on") == "ubuntu-24.04", f"{where}: runner not pinned"
            if job["permissions"].get("id-token") == "write":
                # Outside the environment only the nightly drift check, whose role can only
                # read (its trust names this workflow file; tests/test_iam_least_privilege.py).
                roles = [
                    s["with"]["role-to-assume"]
                    for s in job["steps"]
                    if "configure-aws-credentials" in s.get("uses", "")
                ]
                assert "environment" in job or roles == [
                    "${{ steps.facts.outputs.drift_check_role_arn }}"
                ], f"{where}: OIDC token outside an environment"
            assert set(job["permissions"].values()) <= {"read", "write", "none"}
            writes = {k for k, v in job["permissions"].items() if v == "write"}
            assert writes <= {"id-token"}, f"{where}: writes {writes}"


def test_every_action_is_pinned_by_sha_with_a_version_comment(repo):
    seen = set()
    for path in workflow_files(repo) + action_files(repo):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            match = re.match(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", line)
            if not match:
                continue
            ref, rest = match.groups()
            if ref.startswith("$/"):
                seen.add(ref)
                continue  # this repository's own action, at the workflow's own commit
            assert SHA_PIN.match(ref), f"{path.name}:{number}: {ref} is not pinned by full SHA"
            assert VERSION_COMMENT.search(rest), f"{path.name}:{number}: no # vX.Y.Z comment"
            seen.add(ref.split("@")[0])
    assert {
        "actions/checkout",
        "actions/setup-python",
        "aws-actions/configure-aws-credentials",
        "azure/setup-helm",
    } <= seen


def test_one_sha_per_action(repo):
    pins: dict[str, set[str]] = {}
    for path in workflow_files(repo) + action_files(repo):
        for ref in re.findall(r"uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})", path.read_text()):
            pins.setdefault(ref[0], set()).add(ref[1])
    assert all(len(shas) == 1 for shas in pins.values()), pins


def test_checkouts_do_not_persist_credentials(repo):
    for path in workflow_files(repo):
        for job, steps in steps_of(load(path)):
            for step in steps:
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{path.name}: {job}"


def test_no_expression_inside_run(repo):
    """Every value reaches a script through env:, never pasted into its source."""
    for path in workflow_files(repo) + action_files(repo):
        for job, steps in steps_of(load(path)):
            for step in steps:
                assert "${{" not in step.get("run", ""), f"{path.name}: {job}: {step.get('name')}"


def test_workflows_are_copied_verbatim(repo):
    """`${{ }}` and `$/` survive generation byte for byte (cookiecutter _copy_without_render)."""
    source = TEMPLATE / "{{cookiecutter.project}}" / ".github"
    for path in workflow_files(repo) + action_files(repo):
        original = source / path.relative_to(repo / ".github")
        assert path.read_text() == original.read_text(), path.name
    assert (
        "${{ matrix.target.environment }}"
        in (repo / ".github" / "workflows" / "deploy.yml").read_text()
    )


# --- the DAG import check with real Airflow, once --------------------------------------------


def airflow_venv(version: str) -> Path:
    """A venv with apache-airflow==version, cached across runs and clones (install once per
    machine): $AIRFLOW_TEST_VENV, else under the user's cache folder."""
    override = os.environ.get("AIRFLOW_TEST_VENV")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = f"{version}-py{sys.version_info[0]}.{sys.version_info[1]}"
    return cache / "airflow-eks-gitops" / f"airflow-{tag}"


@pytest.mark.slow
@pytest.mark.xdist_group("airflow-venv")  # one worker: they share the cached Airflow venv
def test_dag_check_with_real_airflow(default_repo, tmp_path):
    stack = yaml.safe_load((default_repo / "stack.yaml").read_text())
    version = stack["airflow"]["version"]
    venv = airflow_venv(version)
    start = time.monotonic()
    # Offline here: PyPI only, so no constraints file (the workflow uses Airflow's).
    installed = run_make(
        default_repo,
        "airflow-venv",
        f"AIRFLOW_VENV={venv}",
        "AIRFLOW_CONSTRAINTS=",
    )
    install_seconds = time.monotonic() - start
    print(f"\nairflow-venv: {install_seconds:.1f} s ({installed.stdout.strip()})")

    result = run_make(default_repo, "dag-check", f"AIRFLOW_PYTHON={venv}/bin/python")
    assert f"Airflow {version}: 1 DAG(s) imported, 0 import error(s)" in result.stdout

    broken = tmp_path / "broken"
    shutil.copytree(default_repo, broken)
    (broken / "dags" / "broken_dag.py").write_text("import no_such_module_anywhere\n")
    env = {**os.environ, "GITHUB_ACTIONS": "true"}
    result = run_make(
        broken, "dag-check", f"AIRFLOW_PYTHON={venv}/bin/python", env=env, check=False
    )
    assert result.returncode != 0
    assert "dags/broken_dag.py" in result.stderr
    assert "::error file=dags/broken_dag.py,title=DAG import error::" in result.stdout
    assert "1 import error(s)" in result.stdout


# The amazon provider the backends test needs next to Airflow (its S3 task handler and its
# Secrets Manager backend). It goes into a venv of its own that sees the cached Airflow venv
# through a .pth file: the Airflow venv stays exactly what `make airflow-venv` made (the
# constraints test compares it with the committed pins).
AMAZON_PROVIDER = "apache-airflow-providers-amazon==9.39.0"


def airflow_with_amazon(version: str) -> Path | None:
    """python of a venv = the cached Airflow venv + the amazon provider; None before Airflow."""
    base = airflow_venv(version)
    if not (base / "bin" / "python").exists():
        return None
    venv = base.with_name(base.name + "-amazon")
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        base_site = subprocess.run(
            [
                str(base / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(site, "airflow-base.pth").write_text(base_site + "\n")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            AMAZON_PROVIDER,
            f"apache-airflow=={version}",
        ],
        check=True,
    )
    return python


@pytest.mark.slow
@pytest.mark.xdist_group("airflow-venv")  # one worker: they share the cached Airflow venv
def test_task_logs_and_connections_through_airflows_own_classes(default_repo):
    """The toolkit's test_airflow_backends with real Airflow, as CI runs it: a task log
    written to and read back from the log prefix by the S3 task handler, and a connection and a
    variable resolved by SecretsManagerBackend, configured exactly as helm/values.yaml says,
    against moto. It must run here, not skip."""
    version = yaml.safe_load((default_repo / "stack.yaml").read_text())["airflow"]["version"]
    python = airflow_with_amazon(version)
    if python is None:
        pytest.skip("runs after test_dag_check_with_real_airflow installed Airflow")
    env = {**os.environ, "AIRFLOW_PYTHON": str(python)}
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/toolkit/test_airflow_backends.py",
        ],
        cwd=TEMPLATE,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.xdist_group("airflow-venv")  # one worker: they share the cached Airflow venv
def test_demo_shows_a_task_log_and_a_connection_through_airflow(default_repo, tmp_path):
    """`AIRFLOW_PYTHON=... make demo` (README): its last step stores a connection and a
    variable with `make connection` / `make variable`, resolves them through Airflow's
    SecretsManagerBackend and writes and reads a task log through the S3 task handler."""
    version = yaml.safe_load((default_repo / "stack.yaml").read_text())["airflow"]["version"]
    python = airflow_with_amazon(version)
    if python is None:
        pytest.skip("runs after test_dag_check_with_real_airflow installed Airflow")
    env = {**os.environ, "AIRFLOW_PYTHON": str(python)}
    result = subprocess.run(
        [PYTHON, str(TEMPLATE / "tools" / "demo.py"), "--out", str(tmp_path / "out")],
        cwd=TEMPLATE,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    step = next(line for line in result.stdout.splitlines() if re.match(r"\[(\d+)/\1\] ", line))
    assert "Airflow: S3 task log + Secrets Manager" in step and " ok " in step, step


PUBLISH_TWICE = """
import os, subprocess, sys
from pathlib import Path
from airflow_gitops import efs_publish
volume, dags = Path(sys.argv[1]), Path("dags")
for n in range(2):
    (dags / "extra.py").write_text(f"# revision {n}\\n")
    archive, digest = efs_publish.dag_archive(dags)
    subprocess.run(["sh", "-c", efs_publish.PUBLISH_SCRIPT, "publish", f"snap-{n}", digest],
                   input=archive, check=True, env={**os.environ, "DAGS_ROOT": str(volume)})
"""

DAGBAG = """
import sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False, safe_mode=False)
print(sorted(bag.dag_ids), sorted(d.fileloc for d in bag.dags.values()), dict(bag.import_errors))
"""


@pytest.mark.slow
@pytest.mark.xdist_group("airflow-venv")  # one worker: they share the cached Airflow venv
def test_efs_snapshots_are_invisible_to_airflow(baked, tmp_path):
    """efs mode: after two publishes the volume holds two snapshots, and Airflow, reading the
    volume root as the chart mounts it, parses each DAG once, through `current/`."""
    repo = tmp_path / "efs"
    shutil.copytree(baked(dag_source="efs"), repo)
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run([PYTHON, "-c", PUBLISH_TWICE, str(volume)], cwd=repo, check=True)
    assert len(list((volume / "snapshots").iterdir())) == 2
    version = yaml.safe_load((repo / "stack.yaml").read_text())["airflow"]["version"]
    python = airflow_venv(version) / "bin" / "python"
    if not python.exists():
        pytest.skip("runs after test_dag_check_with_real_airflow installed Airflow")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
    }
    result = subprocess.run(
        [str(python), "-c", DAGBAG, str(volume)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("['example_delivery_check'] ['" + str(volume / "current")), last
    assert last.endswith("{}"), last

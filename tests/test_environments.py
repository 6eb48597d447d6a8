"""Environments (issue 17): one repository describing dev, staging and prod, with promotion by
pull request.

- A one-environment repo is what it always was: no environments section, no references.
- The first environment of a multi-environment repo *is* the one-environment repo of the same
  answers: every shared file, filled for it, is byte for byte the one-environment file.
- Every mode bakes clean with two and three environments, and each later environment gets
  names of its own.
- What `validate` must catch: environments sharing a bucket, a role prefix or a namespace;
  an overlay key the chart does not have; a reference to no fact; a pin to a commit the
  previous environment never ran.
- `make promote` / `make diff`, `ci-facts --targets` (what a push deploys) and the rendered
  manifests per environment, with the chart the project carries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PYTHON, run_make

MODES = ["s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle"]
TWO = "dev,prod"
THREE = "dev,staging,prod"
# Files every environment shares, whose facts are filled per environment.
SHARED_GLOBS = ("iam/*.json", "k8s/*.yaml", "helm/values.yaml", "monitoring/cloudwatch-*.json")


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c",
         "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=repo, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def toolkit(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "airflow_gitops", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def filled(repo: Path, env: str) -> dict[str, str]:
    """Every shared file of ``repo`` as environment ``env`` sees it (the toolkit's own fill)."""
    code = (
        "import json, sys; from pathlib import Path; "
        "from airflow_gitops.stack import load_stack, read_filled; "
        "root = Path('.'); view = load_stack(root, sys.argv[1] or None); "
        "globs = sys.argv[2:]; "
        "print(json.dumps({p.as_posix(): read_filled(p, view) "
        "for g in globs for p in sorted(root.glob(g))}))"
    )
    result = subprocess.run(
        [PYTHON, "-c", code, env, *SHARED_GLOBS], cwd=repo, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def view(repo: Path, env: str | None) -> dict:
    code = (
        "import json, sys; from airflow_gitops.stack import load_stack; "
        "print(json.dumps(load_stack('.', sys.argv[1] or None)))"
    )
    result = subprocess.run(
        [PYTHON, "-c", code, env or ""], cwd=repo, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def validate(repo: Path) -> subprocess.CompletedProcess:
    return toolkit(repo, "validate")


def committed_copy(source: Path, tmp_path: Path) -> Path:
    """A copy of a bake as a git repository on main with one commit."""
    repo = tmp_path / "repo"
    shutil.copytree(source, repo)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "generated")
    return repo


# --- shape -----------------------------------------------------------------------------------


def test_one_environment_repo_has_no_environments_and_no_references(baked):
    repo = baked()
    stack = yaml.safe_load((repo / "stack.yaml").read_text())
    assert "environments" not in stack
    assert not (repo / "environments").exists()
    for glob in SHARED_GLOBS:
        for path in repo.glob(glob):
            assert "${stack." not in path.read_text(), path


# Every mode, and the options whose files hold the most facts (pod roles, the load balancer's
# certificate, the Prometheus operator's objects, the CloudWatch agent).
OPTIONS = [dict(dag_source=m, metrics_backend="cloudwatch") for m in MODES] + [
    dict(
        dag_source="s3-sync",
        s3_sync_image="aws-cli",
        aws_pod_credentials="pod-identity",
        size="production",
        ui_access="alb",
        alb_certificate_arn="arn:aws:acm:eu-west-1:123456789012:certificate/0b3c5a2e-1d4f-4e6a-9b7c-2f8e1a6d4c3b",
        metrics_scrape="servicemonitor",
        executor="KubernetesExecutor",
    ),
    dict(dag_source="efs", aws_pod_credentials="pod-identity", metrics_backend="cloudwatch"),
]


@pytest.mark.parametrize("answers", OPTIONS, ids=lambda a: "-".join(a.values())[:60])
def test_the_first_environment_is_the_one_environment_repo(baked, answers):
    """Filled for dev, every shared file of a dev,prod repo is the file of a one-environment repo
    made with the same answers (dev's GitHub environment is its name); its facts are the same."""
    mode = answers["dag_source"]
    single = baked(github_environment="dev", **answers)
    multi = baked(environments=TWO, **answers)
    expected = filled(single, "")
    got = filled(multi, "dev")
    assert sorted(got) == sorted(expected)
    # The one deliberate difference: the EFS StorageClass is cluster-wide and names one
    # environment's file system, so with several it carries the environment's project prefix.
    renamed = ('"airflow-efs-dags"', '"airflow-gitops-efs-dags"')
    for path, text in expected.items():
        assert got[path] == text.replace(*renamed), path
    single_facts, dev_facts = view(single, None), view(multi, "dev")
    if mode == "efs":
        single_facts["dags"]["efs"]["storage_class"] = "airflow-gitops-efs-dags"
    assert dev_facts == single_facts


@pytest.mark.parametrize("environments", [TWO, THREE])
@pytest.mark.parametrize("mode", MODES)
def test_every_environment_of_every_mode_validates_clean(baked, mode, environments):
    repo = baked(dag_source=mode, environments=environments)
    result = validate(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    names = environments.split(",")
    for previous, name in zip(names, names[1:]):
        pin = (repo / "environments" / name / "release.yaml").read_text()
        assert "commit: null" in pin and f"FROM={previous} TO={name}" in pin
    assert not (repo / "environments" / names[0] / "release.yaml").exists()
    for name in names:
        assert (repo / "environments" / name / "values.yaml").is_file()


def test_a_later_environment_gets_names_of_its_own(baked):
    repo = baked(environments=TWO)
    prod = view(repo, "prod")
    assert prod["project"] == "airflow-gitops-prod"
    assert prod["airflow"]["namespace"] == "airflow-prod"
    assert prod["github"]["environment"] == "prod"
    assert prod["aws"]["deploy_role"] == "airflow-gitops-prod-deploy"
    assert prod["dags"]["bucket"] == "airflow-gitops-dags-123456789012-eu-west-1-prod"
    assert prod["logs"]["bucket"] == "airflow-gitops-prod-logs-123456789012"
    assert prod["secrets"]["connections_prefix"] == "airflow/airflow-gitops-prod/connections"
    files = filled(repo, "prod")
    trust = json.loads(files["iam/deploy-role-trust.json"])
    subject = trust["Statement"][0]["Condition"]["StringEquals"][
        "token.actions.githubusercontent.com:sub"
    ]
    assert ":environment:prod:" in subject
    policy = files["iam/dag-read-policy.json"]
    assert "arn:aws:s3:::airflow-gitops-dags-123456789012-eu-west-1-prod" in policy
    assert 'airflow-gitops-dags-123456789012-eu-west-1"' not in policy
    manifests = yaml.safe_load_all(files["k8s/serviceaccounts.yaml"])
    assert {d["metadata"]["namespace"] for d in manifests if d} == {"airflow-prod"}


def test_each_environment_has_its_own_ui_name(baked, tmp_path):
    alb = dict(
        ui_access="alb",
        alb_certificate_arn="arn:aws:acm:eu-west-1:123456789012:certificate/0b3c5a2e-1d4f-4e6a-9b7c-2f8e1a6d4c3b",
    )
    repo = baked(environments=TWO, **alb)
    assert validate(repo).returncode == 0
    prod = yaml.safe_load(filled(repo, "prod")["helm/values.yaml"])
    assert prod["ingress"]["apiServer"]["hosts"][0]["name"] == "prod.airflow.example.com"
    assert prod["config"]["api"]["base_url"] == "https://prod.airflow.example.com"
    single = yaml.safe_load((baked(**alb) / "stack.yaml").read_text())
    assert single["ui"]["hostname"] == "airflow.example.com"
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    edit(copy / "stack.yaml", '"prod.airflow.example.com"', '"airflow.example.com"')
    assert "environments dev and prod share ui.hostname" in findings(copy)


def test_commands_ask_which_environment(baked):
    repo = baked(environments=TWO)
    result = toolkit(repo, "render", "--out", "/nonexistent/never-written")
    assert result.returncode == 2
    assert "environments dev, prod: say which one" in result.stderr
    result = toolkit(repo, "--env", "qa", "ci-facts")
    assert result.returncode == 2 and "known: dev, prod" in result.stderr
    facts = toolkit(repo, "--env", "prod", "ci-facts", "--json")
    assert json.loads(facts.stdout)["namespace"] == "airflow-prod"
    # make takes ENV= from its command line only: a shell's own $ENV (sh's startup file) is
    # not an environment name.
    single = baked()
    shell_env = {**os.environ, "ENV": "/etc/shrc"}
    assert run_make(single, "validate", env=shell_env).returncode == 0
    wrong = run_make(single, "plan", "ENV=prod", check=False)
    assert wrong.returncode != 0 and "has no environments" in wrong.stderr


# --- what validate must catch ----------------------------------------------------------------


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def findings(repo: Path) -> str:
    result = validate(repo)
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout


MUTATIONS = {
    "bucket": (
        "stack.yaml",
        'bucket: "airflow-gitops-dags-123456789012-eu-west-1-prod"',
        'bucket: "airflow-gitops-dags-123456789012-eu-west-1"',
        "environments dev and prod share dags.bucket",
    ),
    "role prefix": (
        "stack.yaml",
        'project: "airflow-gitops-prod"',
        'project: "airflow-gitops"',
        "environments dev and prod share project 'airflow-gitops'",
    ),
    "namespace": (
        "stack.yaml",
        'namespace: "airflow-prod"',
        'namespace: "airflow"',
        "environments dev and prod share airflow.namespace 'airflow'",
    ),
    "overlay key": (
        "environments/prod/values.yaml",
        "{}",
        "scheduler:\n  replicaz: 3",
        "environments/prod/values.yaml:6:3: unknown key 'replicaz' under scheduler",
    ),
    "reference": (
        "iam/deploy-role-policy.json",
        "${stack.aws.account_id}",
        "${stack.aws.acount_id}",
        "${stack.aws.acount_id}: stack.yaml has no such fact [unknown-reference]",
    ),
    "folder": ("environments/prod/values.yaml", "{}", "{}", None),
}


@pytest.mark.parametrize("mistake", [m for m in MUTATIONS if m != "folder"])
def test_validate_catches(baked, tmp_path, mistake):
    repo = tmp_path / "repo"
    shutil.copytree(baked(environments=TWO), repo)
    path, old, new, message = MUTATIONS[mistake]
    edit(repo / path, old, new)
    assert message in findings(repo)


def test_a_shared_namespace_on_another_cluster_is_fine(baked, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(baked(environments=TWO), repo)
    stack = repo / "stack.yaml"
    edit(stack, 'namespace: "airflow-prod"', 'namespace: "airflow"')
    text = stack.read_text()
    prod = text.index("  prod:")
    stack.write_text(text[:prod] + text[prod:].replace('"data-platform"', '"prod-cluster"'))
    result = validate(repo)
    assert result.returncode == 0, result.stdout


def test_a_folder_of_no_environment_is_a_finding(baked, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(baked(environments=TWO), repo)
    shutil.copytree(repo / "environments" / "prod", repo / "environments" / "qa")
    assert "environments/qa:1:1: no environment 'qa' in stack.yaml" in findings(repo)


def test_pins_must_name_what_the_previous_environment_ran(baked, tmp_path):
    repo = committed_copy(baked(environments=THREE), tmp_path)
    main = git(repo, "rev-parse", "HEAD")
    staging, prod = (repo / "environments" / n / "release.yaml" for n in ("staging", "prod"))
    # A commit only on a side branch: dev (the deploy branch) never ran it.
    git(repo, "switch", "-qc", "side")
    (repo / "dags" / "side.py").write_text("# only on a branch\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "side")
    side = git(repo, "rev-parse", "HEAD")
    git(repo, "switch", "-q", "main")
    edit(staging, "commit: null", f"commit: {side}")
    assert f"commit {side[:12]} is not on refs/heads/main: dev never ran it" in findings(repo)
    edit(staging, f"commit: {side}", "commit: 12345")
    assert "commit: 12345 is not a full 40-character commit id" in findings(repo)
    edit(staging, "commit: 12345", "commit: " + "f" * 40)
    assert "is not in this repository's history" in findings(repo)
    edit(staging, "commit: " + "f" * 40, f"commit: {main}")
    assert validate(repo).returncode == 0
    # prod may only run what staging ran: main is pinned for staging (in the working tree)
    edit(prod, "commit: null", f"commit: {side}")
    assert f"commit {side[:12]} was never pinned for staging" in findings(repo)
    edit(prod, f"commit: {side}", f"commit: {main}")
    assert validate(repo).returncode == 0
    prod.unlink()
    assert "`make promote FROM=staging TO=prod` writes it" in findings(repo)


# --- promotion -------------------------------------------------------------------------------


def test_promote_writes_the_pin_and_diff_shows_what_moves(baked, tmp_path):
    repo = committed_copy(baked(environments=TWO), tmp_path)
    pin = repo / "environments" / "prod" / "release.yaml"
    before = pin.read_text()
    first = git(repo, "rev-parse", "HEAD")
    run_make(repo, "promote", "FROM=dev", "TO=prod")
    assert pin.read_text() == before.replace("commit: null", f"commit: {first}")
    assert validate(repo).returncode == 0
    git(repo, "commit", "-qam", "promote dev to prod")

    values = repo / "helm" / "values.yaml"
    edit(values, "\nworkers:\n", "\nworkers:\n  replicas: 3\n")
    (repo / "dags" / "new_dag.py").write_text("# a new DAG\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "more workers, a DAG")
    second = git(repo, "rev-parse", "HEAD")
    diff = run_make(repo, "diff", "FROM=dev", "TO=prod").stdout
    assert f"prod: {first[:12]} -> {second[:12]} (2 commits)" in diff
    assert "values:" in diff and "helm/values.yaml" in diff
    assert "DAGs:" in diff and "dags/new_dag.py" in diff
    assert "images:" not in diff
    assert f"commit: {first}" in pin.read_text(), "diff must not write the pin"

    run_make(repo, "promote", "FROM=dev", "TO=prod")
    assert f"commit: {second}" in pin.read_text()
    again = run_make(repo, "promote", "FROM=dev", "TO=prod").stdout
    assert "prod already runs" in again


def test_promote_refuses_what_is_not_the_next_environment(baked, tmp_path):
    repo = committed_copy(baked(environments=THREE), tmp_path)
    skip = toolkit(repo, "promote", "--from", "dev", "--to", "prod")
    assert skip.returncode == 2
    assert "prod does not follow dev in stack.yaml's order (dev -> staging -> prod)" in skip.stderr
    empty = toolkit(repo, "promote", "--from", "staging", "--to", "prod")
    assert empty.returncode == 2 and "staging runs nothing yet" in empty.stderr
    single = toolkit(baked(), "promote", "--from", "prod", "--to", "prod")
    assert single.returncode == 2 and "one environment" in single.stderr


def test_a_push_deploys_the_first_environment_and_a_pin_change_its_environment(baked, tmp_path):
    repo = committed_copy(baked(environments=TWO), tmp_path)
    start = git(repo, "rev-parse", "HEAD")

    def targets(before: str) -> list[dict]:
        result = toolkit(repo, "ci-facts", "--targets", before)
        assert result.returncode == 0, result.stderr
        line = next(x for x in result.stdout.splitlines() if x.startswith("targets="))
        return json.loads(line.removeprefix("targets="))

    edit(repo / "helm" / "values.yaml", "\nworkers:\n", "\nworkers:\n  replicas: 2\n")
    git(repo, "commit", "-qam", "config")
    config = git(repo, "rev-parse", "HEAD")
    assert targets(start) == [{"name": "dev", "environment": "dev", "ref": config}]
    run_make(repo, "promote", "FROM=dev", "TO=prod")
    git(repo, "commit", "-qam", "promote")
    # Only the pin changed: prod deploys the pinned commit, dev has nothing new.
    assert targets(config) == [{"name": "prod", "environment": "prod", "ref": config}]
    # A manual run (no "before"): every environment that has something to run.
    head = git(repo, "rev-parse", "HEAD")
    assert [t["name"] for t in targets("")] == ["dev", "prod"]
    assert targets("0" * 40)[0] == {"name": "dev", "environment": "dev", "ref": head}
    one = toolkit(baked(), "ci-facts", "--targets", "")
    assert '"name":"","environment":"production"' in one.stdout


# --- rendered per environment, with the chart --------------------------------------------------


def test_each_environment_renders_its_own_manifests_with_its_overlay(baked, tmp_path):
    from helm_chart import CHART_PACKAGE, helm

    repo = tmp_path / "repo"
    shutil.copytree(baked(environments=TWO), repo)
    edit(repo / "environments" / "prod" / "values.yaml", "{}", "scheduler:\n  replicas: 3")
    out = tmp_path / "manifests"
    result = toolkit(
        repo,
        "manifests",
        "--offline",
        "--chart",
        str(CHART_PACKAGE),
        "--each-environment",
        str(out),
        env={"HELM": str(helm())},
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dev.yaml", "prod.yaml"]

    def scheduler(name: str) -> tuple[int, set]:
        docs = [d for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()) if d]
        namespaces = {d["metadata"].get("namespace") for d in docs} - {None}
        deployment = next(
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-scheduler")
        )
        return deployment["spec"]["replicas"], namespaces

    assert scheduler("dev") == (1, {"airflow"})
    assert scheduler("prod") == (3, {"airflow-prod"})

"""Which workflows run for which change: each baked workflow's `on:` triggers and `paths`
filters, evaluated with GitHub's glob rules against sample change sets.

The contract (issue 5): a pull request or push that touches only dags/ runs only the DAG jobs,
and a configuration change never re-uploads DAGs. The evaluator implements the subset of
GitHub's filter syntax the workflows use (`*`, `**`, `?`, `!` negation, last match wins,
`branches` and `paths` together, `paths-ignore`), and is itself checked against the examples of
GitHub's filter pattern cheat sheet.
"""

from __future__ import annotations

import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

# --- GitHub's filter patterns ------------------------------------------------------------------


@lru_cache(maxsize=None)
def glob_regex(pattern: str) -> re.Pattern:
    """GitHub filter glob -> regex: `*` stays in one path segment, `**` crosses them (and
    `**/` may match no directory at all); `?` and `+` make the preceding character optional or
    repeatable, as GitHub documents them (they are not the shell's `?`)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] in "?+" and out:
            out[-1] = f"(?:{out[-1]}){pattern[i]}"
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def included(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` passes a list of patterns: the last pattern that matches decides."""
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if glob_regex(pattern[1:] if negated else pattern).match(path):
            verdict = not negated
    return verdict


def event_triggers(workflow: dict, event: str, branch: str, changed: list[str]) -> bool:
    """Whether a ``push``/``pull_request`` event with these changed files starts the workflow.

    For pull_request, ``branch`` is the base branch (what GitHub's `branches` filter reads)."""
    on = workflow.get("on", workflow.get(True))  # PyYAML reads a bare `on` as True
    if isinstance(on, str):
        on = {on: None}
    elif isinstance(on, list):
        on = dict.fromkeys(on)
    if event not in on:
        return False
    config = on[event] or {}
    if "branches" in config and not included(branch, config["branches"]):
        return False
    if "branches-ignore" in config and included(branch, config["branches-ignore"]):
        return False
    if "paths" in config and not any(included(p, config["paths"]) for p in changed):
        return False
    if "paths-ignore" in config and all(included(p, config["paths-ignore"]) for p in changed):
        return False
    return True


# GitHub's "Filter pattern cheat sheet": pattern(s), paths that match, paths that do not.
CHEAT_SHEET = [
    (["*"], ["README.md", "server.rb"], ["docs/file.txt"]),
    (["*.jsx?"], ["page.js", "page.jsx"], ["page.ts"]),
    (["**"], ["all/the/files.md"], []),
    (["*.js"], ["app.js", "index.js"], ["js/index.js"]),
    (["**.js"], ["index.js", "js/index.js", "src/js/app.js"], ["index.ts"]),
    (["docs/*"], ["docs/README.md", "docs/file.txt"], ["docs/a/b.md"]),
    (["docs/**"], ["docs/README.md", "docs/mona/octocat.txt"], ["README.md"]),
    (
        ["docs/**/*.md"],
        ["docs/README.md", "docs/mona/hello-world.md", "docs/a/markdown/file.md"],
        ["docs/a.txt"],
    ),
    (
        ["**/docs/**"],
        ["docs/hello.md", "dir/docs/my-file.txt", "space/docs/plan/space.doc"],
        ["doc/x.md"],
    ),
    (["**/README.md"], ["README.md", "js/README.md"], ["README.txt"]),
    (["**/*src/**"], ["a/src/app.js", "my-src/code/js/app.js"], ["a/sr/app.js"]),
    (["**/*-post.md"], ["my-post.md", "path/their-post.md"], ["post.md"]),
    (
        ["**/migrate-*.sql"],
        ["migrate-10909.sql", "db/migrate-v1.0.sql", "db/sept/migrate-v1.sql"],
        ["migrate.sql"],
    ),
    (["*.md", "!README.md"], ["hello.md"], ["README.md", "docs/hello.md"]),
    (["*.md", "!README.md", "README*"], ["hello.md", "README.md", "README.doc"], []),
]


@pytest.mark.parametrize("patterns,matching,other", CHEAT_SHEET, ids=lambda v: str(v))
def test_glob_semantics_follow_githubs_cheat_sheet(patterns, matching, other):
    for path in matching:
        assert included(path, patterns), (patterns, path)
    for path in other:
        assert not included(path, patterns), (patterns, path)


# --- the baked workflows -----------------------------------------------------------------------

MODES = {
    "s3-sync-own-image": dict(dag_source="s3-sync", s3_sync_image="own-image"),
    "s3-sync-aws-cli": dict(dag_source="s3-sync", s3_sync_image="aws-cli"),
    "git-sync": dict(dag_source="git-sync"),
    "efs": dict(dag_source="efs"),
    "git-bundle": dict(dag_source="git-bundle"),
    "s3-bundle": dict(dag_source="s3-bundle"),
}
# Which workflow files each mode keeps (post_gen prunes the rest).
EXPECTED_WORKFLOWS = {
    "s3-sync-own-image": {
        "validate",
        "dag-check",
        "deploy",
        "drift-check",
        "build-airflow-image",
        "sync-dags",
        "build-sync-image",
    },
    "s3-sync-aws-cli": {
        "validate",
        "dag-check",
        "deploy",
        "drift-check",
        "build-airflow-image",
        "sync-dags",
    },
    "git-sync": {"validate", "dag-check", "deploy", "drift-check", "build-airflow-image"},
    "efs": {"validate", "dag-check", "deploy", "drift-check", "build-airflow-image", "sync-dags"},
    "git-bundle": {"validate", "dag-check", "deploy", "drift-check", "build-airflow-image"},
    "s3-bundle": {
        "validate",
        "dag-check",
        "deploy",
        "drift-check",
        "build-airflow-image",
        "sync-dags",
    },
}
DEPLOY_BRANCH = "main"  # the default answer


def workflows(repo: Path) -> dict[str, dict]:
    return {
        p.stem: yaml.safe_load(p.read_text())
        for p in sorted((repo / ".github" / "workflows").glob("*.yml"))
    }


@pytest.fixture(params=list(MODES), scope="module")
def mode(request):
    return request.param


@pytest.fixture(scope="module")
def repo(mode, baked):
    return baked(**MODES[mode])


def runs(repo: Path, event: str, changed: list[str], branch: str = DEPLOY_BRANCH) -> set[str]:
    return {
        name
        for name, workflow in workflows(repo).items()
        if event_triggers(workflow, event, branch, changed)
    }


def test_each_mode_has_exactly_its_workflows(mode, repo):
    assert set(workflows(repo)) == EXPECTED_WORKFLOWS[mode]


def with_sync(mode: str, names: set[str]) -> set[str]:
    """``names`` plus sync-dags where the mode has it."""
    return names | ({"sync-dags"} & EXPECTED_WORKFLOWS[mode])


# (change set, workflows a push to the deploy branch runs, workflows a pull request runs)
SAMPLES = [
    (["dags/example_dag.py"], set(), {"dag-check"}),
    (["dags/team/etl.py", "dags/team/sql/query.sql"], set(), {"dag-check"}),
    (["helm/values.yaml"], {"deploy"}, {"validate"}),
    (["k8s/efs-pvc.yaml"], {"deploy"}, {"validate"}),
    (["iam/dag-read-policy.json"], {"deploy"}, {"validate"}),
    (["stack.yaml"], {"deploy"}, {"validate", "dag-check"}),
    (["README.md"], set(), {"validate"}),
    (["airflow_gitops/render.py"], {"deploy"}, {"validate"}),
]


@pytest.mark.parametrize(
    "changed,on_push,on_pr", SAMPLES, ids=lambda v: ",".join(v) if isinstance(v, list) else None
)
def test_change_sets(mode, repo, changed, on_push, on_pr):
    dags_only = all(p.startswith("dags/") for p in changed)
    expected_push = with_sync(mode, on_push) if dags_only else on_push
    assert runs(repo, "push", changed) == expected_push
    assert runs(repo, "pull_request", changed) == on_pr


def test_dag_only_changes_run_only_dag_jobs(mode, repo):
    changed = ["dags/example_dag.py"]
    assert runs(repo, "push", changed) <= {"sync-dags"}
    assert runs(repo, "pull_request", changed) == {"dag-check"}
    for name in runs(repo, "push", changed) | runs(repo, "pull_request", changed):
        jobs = workflows(repo)[name]["jobs"]
        assert set(jobs) <= {"facts", "dag-check", "sync"}, name


def test_config_changes_never_upload_dags(mode, repo):
    for changed in (
        ["stack.yaml"],
        ["helm/values.yaml"],
        ["k8s/namespace.yaml"],
        ["iam/x.json"],
        ["images/s3-sync/Dockerfile"],
        ["airflow_gitops/dagsync/push.py"],
    ):
        assert "sync-dags" not in runs(repo, "push", changed)


def test_a_mixed_push_deploys_and_ships_dags(mode, repo):
    assert runs(repo, "push", ["dags/a.py", "helm/values.yaml"]) == with_sync(mode, {"deploy"})


def test_tag_pushes_start_nothing(mode, repo):
    # `branches: ["**"]` on push: without it a tag push would start every push workflow.
    for name, workflow in workflows(repo).items():
        on = workflow.get("on", workflow.get(True))
        if "push" in on:
            assert on["push"].get("branches") == ["**"], name


def test_only_the_deploy_branch_reaches_aws(mode, repo):
    """Push workflows run on every branch (the deploy branch is a stack.yaml fact, unknown when
    GitHub parses the YAML); every job that gets an OIDC token is gated on that fact."""
    for name, workflow in workflows(repo).items():
        for job_name, job in workflow["jobs"].items():
            if (job.get("permissions") or {}).get("id-token") != "write":
                continue
            gate = "github.ref_name == needs.facts.outputs.deploy_branch"
            needs = job.get("needs")
            needs = [needs] if isinstance(needs, str) else needs or []
            gated = str(job.get("if", "")).startswith(gate) or any(
                str(workflow["jobs"][n].get("if", "")).startswith(gate) for n in needs
            )
            assert gated, f"{name}.{job_name} may reach AWS from any branch"
            if name == "drift-check":  # read-only role, no reviewer to wait for at night
                assert "environment" not in job
                continue
            assert job["environment"]["name"] == "${{ matrix.target.environment }}"


def test_image_sources_trigger_the_image_build_and_the_deploy(mode, repo):
    if mode != "s3-sync-own-image":
        pytest.skip("only the own-image option builds an image")
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "airflow_gitops", "image-tag", "--sources"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    sources = result.stdout.split()[:-1]
    assert "images/s3-sync/Dockerfile" in sources
    build = workflows(repo)["build-sync-image"]
    for source in sources:
        assert event_triggers(build, "push", DEPLOY_BRANCH, [source]), source
        assert event_triggers(build, "pull_request", DEPLOY_BRANCH, [source]), source
        assert "deploy" in runs(repo, "push", [source]), source
        assert "sync-dags" not in runs(repo, "push", [source]), source
    # and nothing else rebuilds it
    assert not event_triggers(build, "push", DEPLOY_BRANCH, ["airflow_gitops/render.py"])
    assert not event_triggers(build, "push", DEPLOY_BRANCH, ["dags/a.py"])


def test_the_airflow_image_sources_rebuild_it_and_redeploy(baked):
    """Every file the own Airflow image is built from (image/Dockerfile's COPY sources) starts
    build-airflow-image.yml on pushes and pull requests, and deploy.yml on the deploy branch
    (render pins the new tag); DAGs and the toolkit alone do not rebuild it."""
    import sys

    repo = baked(dag_source="git-sync")
    result = subprocess.run(
        [sys.executable, "-m", "airflow_gitops", "image-tag", "--image", "airflow", "--sources"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    sources = result.stdout.split()[:-1]
    assert {"image/Dockerfile", "image/requirements.txt", "image/plugins/README.md"} <= set(sources)
    build = workflows(repo)["build-airflow-image"]
    for source in sources:
        assert event_triggers(build, "push", DEPLOY_BRANCH, [source]), source
        assert event_triggers(build, "pull_request", DEPLOY_BRANCH, [source]), source
        assert "deploy" in runs(repo, "push", [source]), source
    assert not event_triggers(build, "push", DEPLOY_BRANCH, ["dags/a.py"])
    assert not event_triggers(build, "push", DEPLOY_BRANCH, ["airflow_gitops/render.py"])

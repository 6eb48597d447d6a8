"""Finish a generated repository: drop what the chosen options don't use, record the answers,
pin the sync image tag, and say where it went and what's next (`make validate` among them: the
bake does not validate itself, see docs/design-decisions.md, "What a bake costs").

Runs inside the new project folder (pre_gen has put schemas/ there). It never reads the
template's folder, so it runs the same under cookiecutter and cruft. The generated repo's own
toolkit is reached through `toolkit()`.
"""

import gc
import os
import sys

# cookiecutter runs a hook from a rendered copy in the system's temp folder, and Python puts a
# script's folder first on sys.path: every import would then search the temp folder (a listing
# of all its files, which grows by two with every bake, as cookiecutter leaves its copies
# there), and a module anyone left there would win over the standard library. Before any import.
if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]
# A hook lives for a fraction of a second: collecting garbage while it imports only costs time.
gc.disable()

import importlib
import json
import shutil
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")
PROJECT = Path.cwd()


def uses_prometheus(a: dict) -> bool:
    return a["metrics_backend"] == "prometheus"


# Mode-specific files come in two kinds. One that cookiecutter renders carries its rule in its
# own name, as an `if` block around the name (see the template's iam/ and k8s/): cookiecutter
# skips a file whose name renders empty, so the answers' unused files are never compiled (most
# of a bake's time is Jinja compiling; docs/design-decisions.md, "Where a bake's time goes").
# Copied files (`_copy_without_render`) cannot be skipped that way; they are removed here.
# path (relative to the project) -> keep it when this is true for the answers.
MODE_SPECIFIC_FILES = {
    # With the operator the rules live in k8s/prometheusrule.yaml only (one copy to edit).
    "monitoring/alert-rules.yaml": lambda a: (
        uses_prometheus(a) and a["metrics_scrape"] == "annotations"
    ),
    "monitoring/airflow-dashboard.json": uses_prometheus,
    # helm/values.yaml includes this script when rendered; the repo keeps it only where it runs.
    "images/aws-cli": lambda a: a["dag_source"] == "s3-sync" and a["s3_sync_image"] == "aws-cli",
    "tests/test_sync_script.py": lambda a: (
        a["dag_source"] == "s3-sync" and a["s3_sync_image"] == "aws-cli"
    ),
    "docs/dag-sync.md": lambda a: a["dag_source"] == "s3-sync",
    # Rendered, but its rule tests for "ssh://", and a file name cannot hold a "/".
    "k8s/git-known-hosts.yaml": lambda a: (
        a["dag_source"] == "git-bundle" and a["git_repo_url"].startswith(("git@", "ssh://"))
    ),
}

# A job's workflow, and the image it builds, stay exactly when the job's role does (its trust
# document is rendered only for the answers that run the job).
JOB_FILES = {
    ".github/workflows/sync-dags.yml": "iam/sync-dags-role-trust.json",
    ".github/workflows/build-sync-image.yml": "iam/build-sync-image-role-trust.json",
    "images/s3-sync": "iam/build-sync-image-role-trust.json",
}

# The answers, for a repo made by plain cookiecutter; cruft records them (with the template and
# its commit) in .cruft.json itself, so a repo made by cruft gets no second copy.
ANSWERS_FILE = ".cookiecutter.json"
SYNC_TAG_PLACEHOLDER = "S3_SYNC_IMAGE_TAG"


def toolkit(module: str):
    """A module of the generated repo's toolkit, imported in this process: no interpreter start
    and no command line to parse, so baking stays fast."""
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    sys.dont_write_bytecode = True  # no __pycache__ left in the new repo
    return importlib.import_module(f"airflow_gitops.{module}")


def remove_unused_files() -> None:
    unused = [path for path, keep in MODE_SPECIFIC_FILES.items() if not keep(ANSWERS)]
    unused += [path for path, role in JOB_FILES.items() if not (PROJECT / role).exists()]
    for relative in unused:
        path = PROJECT / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    remove_other_airflow_constraints()
    remove_empty_folders()


def remove_other_airflow_constraints() -> None:
    """constraints/ holds the pins of the Airflow release the template defaults to; a repo for
    another release keeps none (`make airflow-venv` then resolves from PyPI and says so)."""
    wanted = f"airflow-{ANSWERS['airflow_version']}.txt"
    for path in (PROJECT / "constraints").glob("airflow-*.txt"):
        if path.name != wanted:
            path.unlink()


def remove_empty_folders() -> None:
    for folder in sorted((p for p in PROJECT.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def record_answers() -> None:
    if "_commit" in ANSWERS:  # made by cruft: .cruft.json holds them
        return
    answers = {k: v for k, v in ANSWERS.items() if not k.startswith("_")}
    (PROJECT / ANSWERS_FILE).write_text(json.dumps({"cookiecutter": answers}, indent=2) + "\n")


def pin_sync_image_tag() -> str | None:
    """Own sync image: tag it with the digest of its sources, as CI will when it builds it."""
    values = PROJECT / "helm" / "values.yaml"
    if SYNC_TAG_PLACEHOLDER not in values.read_text():
        return None
    image_tag, errors = toolkit("image_tag"), toolkit("errors")
    try:
        tag = image_tag.sync_image_tag(PROJECT)
    except errors.ToolkitError as exc:
        return f"could not compute the sync image tag: {exc}"
    values.write_text(values.read_text().replace(SYNC_TAG_PLACEHOLDER, tag))
    return None


# Jinja renders this hook first: no double braces here, placeholders are replaced instead.
OVERLAY_TEXT = """\
# NAME's values, merged by helm over helm/values.yaml (this file wins; a list replaces the
# shared list whole). Keep it to what differs here, e.g. scheduler.replicas. A ${...} reference
# is filled from stack.yaml's environments.NAME. `make validate` checks it against the chart's
# values schema.
EMPTY
"""
RELEASE_TEXT = """\
# The commit NAME runs: everything (values, chart, images, DAGs) as of that commit. Written by
# `make promote FROM=PREVIOUS TO=NAME`; merging that pull request deploys it. `make validate`
# checks that PREVIOUS ran it. null: nothing promoted yet.
commit: null
"""


def write_environment_files() -> None:
    """With several environments: each one's values overlay and, after the first, its pin."""
    names = ANSWERS["environments"].split(",")
    if len(names) < 2:
        return
    for previous, name in zip([None, *names], names):
        folder = PROJECT / "environments" / name
        folder.mkdir(parents=True, exist_ok=True)
        overlay = OVERLAY_TEXT.replace("NAME", name).replace("EMPTY", "{" + "}")
        (folder / "values.yaml").write_text(overlay)
        if previous:
            pin = RELEASE_TEXT.replace("PREVIOUS", previous).replace("NAME", name)
            (folder / "release.yaml").write_text(pin)


def next_steps() -> str:
    """Where the repo went and the first three commands, relative to where the user is."""
    try:
        shown = os.path.relpath(PROJECT, os.environ.get("PWD") or os.getcwd())
    except ValueError:  # another drive on Windows
        shown = str(PROJECT)
    shown = shown if not shown.startswith("..") else str(PROJECT)
    return (
        f"Created {shown}/ ({ANSWERS['dag_source']}, {ANSWERS['executor']}). Next:\n"
        f"  cd {shown}\n"
        "  make install      # .venv with the toolkit, pytest and the linters\n"
        "  make validate     # every file against its schema and the cross-file rules\n"
        'Then README.md, "Bootstrap (once)"; to take template updates later: cruft update.'
    )


def main() -> int:
    remove_unused_files()
    write_environment_files()
    record_answers()
    error = pin_sync_image_tag()
    if error:
        print(f"ERROR: {error}", file=sys.stderr)
        print(
            "ERROR: this is a bug in the template; please report it with your answers.",
            file=sys.stderr,
        )
        return 1
    print(next_steps())
    return 0


if __name__ == "__main__":
    status = main()
    gc.freeze()  # nothing to collect at exit: the teardown skips its walk over every object
    raise SystemExit(status)

"""Finish a generated repository: drop what the chosen options don't use, carry in the
schemas, record the answers, pin the sync image tag, and run the repo's own validation.

Runs inside the new project folder. The generated repo's own CLI is called through `toolkit()`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")
PROJECT = Path.cwd()

S3_MODES = {"s3-sync", "s3-bundle"}


def uses_own_sync_image(a: dict) -> bool:
    return a["dag_source"] == "s3-sync" and a["s3_sync_image"] == "own-image"


# path (relative to the project) -> keep it when this is true for the answers.
MODE_SPECIFIC_FILES = {
    "k8s/serviceaccounts.yaml": lambda a: a["dag_source"] in S3_MODES,
    "iam/dag-read-policy.json": lambda a: a["dag_source"] in S3_MODES,
    "iam/dag-reader-trust.json": lambda a: a["dag_source"] in S3_MODES,
    "k8s/efs-storageclass.yaml": lambda a: a["dag_source"] == "efs",
    "k8s/efs-pvc.yaml": lambda a: a["dag_source"] == "efs",
    "k8s/git-known-hosts.yaml": lambda a: a["dag_source"] == "git-bundle"
    and a["git_repo_url"].startswith(("git@", "ssh://")),
    "k8s/priorityclass.yaml": lambda a: a["size"] == "production",
    "k8s/deploy-extensions-rbac.yaml": lambda a: a["executor"] == "CeleryExecutor"
    or a["metrics_scrape"] == "servicemonitor",
    "k8s/servicemonitor.yaml": lambda a: a["metrics_scrape"] == "servicemonitor",
    "k8s/prometheusrule.yaml": lambda a: a["metrics_scrape"] == "servicemonitor",
    # With the operator the rules live in k8s/prometheusrule.yaml only (one copy to edit).
    "monitoring/alert-rules.yaml": lambda a: a["metrics_scrape"] == "annotations",
    "iam/efs-csi-driver-policy.json": lambda a: a["dag_source"] == "efs",
    "iam/efs-csi-driver-trust.json": lambda a: a["dag_source"] == "efs",
    "images/s3-sync": uses_own_sync_image,
    # helm/values.yaml includes this script when rendered; the repo keeps it only where it runs.
    "images/aws-cli": lambda a: a["dag_source"] == "s3-sync" and a["s3_sync_image"] == "aws-cli",
    "tests/test_dagsync_awscli.py": lambda a: a["dag_source"] == "s3-sync" and a["s3_sync_image"] == "aws-cli",
    "docs/dag-sync.md": lambda a: a["dag_source"] == "s3-sync",
    ".github/workflows/build-sync-image.yml": uses_own_sync_image,
    ".github/workflows/sync-dags.yml": lambda a: a["dag_source"] in S3_MODES | {"efs"},
}

# The answers a later `cookiecutter --replay-file .cookiecutter.json` (or cruft) needs.
ANSWERS_FILE = ".cookiecutter.json"
SYNC_TAG_PLACEHOLDER = "S3_SYNC_IMAGE_TAG"


def template_dir() -> Path:
    """The template's folder; a relative `_repo_dir` is relative to the caller's directory."""
    repo = Path(ANSWERS["_repo_dir"])
    return repo if repo.is_absolute() else Path(os.environ.get("PWD", ".")) / repo


def toolkit(*args: str) -> tuple[int, str, str]:
    """Run the generated repo's CLI in this process (one interpreter start saved per call:
    baking stays fast). Returns (exit code, stdout, stderr)."""
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    from airflow_gitops.cli import main as toolkit_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = toolkit_main(list(args))
        except SystemExit as exc:  # argparse exits on usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def remove_unused_files() -> None:
    for relative, keep in MODE_SPECIFIC_FILES.items():
        path = PROJECT / relative
        if keep(ANSWERS) or not path.exists():
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    remove_empty_folders()


def remove_empty_folders() -> None:
    for folder in sorted((p for p in PROJECT.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def copy_schemas() -> None:
    """schemas/ has one copy, in the template; each generated repo carries it for `validate`."""
    target = PROJECT / "schemas"
    shutil.copytree(template_dir() / "schemas", target, dirs_exist_ok=True)


def record_answers() -> None:
    answers = {k: v for k, v in ANSWERS.items() if not k.startswith("_")}
    (PROJECT / ANSWERS_FILE).write_text(json.dumps({"cookiecutter": answers}, indent=2) + "\n")


def pin_sync_image_tag() -> str | None:
    """Own sync image: tag it with the digest of its sources, as CI will when it builds it."""
    values = PROJECT / "helm" / "values.yaml"
    if SYNC_TAG_PLACEHOLDER not in values.read_text():
        return None
    code, stdout, stderr = toolkit("image-tag")
    tag = stdout.strip()
    if code != 0 or not tag:
        return f"could not compute the sync image tag: {stderr.strip() or 'no output'}"
    values.write_text(values.read_text().replace(SYNC_TAG_PLACEHOLDER, tag))
    return None


def self_check() -> str | None:
    """Run the generated repo's own validation, when it and its dependencies are present."""
    if '"validate"' not in (PROJECT / "airflow_gitops" / "cli.py").read_text():
        return None  # a repo without the validate command has nothing to self-check
    missing = [m for m in ("yaml", "ruamel.yaml", "jsonschema") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"NOTE: self-check skipped ({', '.join(missing)} not installed here); "
              "run `make install validate` in the new repo.")
        return None
    code, stdout, stderr = toolkit("validate")
    if code != 0:
        return "the generated repo fails its own validation:\n" + stdout + stderr
    return None


def main() -> int:
    remove_unused_files()
    copy_schemas()
    record_answers()
    for step in (pin_sync_image_tag, self_check):
        error = step()
        if error:
            print(f"ERROR: {error}", file=sys.stderr)
            print("ERROR: this is a bug in the template; please report it with your answers.",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What each environment runs: the first, the deploy branch; each later one, the commit its
environments/<name>/release.yaml pins. ``promote`` writes a pin, ``validate`` checks them,
``ci-facts --targets`` tells the deploy workflow which environments a push deploys.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from airflow_gitops.errors import UsageError
from airflow_gitops.stack import ENVIRONMENTS_DIR

RELEASE_FILE = "release.yaml"
SHA = re.compile(r"^[0-9a-f]{40}$")
# The line promote rewrites; the comments around it are the team's and stay.
COMMIT_LINE = re.compile(r"^commit:.*$", re.M)


def release_path(name: str) -> str:
    return f"{ENVIRONMENTS_DIR}/{name}/{RELEASE_FILE}"


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except FileNotFoundError:
        raise UsageError("git: not found; environments are tracked in git history") from None


def deploy_ref(root: Path, branch: str) -> str:
    """The newest deploy-branch commit this clone knows: origin's, else the local branch's,
    else HEAD (a fresh repository before its first push)."""
    for ref in (f"refs/remotes/origin/{branch}", f"refs/heads/{branch}"):
        if git(root, "rev-parse", "--verify", "--quiet", ref).returncode == 0:
            return ref
    return "HEAD"


def parse_pin(text: str) -> str | None:
    """The commit of a release.yaml's text (None: nothing promoted yet); ValueError says why
    it is not one."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "commit" not in data:
        raise ValueError("expected `commit: <40-character commit id>` (or null)")
    commit = data["commit"]
    if commit is None:
        return None
    if not isinstance(commit, str) or not SHA.match(commit):
        raise ValueError(
            f"commit: {commit!r} is not a full 40-character commit id (or null: nothing "
            "promoted yet)"
        )
    return commit


def read_pin(root: Path, name: str) -> str | None:
    path = root / release_path(name)
    try:
        return parse_pin(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{release_path(name)}: not found; `make validate` explains") from None
    except ValueError as exc:
        raise UsageError(f"{release_path(name)}: {exc}") from None


def pins_of(root: Path, name: str) -> set[str]:
    """Every commit environments/<name>/release.yaml has pinned in this clone's history."""
    log = git(root, "log", "--all", "--format=", "-p", "--", release_path(name)).stdout
    return set(re.findall(r"^[+ ]commit:\s*['\"]?([0-9a-f]{40})", log, re.M))


def running(root: Path, names: list[str], name: str, deploy_branch: str) -> str | None:
    """The commit environment ``name`` runs (as this clone knows it), or None if none yet."""
    if name == names[0]:
        result = git(root, "rev-parse", "--verify", "--quiet", deploy_ref(root, deploy_branch))
        return result.stdout.strip() or None
    return read_pin(root, name)


def write_pin(root: Path, name: str, commit: str) -> None:
    path = root / release_path(name)
    text = path.read_text(encoding="utf-8")
    # A commit id of digits alone (one in ~10^8) would read as a number: quote it.
    line = f'commit: "{commit}"' if commit.isdigit() else f"commit: {commit}"
    new, count = COMMIT_LINE.subn(line, text, count=1)
    if not count:
        new = text.rstrip("\n") + f"\n{line}\n"
    path.write_text(new, encoding="utf-8")

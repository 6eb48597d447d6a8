"""``promote``: move what one environment runs to the next one, as a reviewed change.

``make promote FROM=dev TO=prod`` writes the commit dev runs into
environments/prod/release.yaml and nothing else: no push, no pull request. Committing that file
on a branch and merging its pull request is the promotion; the deploy workflow then deploys
that commit to prod. ``make diff FROM=dev TO=prod`` (``--diff``) shows what it would change
first: values, chart, images, DAGs, and the rest of the configuration.

The first environment runs the deploy branch (origin's, when this clone has it); a later one
runs its pin. Only the next environment in stack.yaml's order can be promoted to.
"""

from __future__ import annotations

from pathlib import Path

from airflow_gitops.errors import UsageError
from airflow_gitops.releases import git, read_pin, release_path, running, write_pin
from airflow_gitops.stack import ENVIRONMENTS_DIR, REPO_ROOT, environment_names, read_stack

# What a promotion can change, in the order `--diff` shows it: a title and the paths it covers
# (git pathspecs; "{to}" is the target environment).
PARTS = (
    ("values", ("helm/", f"{ENVIRONMENTS_DIR}/{{to}}/values.yaml")),
    ("chart and versions", ("stack.yaml", "constraints/")),
    ("images", ("image/", "images/")),
    ("DAGs", ("dags/",)),
    ("manifests and AWS", ("k8s/", "iam/", "monitoring/")),
    ("toolkit and workflows", ("airflow_gitops/", ".github/", "Makefile", "requirements.txt")),
)
# Facts whose change is worth a line of its own.
VERSION_FACTS = (("airflow", "chart_version"), ("airflow", "version"))


def add_arguments(parser) -> None:
    parser.add_argument("--from", dest="source", required=True, help="environment to promote from")
    parser.add_argument("--to", dest="target", required=True, help="the environment after it")
    parser.add_argument(
        "--diff", action="store_true", help="only show what the promotion would change"
    )
    parser.add_argument("--root", default=str(REPO_ROOT), help="repository (default: this one)")


def plan(root: Path, source: str, target: str) -> tuple[str, str | None]:
    """(the commit ``source`` runs, the commit ``target`` runs now or None)."""
    stack = read_stack(root)
    names = environment_names(stack)
    if len(names) < 2:
        raise UsageError("stack.yaml has one environment: there is nothing to promote to")
    for name in (source, target):
        if name not in names:
            raise UsageError(f"environment {name!r}: not in stack.yaml; known: {', '.join(names)}")
    if names.index(target) != names.index(source) + 1:
        following = names[names.index(source) + 1 : names.index(source) + 2]
        raise UsageError(
            f"{target} does not follow {source} in stack.yaml's order ({' -> '.join(names)}); "
            + (f"promote {source} to {following[0]}" if following else f"{source} is the last")
        )
    if git(root, "rev-parse", "--git-dir").returncode != 0:
        raise UsageError(f"{root}: not a git repository; promotion pins a commit of its history")
    branch = str((stack.get("github") or {}).get("deploy_branch") or "main")
    commit = running(root, names, source, branch)
    if commit is None:
        raise UsageError(
            f"{source} runs nothing yet ({release_path(source)} is null): promote to it first"
        )
    return commit, read_pin(root, target)


def version_changes(root: Path, old: str, new: str) -> list[str]:
    import yaml

    def facts(commit: str) -> dict:
        shown = git(root, "show", f"{commit}:stack.yaml")
        try:
            return yaml.safe_load(shown.stdout) or {} if shown.returncode == 0 else {}
        except yaml.YAMLError:
            return {}

    before, after = facts(old), facts(new)
    lines = []
    for section, key in VERSION_FACTS:
        a = (before.get(section) or {}).get(key)
        b = (after.get(section) or {}).get(key)
        if a != b:
            lines.append(f"  {section}.{key}: {a} -> {b}")
    return lines


def describe(root: Path, target: str, old: str | None, new: str) -> str:
    """What moving ``target`` from ``old`` to ``new`` changes, part by part."""
    if old is None:
        return f"{target} runs nothing yet: the promotion deploys {new[:12]} as a whole\n"
    if old == new:
        return f"{target} already runs {new[:12]}: nothing would change\n"
    log = git(root, "log", "--oneline", "--no-decorate", f"{old}..{new}").stdout.splitlines()
    out = [f"{target}: {old[:12]} -> {new[:12]} ({len(log)} commits)"]
    out += version_changes(root, old, new)
    heading = len(out)
    for title, paths in PARTS:
        specs = [p.format(to=target) for p in paths]
        stat = git(root, "diff", "--stat=100", old, new, "--", *specs).stdout.rstrip()
        if stat:
            out += [f"{title}:", *("  " + line.strip() for line in stat.splitlines())]
    if len(out) == heading:
        out.append("no file an environment runs from changed")
    return "\n".join(out) + "\n"


def run(args) -> int:
    root = Path(args.root).resolve()
    new, old = plan(root, args.source, args.target)
    print(describe(root, args.target, old, new), end="")
    if args.diff or old == new:
        return 0
    write_pin(root, args.target, new)
    print(
        f"wrote {release_path(args.target)}: commit {new}\n"
        f"Next: commit it on a branch and open a pull request; `make validate` checks that "
        f"{args.source} ran it, and merging deploys it to {args.target}."
    )
    return 0

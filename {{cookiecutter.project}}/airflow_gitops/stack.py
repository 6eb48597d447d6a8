"""Reads stack.yaml, the one file that holds the facts of this deployment, for one environment.

A repository with one environment states every fact directly. With several, stack.yaml also has
``environments:``, in promotion order, each holding the facts that differ (project prefix,
account, region, cluster, namespace, GitHub environment, DAG bucket; any other fact may be
overridden the same way). An environment's *view* is the shared facts with its own merged over
them. A value may refer to another fact as ``${stack.path.to.fact}``: the derived names in
stack.yaml (``${stack.project}-deploy``) and the files every environment shares (iam/, k8s/, helm/values.yaml,
monitoring/) are filled from the view of the environment being acted on.

The environment is chosen by ``--env`` where a command has it, else ``AIRFLOW_GITOPS_ENV``
(``make … ENV=prod`` sets it), else the only one there is.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from airflow_gitops.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = "stack.yaml"
ENVIRONMENTS = "environments"
ENV_VARIABLE = "AIRFLOW_GITOPS_ENV"
# Folder of each environment's own files (values overlay, release pin).
ENVIRONMENTS_DIR = "environments"
# ${stack.path.to.fact}: a shell variable cannot have a dot in its name, so a script's ${name}
# (the aws-cli sync script in the values has several) is never taken for one.
REFERENCE = re.compile(r"\$\{stack\.([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*)\}")
# A fact may refer to a fact that refers to another; deeper than this is a loop.
MAX_REFERENCE_DEPTH = 5


def read_stack(root: Path | str | None = None) -> dict[str, Any]:
    """stack.yaml of the repository at ``root`` (default: this one) exactly as written."""
    import yaml  # here: what imports this module for REPO_ROOT alone (image-tag) runs sooner

    path = Path(root or REPO_ROOT) / STACK_FILE
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise UsageError(f"{path}: not found; run from the generated repository") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({exc}); run `make validate`") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    return data


def environment_names(stack: dict[str, Any]) -> list[str]:
    """The environments of stack.yaml in promotion order; [] for a one-environment repo."""
    section = stack.get(ENVIRONMENTS)
    if section is None:
        return []
    if not isinstance(section, dict) or not section:
        raise UsageError(
            f"{STACK_FILE}: {ENVIRONMENTS} must map names to facts; run `make validate`"
        )
    return [str(name) for name in section]


def choose_environment(
    stack: dict[str, Any], env: str | None = None, first_by_default: bool = False
) -> str | None:
    """The environment a command acts on (None in a one-environment repo), or a UsageError that
    names the choices. ``first_by_default``: with none chosen, the first (for what reads facts
    the environments share, such as the Airflow version DAGs are checked with)."""
    names = environment_names(stack)
    if env is None:
        env = os.environ.get(ENV_VARIABLE) or None
    if not names:
        if env:
            raise UsageError(
                f"{STACK_FILE} has no {ENVIRONMENTS}: this repository has one, so ENV={env} "
                "means nothing here; leave it unset"
            )
        return None
    if env is None:
        if len(names) == 1 or first_by_default:
            return names[0]
        raise UsageError(
            f"{STACK_FILE} has environments {', '.join(names)}: say which one, "
            f"e.g. `make plan ENV={names[0]}` ({ENV_VARIABLE}={names[0]})"
        )
    if env not in names:
        raise UsageError(f"environment {env!r}: not in {STACK_FILE}; known: {', '.join(names)}")
    return env


def merge(base: Any, over: Any) -> Any:
    """``over`` merged onto ``base``: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(over)


def lookup(view: dict[str, Any], dotted: str) -> Any:
    node: Any = view
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def fill(text: str, view: dict[str, Any], problems: list[str] | None = None) -> str:
    """``text`` with every ``${stack.path}`` replaced by that fact of ``view``. An unknown path or a
    fact that is not a plain value is a UsageError, or, given ``problems``, noted there and left
    as written."""

    def replace(match: re.Match) -> str:
        path = match.group(1)
        try:
            value = lookup(view, path)
        except KeyError:
            value = None
            why = f"${{stack.{path}}}: {STACK_FILE} has no such fact"
        else:
            why = f"${{stack.{path}}}: a {type(value).__name__}, not a single value"
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if problems is None:
            raise UsageError(why + "; run `make validate`")
        problems.append(why)
        return match.group(0)

    return REFERENCE.sub(replace, text)


def resolve(view: Any, facts: dict[str, Any], problems: list[str] | None = None) -> Any:
    """Every string of ``view`` with its references filled from ``facts`` (repeatedly, so a
    fact may refer to a fact that refers to another)."""
    if isinstance(view, dict):
        return {key: resolve(value, facts, problems) for key, value in view.items()}
    if isinstance(view, list):
        return [resolve(value, facts, problems) for value in view]
    if isinstance(view, str):
        noted = len(problems) if problems is not None else 0
        for _ in range(MAX_REFERENCE_DEPTH):
            if not REFERENCE.search(view):
                return view
            view = fill(view, facts, problems)
            if problems is not None and len(problems) > noted:
                return view
        if REFERENCE.search(view):
            why = f"{view!r}: references nested deeper than {MAX_REFERENCE_DEPTH} (a loop?)"
            if problems is None:
                raise UsageError(why)
            problems.append(why)
    return view


def environment_view(
    stack: dict[str, Any], env: str | None, problems: list[str] | None = None
) -> dict[str, Any]:
    """The facts as environment ``env`` sees them (the whole file when there are none)."""
    if env is None:
        shared, own = stack, {}
    else:
        shared = {k: v for k, v in stack.items() if k != ENVIRONMENTS}
        own = (stack.get(ENVIRONMENTS) or {}).get(env)
        if not isinstance(own, dict):
            raise UsageError(f"{STACK_FILE}: {ENVIRONMENTS}.{env} must be a mapping of facts")
    view = merge(shared, own)
    return resolve(view, view, problems)


def load_stack(
    root: Path | str | None = None, env: str | None = None, first_by_default: bool = False
) -> dict[str, Any]:
    """The facts of the repository at ``root`` (default: this one) for the chosen environment."""
    stack = read_stack(root)
    return environment_view(stack, choose_environment(stack, env, first_by_default))


def read_filled(path: Path, view: dict[str, Any]) -> str:
    """A file every environment shares (iam/, k8s/, helm/, monitoring/), filled for ``view``."""
    text = path.read_text(encoding="utf-8")
    try:
        return fill(text, view)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _place(view: dict[str, Any]) -> tuple:
    aws, eks = view.get("aws") or {}, view.get("eks") or {}
    return str(aws.get("account_id")), aws.get("region"), eks.get("cluster_name")


def sharing(stack: dict[str, Any], env: str | None) -> tuple[str | None, list[str]]:
    """(the earlier environment on the same cluster, which owns the cluster's add-ons, their
    roles and its OIDC provider, or None; the other environments in the same account, which
    share the account's GitHub OIDC provider)."""
    if env is None:
        return None, []
    views = {name: environment_view(stack, name, []) for name in environment_names(stack)}
    mine = _place(views[env])
    owner = next((n for n, v in views.items() if _place(v) == mine), None)
    same_account = [n for n, v in views.items() if n != env and _place(v)[0] == mine[0]]
    return (owner if owner != env else None), same_account

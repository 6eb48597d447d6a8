"""Reads stack.yaml, the one file that holds the facts of this deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_gitops.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = "stack.yaml"


def load_stack(root: Path | str | None = None) -> dict[str, Any]:
    """Return stack.yaml of the repository at ``root`` (default: this repository) as a dict."""
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

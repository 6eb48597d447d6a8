"""Which Airflow image the cluster runs: the stock ``apache/airflow`` of stack.yaml's version,
or this repo's own (image/Dockerfile) when image/requirements.txt or image/plugins/ add
something. The same answer for the build workflow (build or not), ``render`` (which image the
values name) and ``ci-facts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_gitops.errors import UsageError
from airflow_gitops.stack import REPO_ROOT

REQUIREMENTS = Path("image/requirements.txt")
PLUGINS = Path("image/plugins")
PLUGINS_README = "README.md"  # documents the folder; not a plugin


def requirement_lines(root: Path | str | None = None) -> list[str]:
    path = Path(root or REPO_ROOT) / REQUIREMENTS
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def plugin_files(root: Path | str | None = None) -> list[Path]:
    folder = Path(root or REPO_ROOT) / PLUGINS
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name != PLUGINS_README and "__pycache__" not in p.parts
    )


def builds_own_image(root: Path | str | None = None) -> bool:
    return bool(requirement_lines(root) or plugin_files(root))


def own_image_repository(stack: dict[str, Any]) -> str:
    """``<registry>/<repository>`` of this repo's own Airflow image."""
    aws, images = stack.get("aws") or {}, stack.get("images") or {}
    try:
        return (
            f"{aws['account_id']}.dkr.ecr.{aws['region']}.amazonaws.com/"
            f"{images['airflow_repository']}"
        )
    except KeyError as exc:
        raise UsageError(f"stack.yaml: missing {exc.args[0]!r}; run `make validate`") from None

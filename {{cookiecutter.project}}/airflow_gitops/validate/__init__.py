"""``validate``: every file of this repository against its JSON Schema, then the rules across
files that a schema cannot express. Findings print as ``path:line:col: message [rule-id]``
(docs/validation.md lists every rule id and its fix); exit 0 when clean, 1 on findings,
2 on usage errors and on any internal error (one line, never a traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airflow_gitops.errors import ToolkitError, UsageError


class ValidateCrashed(ToolkitError):
    """A bug in validate itself: the repository was not fully checked (exit 2, never 1)."""

    exit_code = 2


def add_arguments(parser) -> None:
    parser.add_argument(
        "--root", default=None, help="repository to check (default: this repository)"
    )
    parser.add_argument(
        "--schemas", default=None, help="folder of the JSON Schemas (default: <root>/schemas)"
    )
    parser.add_argument(
        "--rendered",
        metavar="FILE",
        help="also check a rendered manifest stream (`make manifests`) as admission would: "
        "Pod Security of the namespace, requests within limits, removed apiVersions",
    )


def run(args) -> int:
    from airflow_gitops.validate.engine import validate

    root = Path(args.root) if args.root else Path(__file__).resolve().parents[2]
    if not root.is_dir():
        raise UsageError(f"--root {args.root}: not a folder")
    schemas = Path(args.schemas) if args.schemas else root / "schemas"
    try:
        findings, files = validate(root, schemas)
        if args.rendered:
            findings = findings + _rendered(Path(args.rendered))
            files += 1
    except ToolkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - RecursionError, MemoryError too: one line, exit 2
        where = _innermost_frame(exc)
        raise ValidateCrashed(
            f"validate stopped on an internal error, nothing was checked: {type(exc).__name__}: "
            f"{str(exc)[:200]} ({where}); please report it"
        ) from None
    annotate = os.environ.get("GITHUB_ACTIONS") == "true"
    out = sys.stdout
    for finding in findings:
        out.write(finding.text() + "\n")
        if annotate:
            out.write(finding.annotation() + "\n")
    count = len(findings)
    out.write(f"validate: {count} finding{'' if count == 1 else 's'} in {files} files\n")
    return 1 if findings else 0


def _rendered(path: Path) -> list:
    from airflow_gitops.validate.rules.admission import check_rendered

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"--rendered {path}: cannot read ({exc.strerror}); run `make manifests`"
        ) from None
    return list(check_rendered(str(path), text))


def _innermost_frame(exc: BaseException) -> str:
    """file:line of the toolkit code that raised, for the one-line report."""
    tb, where = exc.__traceback__, "unknown place"
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "airflow_gitops" in name:
            where = f"{name.rsplit('airflow_gitops', 1)[1].lstrip('/')}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where

"""``manifests``: everything a deploy would apply, as one YAML stream, for review and checks.

The k8s/ manifests and ``helm template`` of the pinned chart (stack.yaml airflow.chart_version
from https://airflow.apache.org) with the rendered values, sorted by kind, namespace and name so
that two renders diff cleanly. The validate workflow checks this stream against the Kubernetes
schemas and writes its diff against the base branch into the job summary. Secret data is
redacted and ``checksum/`` annotations dropped: the summary is public to readers of the pull
request, and the chart puts random values there on every render.

``--root`` renders another checkout (the base branch) with this toolkit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from airflow_gitops.helm import call, template_command
from airflow_gitops.render import render
from airflow_gitops.stack import REPO_ROOT, environment_names, load_stack, read_stack


def add_arguments(parser) -> None:
    parser.add_argument("--root", default=str(REPO_ROOT), help="repository to render")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="file to write the YAML stream to")
    where.add_argument(
        "--each-environment",
        metavar="DIR",
        help="one stream per environment of stack.yaml: DIR/<name>.yaml (DIR/manifests.yaml "
        "with one environment), for the pull request's diff per environment",
    )
    parser.add_argument(
        "--offline", action="store_true", help="no AWS calls (EFS fileSystemId stays empty)"
    )
    parser.add_argument("--chart", help="a local chart package instead of the chart repository")


def helm_template(stack: dict[str, Any], values: Path, chart: str | None = None) -> str:
    """``helm template`` with exactly the release arguments ``deploy-chart`` upgrades with."""
    return call(template_command(stack, values, chart), capture=True)


def _for_review(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("kind") == "Secret":
        for field in ("data", "stringData"):
            if isinstance(doc.get(field), dict):
                doc[field] = {key: "<redacted>" for key in doc[field]}
    template = ((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}
    for holder in (doc.get("metadata") or {}, template):
        annotations = holder.get("annotations")
        if isinstance(annotations, dict):
            for key in [k for k in annotations if str(k).startswith("checksum/")]:
                del annotations[key]
    return doc


def _sort_key(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (str(doc.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def manifest_stream(
    root: Path, offline: bool, chart: str | None = None, env: str | None = None
) -> str:
    import yaml

    stack = load_stack(root, env)
    with tempfile.TemporaryDirectory(prefix="manifests-") as tmp:
        build = Path(tmp)
        render(root, build, offline=offline, env=env)
        texts = [p.read_text(encoding="utf-8") for p in sorted((build / "k8s").glob("*.y*ml"))]
        texts.append(helm_template(stack, build / "values.yaml", chart))
    docs = [d for text in texts for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    docs = sorted((_for_review(d) for d in docs), key=_sort_key)
    return "".join(
        "---\n" + yaml.safe_dump(d, sort_keys=False, default_flow_style=False, width=4096)
        for d in docs
    )


def write_stream(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.tmp")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, out)
    print(f"{out}: {text.count('---' + chr(10))} documents")


def run(args) -> int:
    root = Path(args.root).resolve()
    chart = str(Path(args.chart).resolve()) if args.chart else None
    if args.out:
        write_stream(Path(args.out), manifest_stream(root, args.offline, chart))
        return 0
    names = environment_names(read_stack(root)) or [None]
    for name in names:
        text = manifest_stream(root, args.offline, chart, name or "")
        write_stream(Path(args.each_environment) / f"{name or 'manifests'}.yaml", text)
    return 0

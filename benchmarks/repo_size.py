"""Size of a generated repo (default answers, or the ones given): files and lines per part, so
the share that is the team's own stays visible next to what we vendor into it.

Usage: python benchmarks/repo_size.py [answer=value ...]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parent.parent
# First match wins: path prefix -> part.
PARTS = [
    ("airflow_gitops/", "vendored toolkit (airflow_gitops/)"),
    ("schemas/", "schemas (copied from the template)"),
    ("tests/", "the repo's own tests"),
    ("constraints/", "Airflow pins (constraints/)"),
    ("docs/", "docs"),
    ("README.md", "docs"),
    ("", "the team's own files (config, IAM, k8s, workflows, DAGs, Makefile...)"),
]


def part_of(relative: str) -> str:
    return next(name for prefix, name in PARTS if relative.startswith(prefix))


def main() -> int:
    answers = dict(arg.split("=", 1) for arg in sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(
            cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers, output_dir=tmp)
        )
        sizes: dict[str, list[int]] = {name: [0, 0] for _, name in PARTS}
        for path in sorted(p for p in repo.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            size = sizes[part_of(path.relative_to(repo).as_posix())]
            size[0] += 1
            size[1] += len(path.read_bytes().splitlines())
    total_files = sum(files for files, _ in sizes.values())
    total_lines = sum(lines for _, lines in sizes.values())
    print(f"generated repo ({', '.join(sys.argv[1:]) or 'default answers'})")
    print(f"{'part':70} {'files':>5} {'lines':>7} {'share':>6}")
    for name, (files, lines) in sizes.items():
        print(f"{name:70} {files:5d} {lines:7d} {lines / total_lines:6.0%}")
    print(f"{'total':70} {total_files:5d} {total_lines:7d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

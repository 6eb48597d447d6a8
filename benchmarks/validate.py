"""Whole-process time of `make validate` in a generated repo, next to check-jsonschema.

Prints, from one run (median of RUNS runs each, wall clock, whole process):
  1. `make validate` on a repo baked with the default answers (target: under 1 s);
  2. the same repo with 1,000 extra manifests in k8s/ (target: under 5 s);
  3. check-jsonschema validating the same files against the same schemas (one process per
     schema, as you would call it), which checks schemas only, none of the cross-file rules.

    .venv/bin/python benchmarks/validate.py
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHECK_JSONSCHEMA = str(Path(PYTHON).parent / "check-jsonschema")
RUNS = 5
EXTRA = 1000


def bake(out: Path) -> Path:
    subprocess.run(
        [PYTHON, "-m", "cookiecutter", "--no-input", "--output-dir", str(out), str(TEMPLATE)],
        check=True, capture_output=True,
    )
    return next(p for p in out.iterdir() if p.is_dir())


def add_manifests(repo: Path, count: int) -> None:
    """ConfigMaps and ServiceAccounts, one per file, as a team's k8s/ grows."""
    namespace = json.loads((repo / ".cookiecutter.json").read_text())["cookiecutter"]["namespace"]
    for i in range(count):
        if i % 2:
            text = (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{i:04d}\n"
                    f"  namespace: {namespace}\n  labels:\n    app.kubernetes.io/part-of: airflow\n"
                    f"data:\n  key: \"value-{i}\"\n")
        else:
            text = (f"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: extra-sa-{i:04d}\n"
                    f"  namespace: {namespace}\n  annotations:\n    example.com/owner: team-{i % 7}\n")
        (repo / "k8s" / f"extra-{i:04d}.yaml").write_text(text)


def schema_groups(repo: Path) -> list[tuple[str, list[str]]]:
    """(schema file, files) exactly as `validate` pairs them."""
    iam = sorted(p.relative_to(repo).as_posix() for p in (repo / "iam").glob("*.json"))
    return [
        ("stack.schema.json", ["stack.yaml"]),
        ("helm-values.schema.json", ["helm/values.yaml"]),
        ("k8s-manifest.schema.json", sorted(p.relative_to(repo).as_posix() for p in (repo / "k8s").glob("*.y*ml"))),
        ("iam-trust.schema.json", [p for p in iam if p.endswith("-trust.json")]),
        ("iam-policy.schema.json", [p for p in iam if not p.endswith("-trust.json")]),
        ("github-workflow.schema.json", sorted(p.relative_to(repo).as_posix() for p in (repo / ".github" / "workflows").glob("*.y*ml"))),
    ]


def timed(commands: list[list[str]], cwd: Path, expect_ok: bool = True) -> float:
    """Median wall time of running ``commands`` one after the other."""
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for command in commands:
            result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
            if expect_ok and result.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        repo = bake(Path(tmp) / "default")
        big = Path(tmp) / "big"
        shutil.copytree(repo, big)
        add_manifests(big, EXTRA)
        make = ["make", "--no-print-directory", "validate", f"PYTHON={PYTHON}"]
        rows = []
        for label, root in (("default bake", repo), (f"+ {EXTRA:,} manifests in k8s/", big)):
            files = sum(len(files) for _, files in schema_groups(root))
            ours = timed([make], root)
            theirs = timed(
                [[CHECK_JSONSCHEMA, "--schemafile", f"schemas/{schema}", *files]
                 for schema, files in schema_groups(root) if files],
                root,
            )
            rows.append((f"{label} ({files} files)", ours, theirs))
    width = max(len(r[0]) for r in rows)
    print(f"validate benchmark: median of {RUNS} runs, whole process, wall clock")
    print(f"{'':<{width}}  {'make validate':>14}  {'check-jsonschema':>17}")
    for label, ours, theirs in rows:
        print(f"{label:<{width}}  {ours:>12.2f} s  {theirs:>15.2f} s")
    print("make validate: schemas + cross-file rules; check-jsonschema: schemas only, one process per schema")
    print(f"targets: default < 1 s ({'met' if rows[0][1] < 1 else 'MISSED'}), "
          f"+{EXTRA:,} manifests < 5 s ({'met' if rows[1][1] < 5 else 'MISSED'}), "
          f"faster than check-jsonschema ({'met' if all(o < t for _, o, t in rows) else 'MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

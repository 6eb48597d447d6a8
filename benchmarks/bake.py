"""Whole-process time of `cookiecutter --no-input` for each DAG mode, next to a one-file
trivial template measured in the same run. Target: each mode at most 2.5x the trivial one.

Usage: python benchmarks/bake.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
MODES = ["s3-sync", "git-sync", "efs", "git-bundle", "s3-bundle"]
TARGET_RATIO = 2.5


def make_trivial_template(root: Path) -> Path:
    template = root / "trivial"
    (template / "{{cookiecutter.name}}").mkdir(parents=True)
    (template / "cookiecutter.json").write_text(json.dumps({"name": "trivial"}))
    (template / "{{cookiecutter.name}}" / "README.md").write_text("# {{ cookiecutter.name }}\n")
    return template


def bake_seconds(template: Path, out: Path, *answers: str) -> float:
    command = [
        sys.executable,
        "-m",
        "cookiecutter",
        "--no-input",
        "-f",
        "-o",
        str(out),
        str(template),
        *answers,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case; the median is shown")
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trivial = make_trivial_template(root)
        cases = [("trivial one-file template", trivial, ())] + [
            (f"dag_source={mode}", TEMPLATE, (f"dag_source={mode}",)) for mode in MODES
        ]
        bake_seconds(trivial, root / "warm")  # warm the file cache once for both
        medians = {}
        for name, template, answers in cases:
            times = [bake_seconds(template, root / f"out-{i}", *answers) for i in range(runs)]
            medians[name] = statistics.median(times)
    base = medians["trivial one-file template"]
    print(f"cookiecutter --no-input, whole process, median of {runs} runs")
    print(f"{'case':32} {'seconds':>8} {'x trivial':>10}  target <= {TARGET_RATIO}x")
    worst = 0.0
    for name, seconds in medians.items():
        ratio = seconds / base
        worst = max(worst, ratio)
        print(f"{name:32} {seconds:8.3f} {ratio:10.2f}")
    print(
        f"worst ratio {worst:.2f}x: {'within' if worst <= TARGET_RATIO else 'OVER'} the {TARGET_RATIO}x target"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

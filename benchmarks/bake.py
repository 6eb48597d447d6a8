"""Whole-process time of `cookiecutter --no-input` for each DAG mode, next to a one-file
trivial template measured in the same run. Target: each mode at most 2.5x the trivial one in
CPU time (user + system of the process and its hooks; wall time is shown too, but on a shared
machine it mostly measures the neighbours).

The cases take turns (a round is one bake of each, into a fresh folder), and each ratio is the
median over rounds of the case against the trivial bake of its own round, so a neighbour's
load that comes and goes weighs on both sides alike.

Usage: python benchmarks/bake.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import resource
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


def bake_times(template: Path, out: Path, *answers: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one bake: cookiecutter and every hook it runs."""
    command = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(out),
               str(template), *answers]  # fmt: skip
    # getrusage, not os.times: the same kernel accounting in microseconds, not 10 ms ticks.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds; medians are shown")
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trivial = make_trivial_template(root)
        cases = [("trivial one-file template", trivial, ())] + [
            (f"dag_source={mode}", TEMPLATE, (f"dag_source={mode}",)) for mode in MODES
        ]
        bake_times(trivial, root / "warm")  # warm the file cache once for both
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
        for run in range(runs):
            for name, template, answers in cases:
                times[name].append(bake_times(template, root / f"{run}-{name}", *answers))
    base = times["trivial one-file template"]
    print(f"cookiecutter --no-input, whole process with hooks, median of {runs} rounds")
    print(f"{'case':28} {'CPU s':>7} {'x trivial':>9} {'wall s':>8} {'x trivial':>9}"
          f"  target: CPU <= {TARGET_RATIO}x")  # fmt: skip
    worst = 0.0
    for name, measured in times.items():
        cpu = statistics.median(t[0] for t in measured)
        wall = statistics.median(t[1] for t in measured)
        ratio = statistics.median(t[0] / b[0] for t, b in zip(measured, base, strict=True))
        wall_ratio = statistics.median(t[1] / b[1] for t, b in zip(measured, base, strict=True))
        worst = max(worst, ratio)
        print(f"{name:28} {cpu:7.3f} {ratio:9.2f} {wall:8.3f} {wall_ratio:9.2f}")
    verdict = "within" if worst <= TARGET_RATIO else "OVER"
    print(f"worst CPU ratio {worst:.2f}x: {verdict} the {TARGET_RATIO}x target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

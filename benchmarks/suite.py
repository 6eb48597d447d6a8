"""Time of the template's test suite: `make test` (everything but `slow`) against its budget of
6 minutes on a quiet 2-core machine, and with --slow also `make test-slow`; the slowest tests of
each, so the next one to move behind the marker is easy to see.

Usage: python benchmarks/suite.py [--slow]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 6 * 60  # `make test`, the README's command
SLOWEST = 8


def make_recipe(target: str) -> list[str]:
    """The pytest command line of a Makefile target, with this interpreter for $(PY): the
    benchmark times exactly what `make TARGET` runs, without making a .venv."""
    makefile = (TEMPLATE / "Makefile").read_text()
    line = re.search(rf"^{re.escape(target)}:.*\n\t(.+)$", makefile, re.M).group(1)
    return [sys.executable if word == "$(PY)" else word for word in shlex.split(line)]


def run_suite(target: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of pytest and everything it started, pytest's output)."""
    command = [*make_recipe(target), "-q", "-p", "no:cacheprovider", f"--durations={SLOWEST}"]
    before, start = os.times(), time.perf_counter()
    result = subprocess.run(command, cwd=TEMPLATE, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, result.stdout


def report(name: str, target: str, budget: float | None) -> None:
    wall, cpu, output = run_suite(target)
    tally = next((line.strip("= ") for line in reversed(output.splitlines()) if " in " in line), "")
    verdict = ""
    if budget:
        verdict = f"; budget {budget / 60:.0f} min: {'within' if wall <= budget else 'OVER'}"
    print(f"{name:16} wall {wall:6.1f} s  CPU {cpu:6.1f} s  ({tally}){verdict}")
    for failed in re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M):
        print(f"    failed: {failed}")
    durations = re.findall(r"^(\d+\.\d+)s (call|setup|teardown)\s+(\S+)$", output, re.M)
    for seconds, phase, test in durations[:SLOWEST]:
        print(f"    {float(seconds):6.1f} s  {phase:8} {test}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also time `make test-slow`")
    args = parser.parse_args()
    print(f"template test suite on {os.cpu_count()} cores (other load on the machine counts too)")
    report("make test", "test", BUDGET_SECONDS)
    if args.slow:
        report("make test-slow", "test-slow", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

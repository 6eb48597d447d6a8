"""Whole-process time of `make validate` in a generated repo, next to check-jsonschema.

Prints, from one run (median of RUNS runs each, wall clock, whole process):
  1. `make validate` on a repo baked with the default answers (target: under 1 s);
  2. the same repo with 1,000 extra manifests in k8s/ (target: under 5 s);
  3. check-jsonschema validating the same files against the same schemas (one process per
     schema, as you would call it), which checks schemas only, none of the cross-file rules;
  4. hostile files (billion laughs, 100,000-deep nesting, a 50 MB values file, a symlink out of
     the repository): time and peak memory of `validate` on each (targets: no hang, no crash,
     exit 1 with one finding, under 500 MB), next to check-jsonschema on the same file, which
     runs under a 20 s / 1 GiB limit so it cannot take the machine down.

    .venv/bin/python benchmarks/validate.py
"""

from __future__ import annotations

import json
import os
import resource
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
        check=True,
        capture_output=True,
    )
    return next(p for p in out.iterdir() if p.is_dir())


def add_manifests(repo: Path, count: int) -> None:
    """ConfigMaps and ServiceAccounts, one per file, as a team's k8s/ grows."""
    namespace = json.loads((repo / ".cookiecutter.json").read_text())["cookiecutter"]["namespace"]
    for i in range(count):
        if i % 2:
            text = (
                f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{i:04d}\n"
                f"  namespace: {namespace}\n  labels:\n    app.kubernetes.io/part-of: airflow\n"
                f'data:\n  key: "value-{i}"\n'
            )
        else:
            text = (
                f"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: extra-sa-{i:04d}\n"
                f"  namespace: {namespace}\n  annotations:\n    example.com/owner: team-{i % 7}\n"
            )
        (repo / "k8s" / f"extra-{i:04d}.yaml").write_text(text)


def schema_groups(repo: Path) -> list[tuple[str, list[str]]]:
    """(schema file, files) exactly as `validate` pairs them."""
    iam = sorted(p.relative_to(repo).as_posix() for p in (repo / "iam").glob("*.json"))
    return [
        ("stack.schema.json", ["stack.yaml"]),
        ("helm-values.schema.json", ["helm/values.yaml"]),
        (
            "k8s-manifest.schema.json",
            sorted(p.relative_to(repo).as_posix() for p in (repo / "k8s").glob("*.y*ml")),
        ),
        ("iam-trust.schema.json", [p for p in iam if p.endswith("-trust.json")]),
        ("iam-policy.schema.json", [p for p in iam if not p.endswith("-trust.json")]),
        (
            "github-workflow.schema.json",
            sorted(
                p.relative_to(repo).as_posix()
                for p in (repo / ".github" / "workflows").glob("*.y*ml")
            ),
        ),
    ]


def timed(commands: list[list[str]], cwd: Path, expect_ok: bool = True) -> tuple[float, float]:
    """(median wall time, median CPU time of the child processes) of running ``commands``.
    CPU time is the figure to compare on a busy machine: wall time there measures the queue."""
    samples, cpu = [], []
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        for command in commands:
            result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
            if expect_ok and result.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
        samples.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(samples), statistics.median(cpu)


BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)
HOSTILE = {  # name -> (file, content: text, "->target" for a symlink, "@50MB" for a big file)
    "billion laughs (10^9 values)": ("helm/values.yaml", BILLION_LAUGHS, "helm-values.schema.json"),
    "YAML nested 100,000 deep": (
        "helm/values.yaml",
        "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "helm-values.schema.json",
    ),
    "JSON nested 100,000 deep": (
        "iam/deep-policy.json",
        "[" * 100_000 + "]" * 100_000,
        "iam-policy.schema.json",
    ),
    "50 MB values file": ("helm/values.yaml", "@50MB", "helm-values.schema.json"),
    "symlink to /etc/passwd": ("k8s/passwd.yaml", "->/etc/passwd", "k8s-manifest.schema.json"),
}
LIMIT_SECONDS, LIMIT_BYTES = 20, 1 << 30


def write_hostile(repo: Path, file: str, content: str) -> None:
    target = repo / file
    target.unlink(missing_ok=True)
    if content.startswith("->"):
        target.symlink_to(content[2:])
    elif content == "@50MB":  # distinct keys, as a generated config dump would have
        with target.open("w") as out:
            out.write("config:\n  core:\n")
            line = 0
            while out.tell() < 50_000_000:
                out.write(f"    key_{line:08d}: some configuration value\n")
                line += 1
    else:
        target.write_text(content)


def measured(command: list[str], cwd: Path, limited: bool = False) -> tuple[float, float, object]:
    """(wall seconds, peak RSS in MB, exit status or what stopped it) of one process."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))

    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=limits if limited else None,  # noqa: PLW1509 - this script runs no threads
    )
    deadline = start + (LIMIT_SECONDS if limited else 600)
    stopped = None
    while True:
        pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            stopped = f"timeout {LIMIT_SECONDS} s"
        time.sleep(0.02)
    proc.returncode = 0  # reaped here; keep Popen from waiting again
    elapsed = time.perf_counter() - start
    if stopped:
        status: object = stopped
    elif os.WIFSIGNALED(raw):
        status = f"signal {os.WTERMSIG(raw)}"
    else:
        status = os.WEXITSTATUS(raw)
    return elapsed, usage.ru_maxrss / 1024, status


def hostile_rows(repo: Path, tmp: Path) -> list[tuple]:
    rows = []
    for name, (file, content, schema) in HOSTILE.items():
        copy = tmp / f"hostile-{len(rows)}"
        shutil.copytree(repo, copy, symlinks=True)
        write_hostile(copy, file, content)
        ours = measured([PYTHON, "-m", "airflow_gitops", "validate"], copy)
        theirs = measured(
            [CHECK_JSONSCHEMA, "--schemafile", f"schemas/{schema}", file], copy, limited=True
        )
        rows.append((name, ours, theirs))
        shutil.rmtree(copy)
    return rows


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
                [
                    [CHECK_JSONSCHEMA, "--schemafile", f"schemas/{schema}", *files]
                    for schema, files in schema_groups(root)
                    if files
                ],
                root,
            )
            rows.append((f"{label} ({files} files)", ours, theirs))
        hostile = hostile_rows(repo, Path(tmp))
    width = max(len(r[0]) for r in rows)
    print(f"validate benchmark: median of {RUNS} runs, whole process; wall clock (CPU time)")
    print(f"{'':<{width}}  {'make validate':>22}  {'check-jsonschema':>22}")
    for label, (wall, cpu), (their_wall, their_cpu) in rows:
        print(
            f"{label:<{width}}  {wall:>7.2f} s ({cpu:>5.2f} s CPU)  {their_wall:>7.2f} s ({their_cpu:>5.2f} s CPU)"
        )
    print(
        "make validate: schemas + cross-file rules; check-jsonschema: schemas only, one process per schema"
    )
    print(
        f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall time grows with it)"
    )
    default_wall, default_cpu = rows[0][1]
    big_wall, _ = rows[1][1]
    print(
        f"targets: default < 1 s ({'met' if default_wall < 1 else 'MISSED'} wall, "
        f"{'met' if default_cpu < 1 else 'MISSED'} CPU), "
        f"+{EXTRA:,} manifests < 5 s ({'met' if big_wall < 5 else 'MISSED'}), "
        f"faster than check-jsonschema ({'met' if all(o[0] < t[0] for _, o, t in rows) else 'MISSED'})"
    )
    print()
    print(
        f"hostile files: one process each; check-jsonschema under a {LIMIT_SECONDS} s / 1 GiB limit"
    )
    width = max(len(r[0]) for r in hostile)
    print(f"{'':<{width}}  {'validate':>28}  {'check-jsonschema':>28}")
    ok = True
    for name, (t1, m1, s1), (t2, m2, s2) in hostile:
        print(
            f"{name:<{width}}  {t1:>6.2f} s {m1:>6.0f} MB exit {s1!s:<6}  {t2:>6.2f} s {m2:>6.0f} MB exit {s2!s:<6}"
        )
        ok = ok and s1 == 1 and m1 < 500 and t1 < 5
    print(
        f"targets: every hostile file exit 1 (a finding), under 500 MB, under 5 s ({'met' if ok else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The S3 DAG sync agent against `aws s3 sync`, side by side, in one run on one moto server.

    .venv/bin/python benchmarks/s3sync.py [--files 1000] [--size 2048] [--repeat 3]

1. Full sync of FILES DAG files (~SIZE bytes each), uploaded by push-dags, into an empty folder:
   wall time and CPU seconds of `python -m airflow_gitops.dagsync --once` (as shipped: it
   streams push-dags' bundle; and with --no-bundle: one GET per file) and of `aws s3 sync`
   (with the aws-cli option's `--exclude '.dagsync/*'`). All are child processes paying their
   start-up, as an init container would.
2. One idle cycle (nothing changed): HTTP requests sent, by kind, and CPU seconds. The agent is
   a long-running process, so its cycle is one `sync_once()` in a warm process (requests counted
   with botocore event hooks, CPU from getrusage of that process). The usual sidecar runs
   `aws s3 sync` every cycle, so its cycle is one whole process (requests counted from its
   `--debug` log in a separate run, CPU from getrusage of the children).

Targets (issue 6): full sync in at most half the time of `aws s3 sync`; idle cycle one LIST per
1,000 objects, no GET, at most 1/20 of the CPU. Prints figures; asserts nothing about timing.
Needs the template's venv (moto, boto3 and awscli installed); never talks to real AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
PROJECT = TEMPLATE / "{{cookiecutter.project}}"
sys.path.insert(0, str(PROJECT))

BUCKET = "dag-sync-benchmark"
PREFIX = "dags"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_child(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stderr) of one child process, which must succeed."""
    cpu, started = children_cpu(), time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... exited {result.returncode}:\n{result.stderr[-2000:]}")
    return wall, children_cpu() - cpu, result.stderr


def aws_cli() -> str:
    found = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    if not found:
        raise SystemExit("aws (awscli) not found; run from the template venv (make bench)")
    return found


def make_dags(folder: Path, files: int, size: int) -> None:
    line = "# padding line of a typical DAG module, to reach the size of a real file\n"
    for i in range(files):
        head = f"from airflow.sdk import dag\n\n\n@dag(schedule=None)\ndef dag_{i:04d}():\n    pass\n\n"
        body = head + line * max(0, (size - len(head)) // len(line))
        path = folder / f"team_{i % 10}" / f"dag_{i:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body.ljust(size, "#")[:size])


def agent_idle_child(dest: str, cycles: int) -> None:
    """Runs in a child process: a warm agent's idle cycles; prints requests and CPU as JSON."""
    from airflow_gitops.dagsync import agent, s3

    sent: Counter = Counter()
    client = s3.make_s3_client()
    client.meta.events.register(
        "before-send.s3", lambda event_name, **_: sent.update([event_name.rsplit(".", 1)[-1]])
    )
    sync = agent.SyncAgent(client, BUCKET, PREFIX, dest)
    sync.sync_once()  # warm: connection open, manifest in memory (as in the running sidecar)
    sent.clear()
    cpu_per_cycle, wall_per_cycle = [], []
    for _ in range(cycles):
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        result = sync.sync_once()
        wall_per_cycle.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu_per_cycle.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        assert not result.changed
    print(json.dumps({
        "requests": {k: v / cycles for k, v in sent.items()},
        "cpu": statistics.median(cpu_per_cycle),
        "wall": statistics.median(wall_per_cycle),
    }))


def count_cli_requests(debug_log: str) -> Counter:
    """Kinds of HTTP requests in an `aws --debug` log (LIST = ListObjectsV2, GET = GetObject)."""
    kinds: Counter = Counter()
    for match in re.finditer(r"Sending http request: <AWSPreparedRequest [^>]*method=(\w+), url=(\S+),", debug_log):
        method, url = match.groups()
        kinds["ListObjectsV2" if "list-type=2" in url else f"{method} object" if method != "GET" else "GetObject"] += 1
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3, help="full syncs per tool (median)")
    parser.add_argument("--cycles", type=int, default=5, help="idle cycles per tool (median)")
    parser.add_argument("--agent-idle-child", metavar="DEST", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent_idle_child:
        agent_idle_child(args.agent_idle_child, args.cycles)
        return 0

    import boto3

    from airflow_gitops.dagsync import push
    from airflow_gitops.local_aws import aws_env, moto_server

    aws = aws_cli()
    with moto_server() as server, aws_env(server), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, **server.env(), "PYTHONPATH": str(PROJECT), "HOME": str(tmp)}
        boto3.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        make_dags(tmp / "source", args.files, args.size)
        push.push_dags(tmp / "source", BUCKET, PREFIX)
        source = f"s3://{BUCKET}/{PREFIX}/"
        agent_cmd = [sys.executable, "-m", "airflow_gitops.dagsync", "--bucket", BUCKET,
                     "--prefix", PREFIX, "--once", "--log-level", "warning", "--dest"]
        cli_cmd = [aws, "s3", "sync", source, "--no-progress", "--only-show-errors",
                   "--exclude", ".dagsync/*"]

        # 1. Full sync into an empty folder, alternating the tools so drift hits all alike.
        full = {"agent": [], "plain": [], "aws": []}
        for run in range(args.repeat):
            full["agent"].append(timed_child([*agent_cmd, str(tmp / f"agent-{run}")], env)[:2])
            full["plain"].append(
                timed_child([*agent_cmd, str(tmp / f"plain-{run}"), "--no-bundle"], env)[:2]
            )
            full["aws"].append(timed_child([*cli_cmd[:4], str(tmp / f"aws-{run}"), *cli_cmd[4:]], env)[:2])
        for folder in (tmp / "agent-0" / "current", tmp / "plain-0" / "current", tmp / "aws-0"):
            count = sum(1 for p in folder.rglob("*.py"))
            assert count == args.files, f"{folder}: {count} files synced"

        # 2. One idle cycle.
        child = subprocess.run(
            [sys.executable, __file__, "--agent-idle-child", str(tmp / "agent-0"), "--cycles", str(args.cycles)],
            env=env, capture_output=True, text=True, check=True,
        )
        agent_idle = json.loads(child.stdout)
        cli_dest = [*cli_cmd[:4], str(tmp / "aws-0"), *cli_cmd[4:]]
        cli_idle = [timed_child(cli_dest, env)[:2] for _ in range(args.cycles)]
        debug_log = timed_child([*cli_dest, "--debug"], env)[2]
        cli_requests = count_cli_requests(debug_log)

    med = lambda pairs, i: statistics.median(p[i] for p in pairs)  # noqa: E731
    rows = [
        ("full sync: wall s", med(full["agent"], 0), med(full["plain"], 0), med(full["aws"], 0),
         "agent <= 0.5 x aws"),
        ("full sync: CPU s", med(full["agent"], 1), med(full["plain"], 1), med(full["aws"], 1), ""),
        ("idle cycle: wall s", agent_idle["wall"], None, med(cli_idle, 0), ""),
        ("idle cycle: CPU s", agent_idle["cpu"], None, med(cli_idle, 1), "agent <= 0.05 x aws"),
    ]
    fmt_req = lambda kinds: ", ".join(f"{k} {v:g}" for k, v in sorted(kinds.items())) or "none"  # noqa: E731
    print(f"S3 DAG sync benchmark: {args.files} DAG files of {args.size} bytes (+ push-dags' "
          f"bundle), one local moto server; median of {args.repeat} full syncs, {args.cycles} "
          "idle cycles\n")
    print(f"{'measure':<20}{'agent':>10}{'agent':>12}{'aws s3':>10}{'agent/aws':>11}   target")
    print(f"{'':<20}{'':>10}{'no bundle':>12}{'sync':>10}")
    print("-" * 86)
    for name, a, plain, b, target in rows:
        plain_text = f"{plain:>12.3f}" if plain is not None else f"{'':>12}"
        print(f"{name:<20}{a:>10.3f}{plain_text}{b:>10.3f}{a / b:>11.3f}   {target}")
    print(f"\nidle cycle requests  agent: {fmt_req(agent_idle['requests'])}; "
          f"aws s3 sync: {fmt_req(cli_requests)}")
    print("  (target: 1 ListObjectsV2 per 1,000 objects, no GET; the prefix holds "
          f"{args.files + 1} objects)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make demo` (tools/demo.py) end to end: it generates, validates, converges AWS on a local moto
twice (the second time changing nothing), ships the example DAG and pulls it back; and it
stops its moto server whether it succeeds, fails or is interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import PYTHON, TEMPLATE

DEMO = TEMPLATE / "tools" / "demo.py"
MOTO_LINE = re.compile(r"moto (http://127\.0\.0\.1:(\d+)) \(pid (\d+)\)")


def demo_env(**extra: str) -> dict[str, str]:
    """The caller's environment with AWS settings that must NOT be used: if the demo let any
    of them through, boto3 would fail (unknown profile) or go to a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_PROFILE="must-not-be-used",
        AWS_ACCESS_KEY_ID="AKIAMUSTNOTBEUSED",
        AWS_SECRET_ACCESS_KEY="must-not-be-used",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_ENDPOINT_URL_S3="http://127.0.0.1:9",
        **extra,
    )
    return env


def start_demo(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, str(DEMO), "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_stopped(port: int, pid: int) -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_demo_runs_the_whole_flow_and_the_second_apply_changes_nothing(tmp_path):
    result = subprocess.run(
        [PYTHON, str(DEMO), "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    # progress: one line per step, each with its time
    steps = re.findall(r"^\[(\d)/8\] .+? ok +\d+\.\ds \(total +\d+\.\ds\)", out, re.M)
    assert steps == [str(n) for n in range(1, 9)], out

    summary = json.loads((tmp_path / "out" / "demo-summary.json").read_text())
    assert summary["ok"] is True
    assert summary["generated"]["dag_source"] == "s3-sync"
    assert summary["generated"]["files"] > 20
    assert summary["validate"].startswith("0 findings"), summary["validate"]

    created = {kind for kind, _ in summary["bootstrap"]["changes"]} | {
        kind for kind, _ in summary["apply"]["changes"]
    }
    assert {
        "s3 bucket",
        "ecr repository",
        "iam oidc provider",
        "iam role",
        "iam policy",
        "eks access entry",
        "eks access policy",
    } <= created
    # bootstrap (the admin) makes everything; in s3-sync the deploy role's apply only checks.
    assert summary["bootstrap"]["created"] > 0 and summary["apply"]["created"] == 0
    again = summary["apply_again"]
    assert (again["created"], again["updated"], again["changes"]) == (0, 0, [])
    assert again["state_unchanged"] is True
    assert re.search(
        r"^apply again  0 created, 0 updated, \d+ unchanged -> changed nothing", out, re.M
    ), out

    repo = Path(summary["generated"]["path"])
    pulled = Path(summary["pull_dags"]["dest"])
    assert pulled == tmp_path / "out" / "demo-dags" / "current"
    assert (pulled / "example_dag.py").read_bytes() == (
        repo / "dags" / "example_dag.py"
    ).read_bytes()
    assert "pull-dags    out/demo-dags/current/: example_dag.py" in out

    moto = summary["moto"]
    assert moto["stopped"] and moto["port_closed"]
    assert_stopped(moto["port"], moto["pid"])
    assert f"pid {moto['pid']} on {moto['endpoint']}: stopped, port closed" in out
    assert summary["total_seconds"] < 120


def test_a_failing_step_is_named_with_its_output_and_moto_is_stopped(tmp_path):
    """A `make` that fails for `bootstrap` only: step 4 fails after moto is up."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    real_make = subprocess.run(
        ["sh", "-c", "command -v make"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (fake_bin / "make").write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        for arg in "$@"; do
          if [ "$arg" = bootstrap ]; then echo "injected failure for bootstrap"; exit 3; fi
        done
        exec {real_make} "$@"
        """)
    )
    (fake_bin / "make").chmod(0o755)
    env = demo_env(PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [PYTHON, str(DEMO), "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^\[4/8\] make bootstrap \.+ FAILED", result.stdout, re.M), result.stdout
    assert "FAILED at step 4/8 (bootstrap)" in result.stderr
    assert "exited 3" in result.stderr
    assert "    injected failure for bootstrap" in result.stderr  # the output's tail
    assert "Summary" not in result.stdout
    url, port, pid = MOTO_LINE.search(result.stdout).groups()
    assert f"moto server (pid {pid}, {url}) stopped." in result.stdout
    assert_stopped(int(port), int(pid))
    summary = json.loads((tmp_path / "out" / "demo-summary.json").read_text())
    assert (summary["ok"], summary["failed_step"]) == (False, "bootstrap")


def test_ctrl_c_stops_moto_and_exits_130(tmp_path):
    demo = start_demo(tmp_path, demo_env())
    try:
        for line in demo.stdout:  # until step 3 (moto) has reported its endpoint
            match = MOTO_LINE.search(line)
            if match:
                break
        else:
            pytest.fail(f"no moto line; stderr: {demo.stderr.read()}")
        demo.send_signal(signal.SIGINT)  # the demo only, not its children: it must stop them
        rest, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 128 + signal.SIGINT, rest + err
    assert re.search(r"INTERRUPTED during step \d/8 \(\S+\) by SIGINT", err), err
    url, port, pid = match.groups()
    assert f"moto server (pid {pid}, {url}) stopped." in rest
    assert_stopped(int(port), int(pid))

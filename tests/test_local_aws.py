"""`make local-aws` in a generated repo, then the AWS targets by hand as its README says: the
server prints the environment to export, and bootstrap, plan, apply, push-dags and pull-dags
work against it; Ctrl-C stops it and frees the port."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, run_make

EXPORT = re.compile(r"^\s*export (.+?); unset AWS_PROFILE$", re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shell_env() -> dict[str, str]:
    """A user's shell with nothing of AWS in it (the test must never reach real AWS)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def start_local_aws(repo: Path, port: int) -> tuple[subprocess.Popen, dict[str, str], str]:
    process = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(repo),
            f"PYTHON={PYTHON}",
            "local-aws",
            f"PORT={port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=shell_env(),
        start_new_session=True,  # its own process group: Ctrl-C goes to make and the server
    )
    banner = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner += line
        if "Ctrl-C stops it" in line:
            break
    match = EXPORT.search(banner)
    if not match:
        stop(process)
        pytest.fail(f"make local-aws printed no environment:\n{banner}")
    exports = dict(item.split("=", 1) for item in shlex.split(match.group(1)))
    return process, exports, banner


def stop(process: subprocess.Popen) -> str:
    """Ctrl-C, as a user in the terminal: SIGINT to the foreground process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        rest, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        rest, _ = process.communicate()
    return rest


@pytest.mark.parametrize("mode", ["s3-sync", "efs"])
def test_local_aws_then_the_aws_targets_by_hand(baked, tmp_path, mode):
    repo = tmp_path / "repo"
    shutil.copytree(baked(dag_source=mode), repo)
    port = free_port()
    process, exports, banner = start_local_aws(repo, port)
    try:
        assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        assert "EKS cluster data-platform" in banner
        env = {**shell_env(), **exports}

        def make(*targets: str, check: bool = True):
            return run_make(repo, *targets, env=env, check=check)

        assert "Bootstrap complete:" in make("bootstrap").stdout
        # bootstrap (the admin) makes every resource, IAM and the rest; nothing is left to apply.
        first = make("plan", check=False)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "Apply complete:" in make("apply").stdout
        assert re.search(
            r"Apply complete: 0 created, 0 updated, \d+ unchanged", make("apply").stdout
        )
        assert make("plan").returncode == 0
        if mode == "s3-sync":
            assert "1 uploaded" in make("push-dags").stdout
            make("pull-dags", f"DEST={tmp_path / 'pulled'}")
            pulled = tmp_path / "pulled" / "current" / "example_dag.py"
            assert pulled.read_bytes() == (repo / "dags" / "example_dag.py").read_bytes()
    finally:
        rest = stop(process)
    assert "local AWS stopped" in rest, rest
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the server still listens"


def test_local_aws_refuses_a_busy_port_in_one_line(default_repo):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_make(default_repo, "local-aws", f"PORT={port}", env=shell_env(), check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [
        f"ERROR [UsageError]: --port {port}: cannot listen on 127.0.0.1 "
        "(Address already in use); stop what uses it or pass another, e.g. "
        "make local-aws PORT=5124"
    ], result.stderr


def test_local_aws_serves_every_environments_cluster(baked, tmp_path):
    """With environments, `make local-aws` needs no ENV: it makes each environment's cluster in
    its region (here prod's own, in another region, as the demo edits it), and ENV=<any> works."""
    from test_demo import load_demo

    demo = load_demo()
    repo = tmp_path / "repo"
    shutil.copytree(baked(**demo.ANSWERS), repo)
    stack = repo / "stack.yaml"
    stack.write_text(demo.place_environment(stack.read_text(), "prod", "eu-west-2")[0])
    port = free_port()
    process, exports, banner = start_local_aws(repo, port)
    try:
        assert (
            "EKS cluster data-platform, EKS cluster data-platform-prod in eu-west-2." in banner
        ), banner
        assert "make bootstrap ENV=dev && make apply ENV=dev" in banner, banner
        env = {**shell_env(), **exports}
        for name in ("dev", "prod"):
            result = run_make(repo, "bootstrap", f"ENV={name}", env=env)
            assert "Bootstrap complete:" in result.stdout
        assert "oidc.eks.eu-west-2.amazonaws.com" in result.stdout  # prod's cluster's issuer
    finally:
        rest = stop(process)
    assert "local AWS stopped" in rest, rest

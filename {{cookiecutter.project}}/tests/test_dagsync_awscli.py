"""The aws-cli option's script (images/aws-cli/dag-sync.sh), run with the real AWS CLI against moto.

Skipped when the script was left out of this repository (own-image) or no `aws` is installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest
import yaml

from airflow_gitops.local_aws import aws_env, moto_server

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "images" / "aws-cli" / "dag-sync.sh"
AWS = shutil.which("aws", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
BUCKET = "dag-bucket-awscli"

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="aws-cli option not in this repository")
needs_aws = pytest.mark.skipif(AWS is None, reason="the AWS CLI is not installed")


@pytest.fixture(scope="module")
def server():
    with moto_server() as srv, aws_env(srv):
        yield srv


@pytest.fixture
def bucket(server):
    server.reset()
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client


def script_env(server, tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ, **server.env(), "PATH": f"{Path(AWS).parent}{os.pathsep}{os.environ['PATH']}",
        "BUCKET": BUCKET, "PREFIX": "dags", "DEST": str(tmp_path / "dest"), "ONCE": "1",
        "HOME": str(home), **extra,
    }


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_aws
def test_script_publishes_snapshots_and_never_publishes_a_failed_or_shrunk_sync(server, bucket, tmp_path):
    for i in range(6):
        bucket.put_object(Bucket=BUCKET, Key=f"dags/dag_{i}.py", Body=f"v{i}\n".encode())
    bucket.put_object(Bucket=BUCKET, Key="dags/.dagsync/bundle.tar.gz", Body=b"not for Airflow")
    env = script_env(server, tmp_path)
    dest = tmp_path / "dest"
    assert run_script(env).returncode == 0
    first = os.readlink(dest / "current")
    assert first.startswith("snapshots/") and len(tree(dest / "current")) == 6
    assert run_script(env, "check").returncode == 0

    assert run_script(env).returncode == 0  # nothing changed: no new snapshot
    assert os.readlink(dest / "current") == first

    failed = run_script({**env, "BUCKET": "no-such-dag-bucket"})
    assert failed.returncode == 1 and '"event": "sync_failed"' in failed.stderr
    assert os.readlink(dest / "current") == first and len(tree(dest / "current")) == 6

    for i in range(4):  # 4 of 6 gone: more than 50%
        bucket.delete_object(Bucket=BUCKET, Key=f"dags/dag_{i}.py")
    refused = run_script(env)
    assert refused.returncode == 3 and '"event": "refused"' in refused.stderr
    assert run_script(env).returncode == 3  # judged again, not silently forgotten
    assert os.readlink(dest / "current") == first and len(tree(dest / "current")) == 6

    assert run_script({**env, "MAX_DELETE_PERCENT": "100"}).returncode == 0
    assert tree(dest / "current") == {"dag_4.py": "v4\n", "dag_5.py": "v5\n"}
    assert len(os.listdir(dest / "snapshots")) == 2  # the published one and the one before


def test_check_mode_reads_the_heartbeat(tmp_path):
    env = {**os.environ, "DEST": str(tmp_path), "MAX_AGE": "60"}
    assert run_script(env, "check").returncode == 4
    (tmp_path / ".heartbeat").write_text('{"last_success_unix": %d.5}\n' % (time.time() - 10))
    assert run_script(env, "check").returncode == 0
    (tmp_path / ".heartbeat").write_text('{"last_success_unix": %d}\n' % (time.time() - 100))
    assert run_script(env, "check").returncode == 4


@needs_aws
def test_script_stops_within_two_seconds_of_sigterm(server, bucket, tmp_path):
    bucket.put_object(Bucket=BUCKET, Key="dags/a.py", Body=b"a\n")
    env = script_env(server, tmp_path, ONCE="0", INTERVAL="30")
    process = subprocess.Popen(["sh", str(SCRIPT)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "dest" / ".heartbeat").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
        assert time.monotonic() - started < 2.0 and process.returncode == 0
    finally:
        process.kill()
    assert '"event": "stopped"' in process.stderr.read()


def test_helm_values_embed_this_script():
    """values.yaml carries the script inline; it must be this file, byte for byte."""
    try:
        stack = yaml.safe_load((REPO / "stack.yaml").read_text())
    except yaml.YAMLError:
        pytest.skip("stack.yaml is not rendered (running inside the template)")
    if stack["dags"].get("sync_image") != "aws-cli":
        pytest.skip("own-image: values.yaml runs the agent image")
    values = (REPO / "helm" / "values.yaml").read_text()
    script = SCRIPT.read_text().rstrip("\n")
    assert any(textwrap.indent(script, " " * n) in values for n in range(2, 21, 2)), (
        "helm/values.yaml does not contain images/aws-cli/dag-sync.sh; copy the script there"
    )

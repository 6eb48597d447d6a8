"""The aws-cli option's script (images/aws-cli/dag-sync.sh), run with the real AWS CLI against moto.

It runs against a bake with that option; skipped where no `aws` is installed. That helm/values.yaml
embeds the script is the generated repo's own test (tests/test_sync_script.py).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from airflow_gitops.local_aws import aws_env, moto_server

from repos import baked_repo

REPO = baked_repo(s3_sync_image="aws-cli")  # the script and the values that embed it
SCRIPT = REPO / "images" / "aws-cli" / "dag-sync.sh"
AWS = shutil.which(
    "aws", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)
BUCKET = "dag-bucket-awscli"

needs_aws = pytest.mark.skipif(AWS is None, reason="the AWS CLI is not installed")


@pytest.fixture(scope="module")
def server():
    with moto_server() as srv, aws_env(srv):
        yield srv


@pytest.fixture
def bucket(server):
    server.reset()
    client = boto3.client("s3")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    return client


def script_env(server, tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        **server.env(),
        "PATH": f"{Path(AWS).parent}{os.pathsep}{os.environ['PATH']}",
        "BUCKET": BUCKET,
        "PREFIX": "dags",
        "DEST": str(tmp_path / "dest"),
        "ONCE": "1",
        "HOME": str(home),
        **extra,
    }


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(SCRIPT), *args],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@needs_aws
def test_script_publishes_snapshots_and_never_publishes_a_failed_or_shrunk_sync(
    server, bucket, tmp_path
):
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


@needs_aws
def test_script_fetches_same_size_edits_and_keeps_file_times_without_copies(
    server, bucket, tmp_path
):
    bucket.put_object(Bucket=BUCKET, Key="dags/a.py", Body=b"v1\n")
    env = script_env(server, tmp_path)
    dest = tmp_path / "dest"
    assert run_script(env).returncode == 0
    time.sleep(1.1)  # LastModified has one-second resolution
    bucket.put_object(Bucket=BUCKET, Key="dags/a.py", Body=b"v2\n")  # same size
    assert run_script(env).returncode == 0
    assert tree(dest / "current") == {"a.py": "v2\n"}
    published, staged = dest / "current" / "a.py", dest / ".staging" / "a.py"
    # A hard link to the staged file: no second copy on disk, and the object's time is kept.
    assert published.stat().st_ino == staged.stat().st_ino
    modified = bucket.head_object(Bucket=BUCKET, Key="dags/a.py")["LastModified"].timestamp()
    assert abs(published.stat().st_mtime - modified) < 1


@needs_aws
def test_script_publishes_the_rest_when_a_key_is_skipped_and_names_it_once(
    server, bucket, tmp_path
):
    bucket.put_object(Bucket=BUCKET, Key="dags/ok.py", Body=b"ok\n")
    # The CLI cannot download an archived object: it skips it and exits 2.
    bucket.put_object(Bucket=BUCKET, Key="dags/cold.py", Body=b"c\n", StorageClass="GLACIER")
    env = script_env(server, tmp_path)
    first = run_script(env)
    assert first.returncode == 0, first.stderr
    assert tree(tmp_path / "dest" / "current") == {"ok.py": "ok\n"}
    assert first.stderr.count('"event": "skipped_keys"') == 1 and "cold.py" in first.stderr
    bucket.put_object(Bucket=BUCKET, Key="dags/later.py", Body=b"L\n")
    second = run_script(env)
    assert second.returncode == 0 and '"skipped_keys"' not in second.stderr  # named once
    assert tree(tmp_path / "dest" / "current") == {"ok.py": "ok\n", "later.py": "L\n"}


@needs_aws
def test_script_after_a_full_disk_leaves_no_temporary_snapshot(server, bucket, tmp_path):
    bucket.put_object(Bucket=BUCKET, Key="dags/a.py", Body=b"a\n")
    env = script_env(server, tmp_path)
    dest = tmp_path / "dest"
    assert run_script(env).returncode == 0
    first = os.readlink(dest / "current")
    (dest / "snapshots" / "killed-mid-publish.tmp").mkdir()  # left by a killed run
    bucket.put_object(Bucket=BUCKET, Key="dags/big.py", Body=b"#" * 200_000)
    # The file size limit makes writes fail as a full disk does (EFBIG instead of ENOSPC).
    full = subprocess.run(
        ["sh", "-c", f'ulimit -f 64; exec sh "{SCRIPT}"'],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert full.returncode == 1 and '"event": "sync_failed"' in full.stderr
    assert os.readlink(dest / "current") == first and tree(dest / "current") == {"a.py": "a\n"}
    assert not [p for p in dest.rglob("*.tmp")]
    assert run_script(env).returncode == 0  # space again: the change is published
    assert set(tree(dest / "current")) == {"a.py", "big.py"}


@needs_aws
@pytest.mark.parametrize("objects", [{}, {"dags/notes.txt": b"n\n"}])
def test_script_refuses_a_cold_start_without_dags(server, bucket, tmp_path, objects):
    for key, body in objects.items():
        bucket.put_object(Bucket=BUCKET, Key=key, Body=body)
    env = script_env(server, tmp_path)
    refused = run_script(env)
    assert refused.returncode == 3 and '"event": "refused"' in refused.stderr
    assert "ALLOW_EMPTY=1" in refused.stderr and not (tmp_path / "dest" / "current").exists()
    assert run_script({**env, "ALLOW_EMPTY": "1"}).returncode == 0
    assert (tmp_path / "dest" / "current").is_symlink()


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("INTERVAL", "abc", "whole seconds > 0"),
        ("ONCE", "yes", "0 or 1"),
        ("MAX_DELETE_PERCENT", "-5", "0..100"),
    ],
)
def test_script_bad_settings_get_one_line_errors(tmp_path, name, value, allowed):
    env = {**os.environ, "BUCKET": BUCKET, "DEST": str(tmp_path), name: value}
    result = run_script(env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"ERROR: {name}: '{value}' is not allowed; use {allowed}"


@needs_aws
def test_script_one_writer_per_destination(server, bucket, tmp_path):
    if shutil.which("flock") is None:
        pytest.skip("no flock(1) here; the script runs without the lock then")
    bucket.put_object(Bucket=BUCKET, Key="dags/a.py", Body=b"a\n")
    env = script_env(server, tmp_path)
    (tmp_path / "dest").mkdir()
    with open(tmp_path / "dest" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another writer holds DEST
        locked = run_script(env)
    assert locked.returncode == 5 and '"event": "locked"' in locked.stderr


def test_check_mode_reads_the_heartbeat(tmp_path):
    env = {**os.environ, "DEST": str(tmp_path), "MAX_AGE": "60"}
    assert run_script(env, "check").returncode == 4
    (tmp_path / ".heartbeat").write_text(f'{{"last_success_unix": {int(time.time() - 10)}.5}}\n')
    assert run_script(env, "check").returncode == 0
    (tmp_path / ".heartbeat").write_text(f'{{"last_success_unix": {int(time.time() - 100)}}}\n')
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


@needs_aws
def test_script_once_interrupted_is_not_success(server, tmp_path):
    """An init container stopped mid-sync must not count as done."""
    with socket.socket() as blackhole:  # accepts connections, never answers: a hung S3
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        env = script_env(server, tmp_path)
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        process = subprocess.Popen(["sh", str(SCRIPT)], env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not (tmp_path / "dest" / ".syncing").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=5)
            assert process.returncode == 143
        finally:
            process.kill()
    assert not (tmp_path / "dest" / "current").exists()

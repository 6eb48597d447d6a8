"""The S3 DAG sync agent and push-dags, against a moto server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest

from airflow_gitops.dagsync import agent, push, s3
from airflow_gitops.local_aws import MotoServer, aws_env, moto_server

REPO = Path(__file__).resolve().parent.parent
BUCKET = "dag-bucket-test"
PREFIX = "dags"


@pytest.fixture(scope="module")
def server():
    with moto_server() as srv, aws_env(srv):
        yield srv


@pytest.fixture
def bucket(server):
    """A fresh, empty bucket on the shared server (state from other tests is reset)."""
    server.reset()
    client = boto3.client("s3")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    return client


def counting_client():
    """The agent's real client, plus a Counter of the HTTP requests it sent, by operation."""
    sent: Counter = Counter()
    client = s3.make_s3_client()
    client.meta.events.register(
        "before-send.s3", lambda event_name, **_: sent.update([event_name.rsplit(".", 1)[-1]])
    )
    return client, sent


def put(client, files: dict[str, str], prefix: str = PREFIX) -> None:
    for relpath, body in files.items():
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{relpath}", Body=body.encode())


def read_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != agent.MANIFEST
    }


def dags(n: int, version: int = 1) -> dict[str, str]:
    return {f"dag_{i:03d}.py": f"# dag {i} version {version}\n" for i in range(n)}


def new_agent(dest: Path, **kwargs) -> tuple[agent.SyncAgent, Counter]:
    client, sent = counting_client()
    return agent.SyncAgent(client, BUCKET, PREFIX, dest, **kwargs), sent


# --- key <-> path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, expected",
    [
        ("dags/a.py", "a.py"),
        ("dags/sub/b.py", "sub/b.py"),
        ("dags/", None),
        ("dags/sub/", None),
        ("dags/../evil.py", None),
        ("dags/a//b.py", None),
        ("dags/./a.py", None),
        ("other/a.py", None),
        ("dagsx/a.py", None),
    ],
)
def test_key_to_path_is_safe(key, expected):
    assert s3.relpath_for("/dags/", key) == expected


def test_key_and_path_round_trip():
    assert s3.key_for("dags", "sub/a.py") == "dags/sub/a.py"
    assert s3.key_for("", "a.py") == "a.py"
    assert s3.relpath_for("", "a.py") == "a.py"


def test_client_honours_aws_endpoint_url(server):
    assert s3.make_s3_client().meta.endpoint_url == server.endpoint


# --- the agent ----------------------------------------------------------------------------


def test_first_sync_publishes_a_complete_snapshot(bucket, tmp_path):
    files = {
        **dags(5), "sub/helper.py": "X = 1\n", ".airflowignore": "tmp_.*\n",
        "odd name+é&<x>.py": "Y = 2\n",  # URL-encoded in the listing, XML-escaped: both undone
    }
    put(bucket, files)
    sync, sent = new_agent(tmp_path / "dest")
    result = sync.sync_once()
    current = tmp_path / "dest" / "current"
    assert current.is_symlink() and not os.path.isabs(os.readlink(current))
    assert read_tree(current) == files
    assert result.changed and result.downloaded == len(files) and result.objects == len(files)
    assert sent == Counter(ListObjectsV2=1, GetObject=len(files))


def test_idle_cycle_is_one_list_and_nothing_else(bucket, tmp_path):
    put(bucket, dags(30))
    sync, sent = new_agent(tmp_path / "dest")
    first = sync.sync_once()
    sent.clear()
    again = sync.sync_once()
    assert sent == Counter(ListObjectsV2=1)
    assert not again.changed and again.snapshot == first.snapshot
    assert os.listdir(tmp_path / "dest" / "snapshots") == [first.snapshot]


def test_incremental_sync_fetches_only_changed_objects(bucket, tmp_path):
    put(bucket, dags(20))
    sync, sent = new_agent(tmp_path / "dest")
    first = sync.sync_once()
    put(bucket, {"dag_003.py": "# changed\n", "dag_007.py": "# changed too\n", "new.py": "N\n"})
    sent.clear()
    result = sync.sync_once()
    assert sent == Counter(ListObjectsV2=1, GetObject=3)
    assert (result.downloaded, result.linked, result.deleted) == (3, 18, 0)
    current = tmp_path / "dest" / "current"
    assert (current / "dag_003.py").read_text() == "# changed\n"
    assert (current / "new.py").read_text() == "N\n"
    # Unchanged files are hard links into the previous snapshot, which is kept for readers.
    previous = tmp_path / "dest" / "snapshots" / first.snapshot
    assert (current / "dag_000.py").stat().st_ino == (previous / "dag_000.py").stat().st_ino
    assert (previous / "dag_003.py").read_text() == "# dag 3 version 1\n"


def test_a_restarted_agent_resumes_from_the_manifest(bucket, tmp_path):
    put(bucket, dags(10))
    new_agent(tmp_path / "dest")[0].sync_once()
    restarted, sent = new_agent(tmp_path / "dest")
    assert not restarted.sync_once().changed
    assert sent == Counter(ListObjectsV2=1)


def test_deleted_objects_disappear_and_old_snapshots_are_removed(bucket, tmp_path):
    put(bucket, dags(10))
    sync, _ = new_agent(tmp_path / "dest")
    snapshots = [sync.sync_once().snapshot]
    for i, key in enumerate(["dag_000.py", "dag_001.py", "dag_002.py"]):
        bucket.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")
        result = sync.sync_once()
        assert result.deleted == 1
        snapshots.append(result.snapshot)
    assert set(read_tree(tmp_path / "dest" / "current")) == set(dags(10)) - {
        "dag_000.py", "dag_001.py", "dag_002.py"
    }
    # Only the published snapshot and the one before it remain.
    assert sorted(os.listdir(tmp_path / "dest" / "snapshots")) == sorted(snapshots[-2:])


def test_unsafe_keys_never_leave_the_dag_folder(bucket, tmp_path):
    put(bucket, {"ok.py": "ok\n"})
    for key in ["dags/../evil.py", "dags/a//b.py", "dags/sub/", f"dags/{agent.MANIFEST}"]:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    sync, _ = new_agent(tmp_path / "dest")
    sync.sync_once()
    assert read_tree(tmp_path / "dest" / "current") == {"ok.py": "ok\n"}
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "dest" / "evil.py").exists()


def test_shrink_guard_refuses_a_listing_that_lost_most_files(bucket, tmp_path):
    put(bucket, dags(10))
    sync, _ = new_agent(tmp_path / "dest")
    before = sync.sync_once().snapshot
    for i in range(6):  # 6 of 10 would disappear: more than 50%
        bucket.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/dag_{i:03d}.py")
    with pytest.raises(agent.ShrinkRefused, match="would delete 6 of 10 files"):
        sync.sync_once()
    assert os.readlink(tmp_path / "dest" / "current") == f"snapshots/{before}"
    assert len(read_tree(tmp_path / "dest" / "current")) == 10
    # An operator who means it raises the limit.
    lenient, _ = new_agent(tmp_path / "dest", max_delete_fraction=1.0)
    assert lenient.sync_once().deleted == 6
    assert len(read_tree(tmp_path / "dest" / "current")) == 4


def test_an_empty_listing_never_empties_the_folder(bucket, tmp_path):
    put(bucket, dags(3))
    dest = tmp_path / "dest"
    new_agent(dest)[0].sync_once()
    misconfigured = agent.SyncAgent(counting_client()[0], BUCKET, "wrong-prefix", dest)
    with pytest.raises(agent.ShrinkRefused):
        misconfigured.sync_once()
    assert len(read_tree(dest / "current")) == 3


def test_shrink_guard_boundary():
    assert not s3.deletion_refused(10, 5, 0.5)
    assert s3.deletion_refused(10, 6, 0.5)
    assert not s3.deletion_refused(0, 0, 0.5)
    assert not s3.deletion_refused(10, 10, 1.0)


def test_auth_or_bucket_errors_change_nothing(bucket, tmp_path):
    put(bucket, dags(4))
    dest = tmp_path / "dest"
    new_agent(dest)[0].sync_once()
    wrong = agent.SyncAgent(counting_client()[0], "no-such-bucket-here", PREFIX, dest)
    with pytest.raises(agent.SyncFailed, match="NoSuchBucket"):
        wrong.sync_once()
    assert len(read_tree(dest / "current")) == 4


def test_s3_outage_mid_sync_keeps_the_published_snapshot_and_recovers(tmp_path):
    """The server dies after a few GETs: nothing deleted, nothing half-written is visible."""
    srv = MotoServer().start()
    try:
        with aws_env(srv):
            client = boto3.client("s3")
            client.create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
            put(client, dags(40))
            dest = tmp_path / "dest"
            sync, _ = new_agent(dest, workers=4)
            before = sync.sync_once().snapshot
            put(client, {**dags(40, version=2)})
            client.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/dag_039.py")

            gets = 0
            real_get = sync.client.get_object
            lock = threading.Lock()

            def get_then_outage(**kwargs):
                nonlocal gets
                with lock:
                    gets += 1
                    if gets == 5:
                        srv.stop()  # the outage starts in the middle of the downloads
                return real_get(**kwargs)

            sync.client.get_object = get_then_outage
            with pytest.raises(agent.SyncFailed):
                sync.sync_once()
            sync.client.get_object = real_get

            assert os.readlink(dest / "current") == f"snapshots/{before}"
            assert read_tree(dest / "current") == dags(40)  # all old, all whole, none deleted
            assert os.listdir(dest / "snapshots") == [before]  # the partial build is gone

            with pytest.raises(agent.SyncFailed):  # still down: listing fails, nothing changes
                sync.sync_once()
            assert read_tree(dest / "current") == dags(40)

            # The server returns on the same port (empty, as moto keeps state in memory):
            # NoSuchBucket changes nothing; once the DAGs are pushed again the agent catches up.
            srv.start()
            with pytest.raises(agent.SyncFailed, match="NoSuchBucket"):
                sync.sync_once()
            client.create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
            expected = dags(39, version=2)
            put(client, expected)
            result = sync.sync_once()
            assert result.changed and read_tree(dest / "current") == expected
    finally:
        srv.stop()


def test_heartbeat_and_health_check(bucket, tmp_path):
    dest = tmp_path / "dest"
    healthy, reason = agent.check_heartbeat(dest, 60)
    assert not healthy and "missing" in reason
    put(bucket, dags(2))
    new_agent(dest)[0].sync_once()
    beat = json.loads((dest / ".heartbeat").read_text())
    assert beat["objects"] == 2 and abs(beat["last_success_unix"] - time.time()) < 30
    assert agent.check_heartbeat(dest, 60)[0]
    stale, reason = agent.check_heartbeat(dest, 60, now=time.time() + 120)
    assert not stale and "limit 60s" in reason


# --- push-dags ----------------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relpath, body in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(body)


def test_push_uploads_only_changes_and_deletes_last(bucket, tmp_path):
    source = tmp_path / "dags"
    write_tree(source, {**dags(6), "sub/lib.py": "L\n", "__pycache__/x.pyc": "junk"})
    client, sent = counting_client()
    plan = push.push_dags(source, BUCKET, PREFIX, client=client)
    assert len(plan.uploads) == 7 and plan.bundle and sent["PutObject"] == 8
    keys = {o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert "dags/sub/lib.py" in keys and not any("__pycache__" in k for k in keys)
    assert f"dags/{s3.BUNDLE}" in keys

    sent.clear()
    assert push.push_dags(source, BUCKET, PREFIX, client=client) == ([], [], 7, False)
    assert sent == Counter(ListObjectsV2=1)

    (source / "dag_001.py").write_text("# edited\n")
    (source / "dag_002.py").unlink()
    sent.clear()
    order = []
    client.meta.events.register(
        "before-send.s3", lambda event_name, **_: order.append(event_name.rsplit(".", 1)[-1])
    )
    plan = push.push_dags(source, BUCKET, PREFIX, client=client)
    assert plan.uploads == ["dag_001.py"] and [o.key for o in plan.deletes] == ["dags/dag_002.py"]
    assert order == ["ListObjectsV2", "PutObject", "PutObject", "DeleteObjects"]  # file, bundle
    body = bucket.get_object(Bucket=BUCKET, Key="dags/dag_001.py")["Body"].read()
    assert body == b"# edited\n"


def test_push_refuses_to_wipe_the_prefix(bucket, tmp_path):
    put(bucket, dags(4))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(agent.ShrinkRefused, match="is --source right"):
        push.push_dags(empty, BUCKET, PREFIX)
    assert bucket.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 4


# --- the processes: CLI, container entrypoint, SIGTERM, JSON logs ---------------------------


def run_cli(server, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, **server.env(), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "airflow_gitops", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, **kwargs,
    )


def test_push_and_pull_commands(server, bucket, tmp_path):
    source = tmp_path / "dags"
    write_tree(source, dags(3))
    pushed = run_cli(server, "push-dags", "--source", str(source), "--bucket", BUCKET, "--prefix", PREFIX)
    assert pushed.returncode == 0, pushed.stderr
    assert "3 uploaded, 0 deleted, 0 unchanged" in pushed.stdout
    pulled = run_cli(server, "pull-dags", "--dest", str(tmp_path / "out"), "--bucket", BUCKET, "--prefix", PREFIX)
    assert pulled.returncode == 0, pulled.stderr
    assert read_tree(tmp_path / "out" / "current") == dags(3)


def test_bad_flags_get_one_line_errors(server, tmp_path):
    result = run_cli(server, "sync-agent", "--dest", str(tmp_path), "--bucket", BUCKET, "--interval", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "ERROR [UsageError]: --interval: 0 is not allowed; use seconds > 0"


def test_health_check_command_exit_codes(server, bucket, tmp_path):
    dest = tmp_path / "dest"
    probe = ["sync-agent", "--check-heartbeat", "--dest", str(dest), "--max-age", "60"]
    assert run_cli(server, *probe).returncode == agent.EXIT_UNHEALTHY
    put(bucket, dags(1))
    once = run_cli(server, "sync-agent", "--bucket", BUCKET, "--prefix", PREFIX, "--dest", str(dest), "--once")
    assert once.returncode == 0, once.stderr
    assert run_cli(server, *probe).returncode == 0


def test_agent_process_logs_json_and_stops_within_two_seconds_of_sigterm(server, bucket, tmp_path):
    put(bucket, dags(5))
    dest = tmp_path / "dest"
    env = {
        **os.environ, **server.env(), "PYTHONPATH": str(REPO),
        # The container configures the agent through the environment alone.
        "DAGSYNC_BUCKET": BUCKET, "DAGSYNC_PREFIX": PREFIX, "DAGSYNC_DEST": str(dest),
        "DAGSYNC_INTERVAL": "0.2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_gitops.dagsync", "--log-level", "debug"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 20
        while not (dest / ".heartbeat").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few idle cycles
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
        assert time.monotonic() - started < 2.0
        assert process.returncode == 0
    finally:
        process.kill()
    lines = process.stderr.read().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    events = [entry["event"] for entry in entries]
    assert events[0] == "started" and "published" in events and "unchanged" in events
    assert events[-2:] == ["stopping", "stopped"]
    assert all({"time", "level", "event"} <= set(entry) for entry in entries)
    assert read_tree(dest / "current") == dags(5)


def test_once_exits_nonzero_when_s3_is_unreachable(tmp_path):
    env = {
        **os.environ, **MotoServer().env(), "PYTHONPATH": str(REPO),  # nothing listens there
        "AWS_MAX_ATTEMPTS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "airflow_gitops.dagsync", "--bucket", BUCKET, "--dest",
         str(tmp_path / "dest"), "--once"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == agent.EXIT_SYNC_FAILED
    assert json.loads(result.stderr.splitlines()[-1])["event"] == "sync_failed"
    assert not (tmp_path / "dest" / "current").exists()


def test_sigterm_during_a_hung_request_still_exits_within_two_seconds(tmp_path):
    """S3 accepts the connection and never answers: the agent must not wait for the timeout."""
    import socket

    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        endpoint = "http://127.0.0.1:%d" % blackhole.getsockname()[1]
        env = {**os.environ, **MotoServer().env(), "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_gitops.dagsync", "--bucket", BUCKET,
             "--dest", str(tmp_path / "dest")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        try:
            deadline = time.monotonic() + 20
            while not (tmp_path / "dest" / "snapshots").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # the first LIST is now waiting on the silent server
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=5)
            assert time.monotonic() - started < 2.0
        finally:
            process.kill()
    assert not (tmp_path / "dest" / "current").exists()


def test_cold_start_streams_the_bundle_and_checks_every_member(bucket, tmp_path):
    source = tmp_path / "dags"
    write_tree(source, dags(40))
    push.push_dags(source, BUCKET, PREFIX)
    # Changed behind push-dags' back: the bundle is stale for these two, so they come by GET.
    put(bucket, {"dag_005.py": "# edited in S3\n", "extra.py": "E\n"})
    sync, sent = new_agent(tmp_path / "dest")
    result = sync.sync_once()
    assert sent == Counter(ListObjectsV2=1, GetObject=3)  # the bundle + 2 files
    assert (result.downloaded, result.from_bundle) == (41, 39)
    expected = {**dags(40), "dag_005.py": "# edited in S3\n", "extra.py": "E\n"}
    assert read_tree(tmp_path / "dest" / "current") == expected  # no .dagsync/ in the mirror

    plain, sent = new_agent(tmp_path / "plain", use_bundle=False)
    assert plain.sync_once().from_bundle == 0 and sent["GetObject"] == 41


def test_a_broken_bundle_only_costs_more_requests(bucket, tmp_path):
    put(bucket, dags(30))
    bucket.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{s3.BUNDLE}", Body=b"not a tar.gz")
    sync, sent = new_agent(tmp_path / "dest")
    assert sync.sync_once().from_bundle == 0
    assert sent["GetObject"] == 31 and read_tree(tmp_path / "dest" / "current") == dags(30)


def test_the_bundle_is_reproducible():
    files = {"b.py": b"B", "a/x.py": b"X"}
    assert s3.build_bundle(files) == s3.build_bundle(dict(reversed(list(files.items()))))

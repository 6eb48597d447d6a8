"""The S3 DAG sync agent and push-dags, against a moto server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
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

from repos import REPO  # the default bake

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
    """Objects written by another tool (no manifest): the agent falls back to listing."""
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


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relpath, body in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(body)


def pushed(tmp_path: Path, files: dict[str, str], **kwargs) -> push.PushPlan:
    """push-dags of exactly ``files`` (a fresh source folder each time)."""
    source = tmp_path / f"src-{time.monotonic_ns()}"
    write_tree(source, files)
    return push.push_dags(source, BUCKET, PREFIX, **kwargs)


def new_agent(dest: Path, **kwargs) -> tuple[agent.SyncAgent, Counter]:
    client, sent = counting_client()
    return agent.SyncAgent(client, BUCKET, PREFIX, dest, **kwargs), sent


def sync_fresh(dest: Path, **kwargs) -> agent.SyncResult:
    """One cycle of a new agent that releases DEST afterwards (a restarted container)."""
    with new_agent(dest, **kwargs)[0] as sync:
        return sync.sync_once()


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
        ("dags/" + "n" * 253 + ".py", None),  # 256 bytes: over NAME_MAX
        ("dags/" + "é" * 126 + ".py", "é" * 126 + ".py"),  # 255 bytes in UTF-8: allowed
        ("dags/" + "é" * 127 + ".py", None),  # 257 bytes
    ],
)
def test_key_to_path_is_safe(key, expected):
    assert s3.relpath_for("/dags/", key) == expected


def test_key_and_path_round_trip():
    assert s3.key_for("dags", "sub/a.py") == "dags/sub/a.py"
    assert s3.key_for("", "a.py") == "a.py"
    assert s3.relpath_for("", "a.py") == "a.py"


def test_client_honours_aws_endpoint_url_and_fails_fast(server):
    client = s3.make_s3_client()
    assert client.meta.endpoint_url == server.endpoint
    config = client.meta.config
    # A hung endpoint fails a cycle in about MAX_ATTEMPTS * (connect + read) seconds.
    assert (config.connect_timeout, config.read_timeout) == (s3.CONNECT_TIMEOUT, s3.READ_TIMEOUT)
    assert config.retries["total_max_attempts"] == s3.MAX_ATTEMPTS
    assert s3.MAX_ATTEMPTS * (s3.CONNECT_TIMEOUT + s3.READ_TIMEOUT) <= 30


def test_client_from_a_boto3_or_botocore_session(server):
    """Callers may inject either kind of session; without one the agent uses botocore's."""
    import botocore.session

    for session in (boto3.session.Session(), botocore.session.get_session()):
        client = s3.make_s3_client(session)
        assert client.meta.endpoint_url == server.endpoint
        assert client.meta.config.max_pool_connections == s3.DEFAULT_WORKERS


def test_own_session_looks_up_only_the_service_it_loads(server, monkeypatch):
    """The agent's own botocore session answers "is this service known?" from that service's
    folder alone, and the answers are botocore's for every service (STS included: IRSA
    credentials build an STS client from the same session)."""
    import botocore.loaders
    import botocore.session

    session = botocore.session.get_session()
    s3._check_services_on_demand(session)
    loader, plain = session.get_component("data_loader"), botocore.loaders.Loader()
    for type_name in ("service-2", "endpoint-rule-set-1"):
        known, full = (
            loader.list_available_services(type_name),
            plain.list_available_services(type_name),
        )
        assert list(known) == full and len(known) == len(full) > 300
        assert all(name in known for name in full)
        assert {"s3", "sts"} <= set(full)
        for name in ("no-such-service", "..", "s3/../s3", ""):
            assert name not in known
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path=".": listed.append(path) or real_listdir(path))
    assert s3.make_s3_client().meta.service_model.service_name == "s3"
    walked = len(listed)
    listed.clear()
    botocore.session.get_session().create_client("s3", region_name="eu-west-1")
    assert walked < 10 < 300 < len(listed)  # botocore alone walks every service folder
    sts = session.create_client("sts", region_name="eu-west-1")
    assert sts.meta.service_model.service_name == "sts"


def test_agent_process_never_imports_boto3(server, bucket, tmp_path):
    """The container entrypoint syncs with botocore alone (boto3 and s3transfer cost start-up
    time and are not installed in the image), and leaves the garbage collector on, with what
    start-up made (botocore's models) frozen out of its walks."""
    pushed(tmp_path, dags(2))
    script = (
        "import gc, sys\n"
        "from airflow_gitops.dagsync.agent import main\n"
        "code = main(sys.argv[1:])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 's3transfer'}))\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 10_000)\n"
        "raise SystemExit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--bucket", BUCKET, "--prefix", PREFIX, "--once"]
        + ["--dest", str(tmp_path / "dest")],
        capture_output=True,
        text=True,
        env={**os.environ, **server.env(), "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True True"]
    assert sorted(read_tree(tmp_path / "dest" / "current")) == sorted(dags(2))


def test_etag_is_an_md5_only_when_the_object_says_so():
    md5 = "5d41402abc4b2a76b9719d911017c592"
    assert s3.etag_is_md5({"ETag": f'"{md5}"'})
    assert s3.etag_is_md5({"ETag": f'"{md5}"', "ServerSideEncryption": "AES256"})
    assert not s3.etag_is_md5({"ETag": f'"{md5}"', "ServerSideEncryption": "aws:kms"})
    assert not s3.etag_is_md5({"ETag": f'"{md5}"', "ServerSideEncryption": "aws:kms:dsse"})
    assert not s3.etag_is_md5({"ETag": f'"{md5}"', "SSECustomerAlgorithm": "AES256"})
    assert not s3.etag_is_md5({"ETag": f'"{md5}-3"'})


# --- push-dags and the manifest: one request per idle cycle --------------------------------


def test_push_writes_files_packs_then_the_manifest_last(bucket, tmp_path):
    source = tmp_path / "dags"
    write_tree(source, {**dags(6), "sub/lib.py": "L\n", "__pycache__/x.pyc": "junk"})
    (source / "big.bin").write_bytes(b"B" * (s3.PACK_MAX_FILE_BYTES + 1))
    client, _ = counting_client()
    order: list[str] = []
    client.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: order.append(params["Key"])
    )
    plan = push.push_dags(source, BUCKET, PREFIX, client=client)
    assert len(plan.uploads) == 8 and plan.generation and order[-1] == f"dags/{s3.MANIFEST_KEY}"
    assert set(order[:8]) == {f"dags/{p}" for p in plan.uploads}  # files first, then packs
    assert all(key.startswith(f"dags/{s3.PACKS_DIR}/") for key in order[8:-1])
    body = bucket.get_object(Bucket=BUCKET, Key=f"dags/{s3.MANIFEST_KEY}")["Body"].read()
    manifest = s3.parse_manifest(body, "x")
    assert set(manifest.files) == {*dags(6), "sub/lib.py", "big.bin"}
    assert manifest.files["big.bin"].pack is None  # large files are kept out of the packs
    assert manifest.files["sub/lib.py"].pack is not None
    # Each file carries its SHA-256 as S3's additional checksum, equal to the manifest's.
    head = bucket.head_object(Bucket=BUCKET, Key="dags/sub/lib.py", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == manifest.files["sub/lib.py"].sha256
    keys = {o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert not any("__pycache__" in k for k in keys)


def test_a_second_push_of_the_same_files_is_one_get(bucket, tmp_path):
    source = tmp_path / "dags"
    write_tree(source, dags(30))
    push.push_dags(source, BUCKET, PREFIX)
    client, sent = counting_client()
    plan = push.push_dags(source, BUCKET, PREFIX, client=client)
    assert (plan.uploads, plan.deletes, plan.unchanged, plan.generation) == ([], [], 30, None)
    assert sent == Counter(GetObject=1)


def test_a_one_line_push_uploads_one_file_one_pack_and_the_manifest(bucket, tmp_path):
    source = tmp_path / "dags"
    write_tree(source, dags(200))
    push.push_dags(source, BUCKET, PREFIX)
    (source / "dag_007.py").write_text("# one line changed\n")
    (source / "dag_008.py").unlink()
    client, sent = counting_client()
    order: list[str] = []
    client.meta.events.register(
        "before-send.s3", lambda event_name, **_: order.append(event_name.rsplit(".", 1)[-1])
    )
    plan = push.push_dags(source, BUCKET, PREFIX, client=client)
    assert plan.uploads == ["dag_007.py"]
    assert "dags/dag_008.py" in plan.deletes and len(plan.packs) <= 2  # 007's and 008's packs
    assert order[0] == "GetObject" and order[-1] == "DeleteObjects"
    assert order[-2] == "PutObject"  # the manifest, after the file and the packs
    assert sent == Counter(GetObject=1, PutObject=2 + len(plan.packs), DeleteObjects=1)


def test_push_without_read_access_to_the_manifest_uploads_everything(bucket, tmp_path, capsys):
    """A deploy role without s3:GetObject on the manifest (moto does not enforce IAM, so the
    AccessDenied is raised in the client): still a correct, complete push, and a warning."""
    from botocore.exceptions import ClientError

    source = tmp_path / "dags"
    write_tree(source, dags(3))
    push.push_dags(source, BUCKET, PREFIX)
    client, _ = counting_client()
    real = client.get_object

    def denied(**kwargs):
        if kwargs["Key"].endswith(s3.MANIFEST_KEY):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "GetObject")
        return real(**kwargs)

    client.get_object = denied
    plan = push.push_dags(source, BUCKET, PREFIX, client=client)
    assert len(plan.uploads) == 3 and plan.generation
    assert "Grant s3:GetObject" in capsys.readouterr().err
    assert set(read_manifest(bucket).files) == set(dags(3))


def test_push_refuses_to_wipe_the_prefix(bucket, tmp_path):
    pushed(tmp_path, dags(4))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(agent.ShrinkRefused, match="is --source right"):
        push.push_dags(empty, BUCKET, PREFIX)
    assert len(read_manifest(bucket).files) == 4


def read_manifest(client) -> s3.Generation:
    response = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{s3.MANIFEST_KEY}")
    return s3.parse_manifest(response["Body"].read(), response["ETag"].strip('"'))


def test_idle_cycle_is_one_conditional_get_whatever_the_number_of_files(bucket, tmp_path):
    pushed(tmp_path, dags(1200))  # more than one LIST page
    sync, sent = new_agent(tmp_path / "dest")
    first = sync.sync_once()
    assert first.changed and first.objects == 1200
    sent.clear()
    again = sync.sync_once()
    assert sent == Counter(GetObject=1)  # If-None-Match -> 304 Not Modified
    assert not again.changed and again.snapshot == first.snapshot
    assert os.listdir(tmp_path / "dest" / "snapshots") == [first.snapshot]


def test_a_one_file_change_is_the_manifest_get_plus_one_object_get(bucket, tmp_path):
    files = dags(50)
    pushed(tmp_path, files)
    sync, sent = new_agent(tmp_path / "dest")
    first = sync.sync_once()
    pushed(tmp_path, {**files, "dag_003.py": "# changed\n"})
    sent.clear()
    result = sync.sync_once()
    assert sent == Counter(GetObject=2)
    assert (result.downloaded, result.linked, result.deleted) == (1, 49, 0)
    current = tmp_path / "dest" / "current"
    assert (current / "dag_003.py").read_text() == "# changed\n"
    # Unchanged files are hard links into the previous snapshot, which is kept for readers.
    previous = tmp_path / "dest" / "snapshots" / first.snapshot
    assert (current / "dag_000.py").stat().st_ino == (previous / "dag_000.py").stat().st_ino
    assert (previous / "dag_003.py").read_text() == "# dag 3 version 1\n"


def test_a_restarted_agent_resumes_with_one_request(bucket, tmp_path):
    pushed(tmp_path, dags(10))
    sync_fresh(tmp_path / "dest")
    with new_agent(tmp_path / "dest")[0] as restarted:
        restarted.client, sent = counting_client()
        assert not restarted.sync_once().changed
    assert sent == Counter(GetObject=1)


def test_cold_start_streams_packs_and_checks_every_member(bucket, tmp_path):
    files = {**dags(60), "sub/big.bin": "x" * (s3.PACK_MAX_FILE_BYTES + 10)}
    pushed(tmp_path, files)
    sync, sent = new_agent(tmp_path / "dest")
    result = sync.sync_once()
    manifest = read_manifest(bucket)
    # The manifest, the packs holding the 60 small files, and the large file on its own.
    assert sent == Counter(GetObject=1 + len(manifest.packs) + 1)
    assert (result.downloaded, result.from_bundle) == (61, 60)
    assert read_tree(tmp_path / "dest" / "current") == files  # no .dagsync/ in the mirror
    sync.close()

    plain, sent = new_agent(tmp_path / "plain", use_bundle=False)
    assert plain.sync_once().from_bundle == 0 and sent["GetObject"] == 62


def test_a_broken_pack_only_costs_more_requests(bucket, tmp_path):
    pushed(tmp_path, dags(40))
    for pack in read_manifest(bucket).packs:
        bucket.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{pack.key}", Body=b"not a gzip stream")
    sync, _ = new_agent(tmp_path / "dest")
    assert sync.sync_once().from_bundle == 0
    assert read_tree(tmp_path / "dest" / "current") == dags(40)


def test_the_packs_are_reproducible(tmp_path):
    import io

    write_tree(tmp_path, {"b.py": "B", "a/x.py": "X"})
    files = [("b.py", tmp_path / "b.py"), ("a/x.py", tmp_path / "a/x.py")]
    first, second = io.BytesIO(), io.BytesIO()
    s3.write_pack(files, first)
    s3.write_pack(list(reversed(files)), second)
    assert first.getvalue() == second.getvalue()


def test_a_pack_is_cut_into_its_members_streaming(tmp_path):
    import io

    files = {"a.py": b"A" * 5000, "b/empty.py": b"", "c.py": b"C" * 70_000, "z.py": b""}
    for relpath, data in files.items():
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(data)
    packed = io.BytesIO()
    s3.write_pack([(p, tmp_path / p) for p in files], packed)
    raw = packed.getvalue()
    members = [(p, len(d)) for p, d in files.items()]
    out = tmp_path / "out"
    out.mkdir()

    def open_member(relpath):  # all but c.py
        return None if relpath == "c.py" else open(out / relpath.replace("/", "_"), "wb")

    chunks = [raw[i : i + 1000] for i in range(0, len(raw), 1000)]  # many small reads
    got = {p: (size, sha) for p, size, sha in s3.read_pack(chunks, members, open_member)}
    assert set(got) == {"a.py", "b/empty.py", "z.py"}
    assert got["a.py"] == (5000, s3.file_sha256(tmp_path / "a.py"))
    assert (out / "a.py").read_bytes() == files["a.py"] and (out / "z.py").read_bytes() == b""
    with pytest.raises(ValueError, match="shorter"):
        list(s3.read_pack([raw[: len(raw) // 2]], members, lambda _: None))
    with pytest.raises(ValueError, match="longer"):
        list(s3.read_pack([raw], members[:1], lambda _: None))


# --- whole pushes only --------------------------------------------------------------------


def test_an_agent_during_a_push_publishes_one_complete_generation(bucket, tmp_path):
    """A cold agent starts while push-dags replaces every file: it never mixes versions."""
    old, new = dags(60, version=1), dags(60, version=2)
    pushed(tmp_path, old)
    source = tmp_path / "new"
    write_tree(source, new)
    client = s3.make_s3_client()
    seen: list = []
    puts = 0

    def mid_push(params, **_):
        nonlocal puts
        puts += 1
        if puts in (20, 40):  # a third and two thirds of the files replaced
            for use_bundle in (True, False):
                dest = tmp_path / f"cold-{puts}-{use_bundle}"
                try:
                    sync_fresh(dest, use_bundle=use_bundle)
                    seen.append(read_tree(dest / "current"))
                except agent.GenerationChanged:
                    seen.append("waited")
                    assert not (dest / "current").exists()

    client.meta.events.register("before-parameter-build.s3.PutObject", mid_push)
    push.push_dags(source, BUCKET, PREFIX, client=client, workers=1)
    # From the old generation's packs: the old generation whole. One GET per file: objects no
    # longer match the manifest, so the agent waits for the new one.
    assert seen == [old, "waited", old, "waited"]
    assert sync_fresh(tmp_path / "after").changed
    assert read_tree(tmp_path / "after" / "current") == new


def test_a_file_that_becomes_a_folder_is_published_as_the_new_push_says(bucket, tmp_path):
    pushed(tmp_path, {"a": "I was a file\n", "b.py": "B\n"})
    dest = tmp_path / "dest"
    sync_fresh(dest)
    pushed(tmp_path, {"a/inner.py": "now a folder\n", "b.py": "B\n"}, max_delete_fraction=1)
    # As during that push (deletes run last): the old file `a` is still in the bucket.
    bucket.put_object(Bucket=BUCKET, Key="dags/a", Body=b"I was a file\n")
    assert sync_fresh(dest).changed
    assert read_tree(dest / "current") == {"a/inner.py": "now a folder\n", "b.py": "B\n"}


def test_a_file_changed_behind_the_manifest_is_never_published(bucket, tmp_path):
    pushed(tmp_path, dags(5))
    bucket.put_object(Bucket=BUCKET, Key="dags/dag_002.py", Body=b"tampered\n")
    with pytest.raises(agent.GenerationChanged, match="dag_002.py"):
        sync_fresh(tmp_path / "dest")
    assert not (tmp_path / "dest" / "current").exists()


# --- integrity with every bucket encryption ------------------------------------------------


def kms_like(client) -> None:
    """Make S3's answers look like an SSE-KMS bucket's: ETags that are not MD5s.

    moto stores SSE-KMS objects but still answers with MD5 ETags; real S3 does not. This
    rewrites the ETag (stable per object version, like S3's) in GET/HEAD/PUT answers and
    listings, and adds the encryption header.
    """
    import hashlib

    def fake(etag: str) -> str:
        return '"' + hashlib.sha256(etag.encode()).hexdigest()[:32] + '"'

    def rewrite(response_dict, **_):
        headers = response_dict["headers"]
        if "etag" in headers:
            headers["etag"] = fake(headers["etag"])
            headers["x-amz-server-side-encryption"] = "aws:kms"
        body = response_dict.get("body")
        if isinstance(body, bytes) and body.startswith(b"<?xml") and b"<ETag>" in body:
            import re

            response_dict["body"] = re.sub(
                rb"<ETag>([^<]*)</ETag>",
                lambda m: b"<ETag>" + fake(m.group(1).decode()).encode() + b"</ETag>",
                body,
            )

    client.meta.events.register_first("before-parse.s3", rewrite)


def test_sync_and_push_work_when_etags_are_not_md5s(bucket, tmp_path):
    bucket.put_bucket_encryption(
        Bucket=BUCKET,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
        },
    )
    source = tmp_path / "dags"
    write_tree(source, dags(25))
    client, sent = counting_client()
    kms_like(client)
    push.push_dags(source, BUCKET, PREFIX, client=client)
    sent.clear()
    again = push.push_dags(source, BUCKET, PREFIX, client=client)
    assert again.uploads == [] and sent == Counter(GetObject=1)  # nothing re-uploaded

    sync, _ = new_agent(tmp_path / "dest", use_bundle=False)
    kms_like(sync.client)
    assert sync.sync_once().downloaded == 25
    assert read_tree(tmp_path / "dest" / "current") == dags(25)
    sync.close()
    # A prefix without a manifest (other tools): sizes and S3's own checksums, no MD5 test.
    put(bucket, dags(3), prefix="other")
    plain, _ = counting_client()
    kms_like(plain)
    with agent.SyncAgent(plain, BUCKET, "other", tmp_path / "other") as other:
        assert other.sync_once().downloaded == 3
    assert read_tree(tmp_path / "other" / "current") == dags(3)


# --- objects written by other tools: the listing fallback ---------------------------------


def test_without_a_manifest_the_agent_lists(bucket, tmp_path):
    files = {
        **dags(5),
        "sub/helper.py": "X = 1\n",
        ".airflowignore": "tmp_.*\n",
        "odd name+é&<x>.py": "Y = 2\n",  # URL-encoded in the listing, XML-escaped: both undone
    }
    put(bucket, files)
    sync, sent = new_agent(tmp_path / "dest")
    result = sync.sync_once()
    current = tmp_path / "dest" / "current"
    assert current.is_symlink() and not os.path.isabs(os.readlink(current))
    assert read_tree(current) == files
    assert result.changed and result.downloaded == len(files)
    assert sent == Counter(ListObjectsV2=1, GetObject=1 + len(files))  # the 404 manifest GET
    sent.clear()
    assert not sync.sync_once().changed
    assert sent == Counter(GetObject=1, ListObjectsV2=1)


def test_bad_keys_are_skipped_named_once_and_the_rest_published(bucket, tmp_path, caplog):
    put(bucket, {"ok.py": "ok\n"})
    bad = ["dags/../evil.py", "dags/a//b.py", "dags/" + "n" * 300 + ".py"]
    for key in [*bad, "dags/sub/", f"dags/{agent.MANIFEST}"]:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    sync, _ = new_agent(tmp_path / "dest")
    with caplog.at_level(logging.WARNING, logger="dagsync"):
        sync.sync_once()
        put(bucket, {"later.py": "L\n"})  # unrelated changes keep being published
        assert sync.sync_once().changed
    assert read_tree(tmp_path / "dest" / "current") == {"ok.py": "ok\n", "later.py": "L\n"}
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "dest" / "evil.py").exists()
    named = [r.fields["key"] for r in caplog.records if r.getMessage() == "skipped_key"]
    assert sorted(named) == sorted(bad)  # each once, over two cycles


@pytest.mark.parametrize("newer", ["folder", "file"])
def test_a_file_folder_clash_keeps_the_newer_side(bucket, tmp_path, newer):
    put(bucket, {"keep.py": "K\n"})
    sides = [("a", "file\n"), ("a/b.py", "in folder\n")]
    if newer == "file":
        sides.reverse()
    for relpath, body in sides:
        put(bucket, {relpath: body})
        time.sleep(1.1)  # LastModified has one-second resolution
    sync, _ = new_agent(tmp_path / "dest")
    result = sync.sync_once()
    tree = read_tree(tmp_path / "dest" / "current")
    assert tree == {"keep.py": "K\n", **dict(sides[-1:])} and result.skipped_keys == 1


def test_deleted_objects_disappear_and_old_snapshots_are_removed(bucket, tmp_path):
    put(bucket, dags(10))
    sync, _ = new_agent(tmp_path / "dest")
    snapshots = [sync.sync_once().snapshot]
    for key in ["dag_000.py", "dag_001.py", "dag_002.py"]:
        bucket.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")
        result = sync.sync_once()
        assert result.deleted == 1
        snapshots.append(result.snapshot)
    assert set(read_tree(tmp_path / "dest" / "current")) == set(dags(10)) - {
        "dag_000.py",
        "dag_001.py",
        "dag_002.py",
    }
    # Only the published snapshot and the one before it remain.
    assert sorted(os.listdir(tmp_path / "dest" / "snapshots")) == sorted(snapshots[-2:])


def test_the_previous_snapshot_survives_a_restart_until_the_next_swap(bucket, tmp_path):
    pushed(tmp_path, dags(5))
    dest = tmp_path / "dest"
    first = sync_fresh(dest).snapshot
    pushed(tmp_path, dags(5, version=2))
    second = sync_fresh(dest).snapshot
    (dest / "snapshots" / f"{agent.BUILDING}leftover").mkdir()  # a killed build
    with new_agent(dest)[0] as restarted:
        assert sorted(os.listdir(dest / "snapshots")) == sorted([first, second])
        pushed(tmp_path, dags(5, version=3))
        third = restarted.sync_once().snapshot
    assert sorted(os.listdir(dest / "snapshots")) == sorted([second, third])


# --- guards -------------------------------------------------------------------------------


def test_shrink_guard_refuses_a_change_that_lost_most_files(bucket, tmp_path):
    put(bucket, dags(10))
    dest = tmp_path / "dest"
    before = sync_fresh(dest).snapshot
    for i in range(6):  # 6 of 10 would disappear: more than 50%
        bucket.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/dag_{i:03d}.py")
    with pytest.raises(agent.ShrinkRefused, match="would delete 6 of 10 files"):
        sync_fresh(dest)
    assert os.readlink(dest / "current") == f"snapshots/{before}"
    assert len(read_tree(dest / "current")) == 10
    # An operator who means it raises the limit.
    assert sync_fresh(dest, max_delete_fraction=1.0).deleted == 6
    assert len(read_tree(dest / "current")) == 4


def test_an_empty_listing_never_empties_the_folder(bucket, tmp_path):
    put(bucket, dags(3))
    dest = tmp_path / "dest"
    sync_fresh(dest)
    client = counting_client()[0]
    with (
        agent.SyncAgent(client, BUCKET, "wrong-prefix", dest) as misconfigured,
        pytest.raises(agent.ShrinkRefused),
    ):
        misconfigured.sync_once()
    assert len(read_tree(dest / "current")) == 3


@pytest.mark.parametrize(
    "objects, problem",
    [
        ({}, "holds no DAG files"),
        ({"notes.txt": "n\n", "data.csv": "1\n"}, "not one .py file"),
    ],
)
def test_a_cold_start_on_a_prefix_that_looks_wrong_is_refused(bucket, tmp_path, objects, problem):
    put(bucket, objects)
    dest = tmp_path / "dest"
    with pytest.raises(agent.ColdStartRefused, match=problem):
        sync_fresh(dest)
    assert not (dest / "current").exists()
    assert sync_fresh(dest, allow_empty=True).changed  # the documented override
    assert read_tree(dest / "current") == objects


def test_a_cold_start_on_an_empty_push_is_refused(bucket, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    push.push_dags(empty, BUCKET, PREFIX)  # a manifest with no files
    with pytest.raises(agent.ColdStartRefused, match="holds no DAG files"):
        sync_fresh(tmp_path / "dest")


def test_shrink_guard_boundary():
    assert not s3.deletion_refused(10, 5, 0.5)
    assert s3.deletion_refused(10, 6, 0.5)
    assert not s3.deletion_refused(0, 0, 0.5)
    assert not s3.deletion_refused(10, 10, 1.0)


def test_one_writer_per_destination(bucket, tmp_path):
    pushed(tmp_path, dags(2))
    dest = tmp_path / "dest"
    with new_agent(dest)[0], pytest.raises(agent.DestLocked, match="another sync agent"):
        new_agent(dest)
    assert sync_fresh(dest).changed  # released with the first agent


def test_auth_or_bucket_errors_change_nothing(bucket, tmp_path):
    pushed(tmp_path, dags(4))
    dest = tmp_path / "dest"
    sync_fresh(dest)
    client = counting_client()[0]
    with (
        agent.SyncAgent(client, "no-such-bucket-here", PREFIX, dest) as wrong,
        pytest.raises(agent.SyncFailed, match="NoSuchBucket"),
    ):
        wrong.sync_once()
    assert len(read_tree(dest / "current")) == 4


def test_a_full_disk_fails_the_cycle_cleanly(bucket, tmp_path, monkeypatch, caplog):
    pushed(tmp_path, dags(3))
    dest = tmp_path / "dest"
    before = sync_fresh(dest).snapshot
    pushed(tmp_path, dags(3, version=2))
    real = s3.stream_to_file

    def full(chunks, target, *args):
        real(chunks, target, *args)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(s3, "stream_to_file", full)
    with pytest.raises(agent.SyncFailed, match="No space left"):
        sync_fresh(dest)
    assert os.listdir(dest / "snapshots") == [before]  # the partial build is gone
    monkeypatch.setattr(s3, "stream_to_file", real)

    # The heartbeat itself on a full disk: logged on one line, the cycle still counts.
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with new_agent(dest)[0] as sync, caplog.at_level(logging.ERROR, logger="dagsync"):
        assert sync.sync_once().changed
        monkeypatch.setattr("builtins.open", no_space)
        try:
            result = sync.sync_once()  # 304: only the heartbeat writes
        finally:
            monkeypatch.undo()
    assert not result.changed
    failed = [r for r in caplog.records if r.getMessage() == "heartbeat_failed"]
    assert failed and "No space left" in failed[0].fields["reason"]
    assert not (dest / ".heartbeat.tmp").exists()


def test_s3_outage_mid_sync_keeps_the_published_snapshot_and_recovers(tmp_path):
    """The server dies after a few GETs: nothing deleted, nothing half-written is visible."""
    srv = MotoServer().start()
    try:
        with aws_env(srv):
            client = boto3.client("s3")
            client.create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
            pushed(tmp_path, dags(40))
            dest = tmp_path / "dest"
            sync, _ = new_agent(dest, workers=4, use_bundle=False)
            before = sync.sync_once().snapshot
            pushed(tmp_path, dags(39, version=2))

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

            with pytest.raises(agent.SyncFailed):  # still down: nothing changes
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
            pushed(tmp_path, expected)
            result = sync.sync_once()
            assert result.changed and read_tree(dest / "current") == expected
            sync.close()
    finally:
        srv.stop()


def test_heartbeat_and_health_check(bucket, tmp_path):
    dest = tmp_path / "dest"
    healthy, reason = agent.check_heartbeat(dest, 60)
    assert not healthy and "missing" in reason
    pushed(tmp_path, dags(2))
    sync_fresh(dest)
    beat = json.loads((dest / ".heartbeat").read_text())
    assert beat["objects"] == 2 and abs(beat["last_success_unix"] - time.time()) < 30
    assert agent.check_heartbeat(dest, 60)[0]
    stale, reason = agent.check_heartbeat(dest, 60, now=time.time() + 120)
    assert not stale and "limit 60s" in reason


# --- the processes: CLI, container entrypoint, SIGTERM, JSON logs ---------------------------


def run_cli(server, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, **server.env(), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "airflow_gitops", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        **kwargs,
    )


def test_push_and_pull_commands(server, bucket, tmp_path):
    source = tmp_path / "dags"
    write_tree(source, dags(3))
    pushed = run_cli(
        server, "push-dags", "--source", str(source), "--bucket", BUCKET, "--prefix", PREFIX
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "3 uploaded, 0 deleted, 0 unchanged" in pushed.stdout
    pulled = run_cli(
        server, "pull-dags", "--dest", str(tmp_path / "out"), "--bucket", BUCKET, "--prefix", PREFIX
    )
    assert pulled.returncode == 0, pulled.stderr
    assert read_tree(tmp_path / "out" / "current") == dags(3)


def test_bad_flags_get_one_line_errors(server, tmp_path):
    result = run_cli(
        server, "sync-agent", "--dest", str(tmp_path), "--bucket", BUCKET, "--interval", "0"
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "ERROR [UsageError]: --interval: '0' is not allowed; use seconds > 0"
    )


def test_health_check_command_exit_codes(server, bucket, tmp_path):
    dest = tmp_path / "dest"
    probe = ["sync-agent", "--check-heartbeat", "--dest", str(dest), "--max-age", "60"]
    assert run_cli(server, *probe).returncode == agent.EXIT_UNHEALTHY
    put(bucket, dags(1))
    once = run_cli(
        server, "sync-agent", "--bucket", BUCKET, "--prefix", PREFIX, "--dest", str(dest), "--once"
    )
    assert once.returncode == 0, once.stderr
    assert run_cli(server, *probe).returncode == 0


def test_agent_process_logs_json_and_stops_within_two_seconds_of_sigterm(server, bucket, tmp_path):
    put(bucket, dags(5))
    dest = tmp_path / "dest"
    env = {
        **os.environ,
        **server.env(),
        "PYTHONPATH": str(REPO),
        # The container configures the agent through the environment alone.
        "DAGSYNC_BUCKET": BUCKET,
        "DAGSYNC_PREFIX": PREFIX,
        "DAGSYNC_DEST": str(dest),
        "DAGSYNC_INTERVAL": "0.2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_gitops.dagsync", "--log-level", "debug"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 20
        while not (dest / ".heartbeat").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few idle cycles
        second = run_cli(
            server,
            "sync-agent",
            "--bucket",
            BUCKET,
            "--prefix",
            PREFIX,
            "--dest",
            str(dest),
            "--once",
        )
        assert second.returncode == agent.EXIT_LOCKED, second.stderr
        assert "another sync agent is writing it" in second.stderr
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
    assert events[0] == "started" and "published" in events and "unchanged" in events, events
    # Nothing starts after the signal: at most the line of the cycle in flight (the handler
    # logs "stopping" when the signal lands, which may be just before that line is written).
    after = events[events.index("stopping") + 1 :]
    assert after[-1] == "stopped" and len(after) <= 2, events
    assert all({"time", "level", "event"} <= set(entry) for entry in entries)
    assert read_tree(dest / "current") == dags(5)


def test_once_exits_nonzero_when_s3_is_unreachable(tmp_path):
    env = {
        **os.environ,
        **MotoServer().env(),
        "PYTHONPATH": str(REPO),  # nothing listens there
        "AWS_MAX_ATTEMPTS": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_gitops.dagsync",
            "--bucket",
            BUCKET,
            "--dest",
            str(tmp_path / "dest"),
            "--once",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == agent.EXIT_SYNC_FAILED
    assert json.loads(result.stderr.splitlines()[-1])["event"] == "sync_failed"
    assert not (tmp_path / "dest" / "current").exists()


@pytest.fixture
def blackhole():
    """An endpoint that accepts connections and never answers (a hung S3)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("once, code", [(False, 0), (True, 128 + signal.SIGTERM)])
def test_sigterm_during_a_hung_request_still_exits_within_two_seconds(
    tmp_path, blackhole, once, code
):
    """S3 never answers: the agent must not wait for the timeout. An interrupted --once has
    not synced, so it must not exit 0 (an init container would count as done)."""
    env = {
        **os.environ,
        **MotoServer().env(),
        "AWS_ENDPOINT_URL": blackhole,
        "PYTHONPATH": str(REPO),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_gitops.dagsync",
            "--bucket",
            BUCKET,
            "--dest",
            str(tmp_path / "dest"),
            *(["--once"] if once else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "dest" / "snapshots").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the first request is now waiting on the silent server
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
        assert time.monotonic() - started < 2.0
        assert process.returncode == code
    finally:
        process.kill()
    assert not (tmp_path / "dest" / "current").exists()


def test_a_hung_endpoint_fails_a_once_sync_in_seconds(tmp_path, blackhole):
    env = {
        **os.environ,
        **MotoServer().env(),
        "AWS_ENDPOINT_URL": blackhole,
        "PYTHONPATH": str(REPO),
    }
    # Bounded by MAX_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT), about 22 s (it was 123 s).
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_gitops.dagsync",
            "--bucket",
            BUCKET,
            "--dest",
            str(tmp_path / "dest"),
            "--once",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=45,
    )
    assert result.returncode == agent.EXIT_SYNC_FAILED
    assert json.loads(result.stderr.splitlines()[-1])["event"] == "sync_failed"


def test_once_reports_a_refusal_as_refused_with_exit_3(server, bucket, tmp_path):
    result = run_cli(
        server,
        "sync-agent",
        "--bucket",
        BUCKET,
        "--prefix",
        "empty",
        "--dest",
        str(tmp_path / "dest"),
        "--once",
    )
    assert result.returncode == agent.EXIT_GUARD
    last = json.loads(result.stderr.splitlines()[-1])
    assert last["event"] == "refused" and "--allow-empty" in last["reason"]
    allowed = run_cli(
        server,
        "sync-agent",
        "--bucket",
        BUCKET,
        "--prefix",
        "empty",
        "--dest",
        str(tmp_path / "dest"),
        "--once",
        "--allow-empty",
    )
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("DAGSYNC_INTERVAL", "abc", "DAGSYNC_INTERVAL: 'abc' is not allowed; use seconds > 0"),
        ("DAGSYNC_INTERVAL", "nan", "DAGSYNC_INTERVAL: 'nan' is not allowed; use seconds > 0"),
        ("DAGSYNC_WORKERS", "0", "DAGSYNC_WORKERS: '0' is not allowed; use 1..64"),
        (
            "DAGSYNC_ONCE",
            "maybe",
            "DAGSYNC_ONCE: 'maybe' is not allowed; use 1/true/yes or 0/false/no",
        ),
    ],
)
def test_bad_environment_values_get_one_line_errors(server, tmp_path, variable, value, message):
    env = {**os.environ, **server.env(), "PYTHONPATH": str(REPO), variable: value}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_gitops.dagsync",
            "--bucket",
            BUCKET,
            "--dest",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == agent.EXIT_USAGE
    assert result.stderr.strip() == f"ERROR [UsageError]: {message}"


def test_dagsync_once_yes_means_once(server, bucket, tmp_path):
    pushed(tmp_path, dags(2))
    env = {**os.environ, **server.env(), "PYTHONPATH": str(REPO), "DAGSYNC_ONCE": "yes"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_gitops.dagsync",
            "--bucket",
            BUCKET,
            "--prefix",
            PREFIX,
            "--dest",
            str(tmp_path / "dest"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,  # a loop would hit the timeout
    )
    assert result.returncode == 0, result.stderr
    assert read_tree(tmp_path / "dest" / "current") == dags(2)


def test_dry_run_says_what_would_happen(server, bucket, tmp_path):
    source = tmp_path / "dags"
    write_tree(source, dags(3))
    result = run_cli(
        server,
        "push-dags",
        "--source",
        str(source),
        "--bucket",
        BUCKET,
        "--prefix",
        PREFIX,
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    assert "would upload dag_000.py" in result.stdout
    assert "3 to upload, 0 to delete, 0 unchanged (dry run: nothing changed)" in result.stdout
    assert "would uploaded" not in result.stdout
    assert "Contents" not in bucket.list_objects_v2(Bucket=BUCKET)

"""`push-dags`: upload the DAG folder to s3://bucket/prefix, changing only what changed.

Order matters to the sync agents reading the prefix: new and changed files are uploaded first
(each PUT replaces an object atomically), deletions come last, so no DAG disappears before its
replacement exists. A file is unchanged when its size and MD5 match the object's size and ETag
(single-part uploads, which this command makes, have the MD5 as ETag; with SSE-KMS they do not,
and every file is uploaded again, which is correct, only slower).

After the files, and before the deletions, the bundle PREFIX/.dagsync/bundle.tar.gz (every file,
reproducible bytes) is uploaded when it changed: agents that start cold fetch it with one GET.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
from pathlib import Path
from typing import Any, NamedTuple

from airflow_gitops.dagsync import s3
from airflow_gitops.dagsync.agent import ShrinkRefused, SyncFailed
from airflow_gitops.errors import UsageError

SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")


class PushPlan(NamedTuple):
    uploads: list[str]  # relpaths, new or changed
    deletes: list[s3.RemoteObject]
    unchanged: int
    bundle: bool = False  # the bundle is (to be) uploaded


def local_files(source: Path) -> dict[str, Path]:
    """relpath (POSIX) -> file, for every file under ``source`` that belongs in S3."""
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        if Path(root) == source and s3.RESERVED_DIR in dirs:
            dirs.remove(s3.RESERVED_DIR)  # ours, in the bucket; never user files
        for name in names:
            if name.endswith(SKIP_SUFFIXES):
                continue
            path = Path(root) / name
            relpath = path.relative_to(source).as_posix()
            if s3.relpath_for("", relpath) is not None and path.is_file():
                files[relpath] = path
    return files


def plan_push(files: dict[str, Path], remote: dict[str, s3.RemoteObject]) -> PushPlan:
    uploads, unchanged = [], 0
    for relpath, path in sorted(files.items()):
        obj = remote.get(relpath)
        size = path.stat().st_size
        # MD5 only when the size already matches: a changed size settles it for free.
        if obj is not None and obj.size == size and s3.same_content(obj.etag, obj.size, s3.file_md5(path), size):
            unchanged += 1
        else:
            uploads.append(relpath)
    deletes = [obj for relpath, obj in sorted(remote.items()) if relpath not in files]
    return PushPlan(uploads, deletes, unchanged)


def push_dags(
    source: Path | str,
    bucket: str,
    prefix: str,
    session: Any = None,
    workers: int = s3.DEFAULT_WORKERS,
    max_delete_fraction: float = s3.DEFAULT_MAX_DELETE_FRACTION,
    dry_run: bool = False,
    client: Any = None,
    bundle: bool = True,
) -> PushPlan:
    """Make s3://bucket/prefix equal to ``source``; returns what was (or would be) done."""
    from botocore.exceptions import BotoCoreError, ClientError

    source = Path(source)
    if not source.is_dir():
        raise UsageError(f"--source {source}: not a folder")
    client = client or s3.make_s3_client(session, workers)
    prefix = s3.normalize_prefix(prefix)
    where = f"s3://{bucket}/{prefix}"
    try:
        remote, _ = s3.list_objects(client, bucket, prefix)
        remote_bundle = remote.get(s3.BUNDLE)
        remote = {path: obj for path, obj in remote.items() if not s3.is_reserved(path)}
        files = local_files(source)
        plan = plan_push(files, remote)
        bundle_bytes = b""
        if bundle:
            bundle_bytes = s3.build_bundle({path: files[path].read_bytes() for path in files})
            stale = remote_bundle is None or not s3.same_content(
                remote_bundle.etag, remote_bundle.size, s3.md5_hex(bundle_bytes), len(bundle_bytes)
            )
            plan = plan._replace(bundle=stale)
        if s3.deletion_refused(len(remote), len(plan.deletes), max_delete_fraction):
            raise ShrinkRefused(
                f"{where}: pushing {source} would delete {len(plan.deletes)} of {len(remote)} "
                f"objects (limit {max_delete_fraction:.0%}); is --source right? If the deletion "
                "is intended, raise --max-delete-fraction."
            )
        if dry_run:
            return plan

        def upload(relpath: str, data: bytes | None = None) -> None:
            data = files[relpath].read_bytes() if data is None else data
            client.put_object(
                Bucket=bucket,
                Key=s3.key_for(prefix, relpath),
                Body=data,
                ContentMD5=base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
            )

        s3.run_parallel(upload, plan.uploads, workers)
        if plan.bundle:
            upload(s3.BUNDLE, bundle_bytes)
        for start in range(0, len(plan.deletes), 1000):  # DeleteObjects takes up to 1,000 keys
            batch = plan.deletes[start : start + 1000]
            response = client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": obj.key} for obj in batch], "Quiet": True},
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise SyncFailed(f"{where}: could not delete {first['Key']}: {first.get('Code')}")
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SyncFailed(f"{where}: {error.get('Code', '?')} {error.get('Message', '')}".rstrip()) from None
    except BotoCoreError as exc:
        raise SyncFailed(f"{where}: {exc}") from None
    return plan


def bundle_is_read() -> bool:
    """Only the own-image sync agent reads the bundle; for other readers it is dead weight."""
    from airflow_gitops.stack import load_stack

    try:
        dags = load_stack().get("dags") or {}
    except UsageError:  # no stack.yaml: flags only, assume the agent
        return True
    return dags.get("source", "s3-sync") == "s3-sync" and dags.get("sync_image", "own-image") == "own-image"


def bucket_and_prefix(args: argparse.Namespace) -> tuple[str, str]:
    """--bucket/--prefix, else dags.bucket/dags.prefix of stack.yaml."""
    bucket, prefix = args.bucket, args.prefix
    if bucket is None or prefix is None:
        from airflow_gitops.stack import load_stack

        dags = load_stack().get("dags") or {}
        if bucket is None:
            bucket = dags.get("bucket")
        if prefix is None:
            prefix = dags.get("prefix", "")
    if not bucket:
        raise UsageError(
            "dags.bucket: missing in stack.yaml (only the s3-sync and s3-bundle DAG sources have "
            "a bucket); give --bucket"
        )
    return bucket, prefix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=None, help="folder to upload (default: dags/ of this repo)")
    parser.add_argument("--bucket", default=None, help="default: dags.bucket of stack.yaml")
    parser.add_argument("--prefix", default=None, help="default: dags.prefix of stack.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument(
        "--no-bundle", dest="bundle", action="store_false",
        help=f"do not upload {s3.RESERVED_DIR}/bundle.tar.gz (only the own-image agent reads it; "
        "it is skipped anyway for other DAG sources)",
    )
    parser.add_argument("--workers", type=int, default=s3.DEFAULT_WORKERS, help="parallel uploads")
    parser.add_argument(
        "--max-delete-fraction", type=float, default=s3.DEFAULT_MAX_DELETE_FRACTION,
        help="refuse to delete more than this fraction of the objects (default 0.5; 1 disables)",
    )


def run(args: argparse.Namespace, session: Any = None) -> int:
    from airflow_gitops.stack import REPO_ROOT

    bucket, prefix = bucket_and_prefix(args)
    source = Path(args.source) if args.source else REPO_ROOT / "dags"
    if not 0 <= args.max_delete_fraction <= 1:
        raise UsageError(f"--max-delete-fraction: {args.max_delete_fraction:g} is not allowed; use 0..1")
    plan = push_dags(
        source, bucket, prefix, session, args.workers, args.max_delete_fraction, args.dry_run,
        bundle=args.bundle and bundle_is_read(),
    )
    where = f"s3://{bucket}/{s3.normalize_prefix(prefix)}"
    verb = "would " if args.dry_run else ""
    for relpath in plan.uploads:
        print(f"{verb}upload {relpath}")
    if plan.bundle:
        print(f"{verb}upload {s3.BUNDLE}")
    for obj in plan.deletes:
        print(f"{verb}delete {obj.key}")
    print(
        f"{where}: {len(plan.uploads)} {verb}uploaded, {len(plan.deletes)} {verb}deleted, "
        f"{plan.unchanged} unchanged"
    )
    return 0

"""`push-dags`: upload the DAG folder to s3://bucket/prefix as one generation, changing only what changed.

Order matters to the sync agents reading the prefix:

1. new and changed files (each PUT replaces an object atomically), with their SHA-256 as S3's
   additional checksum (S3 checks it on arrival; agents check it on every download, whatever
   the bucket's encryption: an ETag is an MD5 only for some objects);
2. the packs that changed: gzip streams of the small files, in PACK_COUNT groups by path, so a
   cold agent streams a few packs instead of one GET per file and a one-line change rebuilds one
   pack; each is streamed to a temporary file, never held in memory;
3. last, the manifest PREFIX/.dagsync/manifest.json: every file's size and SHA-256 and the
   packs. Agents publish only what a manifest describes, so they never publish half a push;
4. deletions: files and packs the new manifest no longer names.

What changed is decided against the previous manifest (one GET); local files are hashed in a
streaming way. Without a manifest (the first push, or a prefix written by other tools) the
prefix is listed and every file uploaded once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from airflow_gitops.dagsync import s3
from airflow_gitops.dagsync.agent import ShrinkRefused, SyncFailed
from airflow_gitops.errors import UsageError

SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")


class PushPlan(NamedTuple):
    uploads: list[str]  # relpaths, new or changed
    deletes: list[str]  # keys: files and packs no longer named by the manifest
    unchanged: int
    packs: list[str]  # pack keys (to be) uploaded
    generation: str | None  # the manifest's generation; None when nothing had to change


def local_files(source: Path) -> dict[str, str]:
    """relpath (POSIX) -> file path, for every regular file under ``source`` that belongs in S3.

    scandir and plain strings: a push of 10,000 files should cost milliseconds here, not a
    stat(2) and a few Path objects per file (a Path each was ~40 ms of a 10,000-file push).
    """
    files: dict[str, str] = {}

    def walk(folder: str, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                relpath = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):  # as os.walk: no symlink loops
                    if entry.name in SKIP_DIRS or relpath == s3.RESERVED_DIR:
                        continue  # caches; and .dagsync/ is ours, in the bucket
                    walk(entry.path, relpath + "/")
                elif (
                    entry.is_file(follow_symlinks=True)
                    and not entry.name.endswith(SKIP_SUFFIXES)
                    and s3.unsafe_reason(relpath) is None
                ):
                    files[relpath] = entry.path

    walk(str(source), "")
    return files


def _new_generation() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{random.getrandbits(32):08x}"


class _HashingWriter:
    """A write-only file that hashes what passes through (the pack's SHA-256 while it is built)."""

    def __init__(self, handle) -> None:
        self.handle, self.sha, self.size = handle, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def read_manifest(client, bucket: str, prefix: str) -> s3.Generation | None:
    """The prefix's current manifest, or None when it has none (404)."""
    from botocore.exceptions import ClientError

    try:
        response = client.get_object(Bucket=bucket, Key=s3.key_for(prefix, s3.MANIFEST_KEY))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404"):
            return None
        if code in ("AccessDenied", "403"):
            # The role may predate the manifest: push everything (correct, only slower) and say
            # which permission makes it incremental again.
            print(
                f"WARNING: s3://{bucket}/{s3.key_for(prefix, s3.MANIFEST_KEY)}: AccessDenied; "
                "uploading every file. Grant s3:GetObject on that key to push only changes.",
                file=sys.stderr,
            )
            return None
        raise
    try:
        return s3.parse_manifest(response["Body"].read(), response["ETag"].strip('"'))
    except ValueError:
        return None  # not ours (or damaged): treat the prefix as unmanaged, list it


def plan_push(
    entries: dict[str, s3.FileEntry],
    old: s3.Generation | None,
    remote_keys: list[str],
    prefix: str,
    packs: dict[int, s3.Pack],
) -> PushPlan:
    """What to upload and delete to go from ``old`` (or the listed ``remote_keys``) to ``entries``."""
    old_files = old.files if old else {}
    uploads = sorted(
        p for p, e in entries.items() if old_files.get(p) is None or old_files[p][:2] != e[:2]
    )
    old_packs = {p.key for p in old.packs} if old else set()
    new_packs = sorted(p.key for p in packs.values() if p.key not in old_packs)
    keep = {s3.key_for(prefix, p) for p in entries} | {
        s3.key_for(prefix, p.key) for p in packs.values()
    }
    keep.add(s3.key_for(prefix, s3.MANIFEST_KEY))
    if old:
        candidates = [s3.key_for(prefix, p) for p in old_files] + [
            s3.key_for(prefix, k) for k in old_packs
        ]
    else:
        candidates = remote_keys
    deletes = sorted(k for k in set(candidates) if k not in keep)
    changed = bool(uploads or deletes or new_packs or old is None or len(old.packs) != len(packs))
    return PushPlan(
        uploads,
        deletes,
        len(entries) - len(uploads),
        new_packs,
        _new_generation() if changed else None,
    )


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
        old = read_manifest(client, bucket, prefix)
        remote_keys: list[str] = []
        if old is None:
            listing, _ = s3.list_objects(client, bucket, prefix)
            remote_keys = [obj.key for obj in listing.values()]
        files = local_files(source)
        # One after the other: for small files a thread pool costs more than the hashing.
        hashed = [s3.file_size_and_sha256(path) for path in files.values()]
        entries = {
            relpath: s3.FileEntry(
                size,
                sha,
                None,
                s3.pack_index(relpath) if bundle and size <= s3.PACK_MAX_FILE_BYTES else None,
            )
            for relpath, (size, sha) in zip(files, hashed)
        }
        members: dict[int, list[tuple[str, int, str]]] = {}
        for relpath, entry in entries.items():
            if entry.pack is not None:
                members.setdefault(entry.pack, []).append((relpath, entry.size, entry.sha256))
        old_packs = {p.key: p for p in old.packs} if old else {}
        packs: dict[int, s3.Pack] = {}
        for index, items in members.items():
            key = f"{s3.PACKS_DIR}/{s3.pack_identity(items)}.gz"
            packs[index] = old_packs.get(key) or s3.Pack(key, -1, "")
        plan = plan_push(entries, old, remote_keys, prefix, packs)
        held = (
            len(old.files)
            if old
            else sum(
                1 for k in remote_keys if not s3.is_reserved(k[len(prefix) + 1 :] if prefix else k)
            )
        )
        deleting = sum(
            1 for k in plan.deletes if not s3.is_reserved(k[len(prefix) + 1 :] if prefix else k)
        )
        if s3.deletion_refused(held, deleting, max_delete_fraction):
            raise ShrinkRefused(
                f"{where}: pushing {source} would delete {deleting} of {held} "
                f"files (limit {max_delete_fraction:.0%}); is --source right? If the deletion "
                "is intended, raise --max-delete-fraction."
            )
        if dry_run or plan.generation is None:
            return plan

        def upload(relpath: str) -> None:
            with open(files[relpath], "rb") as body:
                client.put_object(
                    Bucket=bucket,
                    Key=s3.key_for(prefix, relpath),
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=entries[relpath].sha256,
                )

        s3.run_parallel(upload, plan.uploads, workers)
        new_pack_keys = set(plan.packs)

        def build_pack(index: int) -> None:
            with tempfile.TemporaryFile() as spool:
                writer = _HashingWriter(spool)
                s3.write_pack([(p, files[p]) for p, _, _ in members[index]], writer)
                spool.seek(0)
                pack = s3.Pack(packs[index].key, writer.size, s3.b64(writer.sha.digest()))
                client.put_object(
                    Bucket=bucket,
                    Key=s3.key_for(prefix, pack.key),
                    Body=spool,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=pack.sha256,
                )
                packs[index] = pack

        s3.run_parallel(build_pack, [i for i in packs if packs[i].key in new_pack_keys], workers)
        ordered = [packs[i] for i in sorted(packs)]
        numbered = {old_index: new_index for new_index, old_index in enumerate(sorted(packs))}
        final = {
            p: e._replace(pack=None if e.pack is None else numbered[e.pack])
            for p, e in entries.items()
        }
        manifest = s3.dump_manifest(plan.generation, final, ordered)
        client.put_object(
            Bucket=bucket,
            Key=s3.key_for(prefix, s3.MANIFEST_KEY),
            Body=manifest,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=s3.b64(hashlib.sha256(manifest).digest()),
            ContentType="application/json",
        )
        for start in range(0, len(plan.deletes), 1000):  # DeleteObjects takes up to 1,000 keys
            batch = plan.deletes[start : start + 1000]
            response = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise SyncFailed(f"{where}: could not delete {first['Key']}: {first.get('Code')}")
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SyncFailed(
            f"{where}: {error.get('Code', '?')} {error.get('Message', '')}".rstrip()
        ) from None
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
    return (
        dags.get("source", "s3-sync") == "s3-sync"
        and dags.get("sync_image", "own-image") == "own-image"
    )


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
    parser.add_argument(
        "--source", default=None, help="folder to upload (default: dags/ of this repo)"
    )
    parser.add_argument("--bucket", default=None, help="default: dags.bucket of stack.yaml")
    parser.add_argument("--prefix", default=None, help="default: dags.prefix of stack.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument(
        "--no-bundle",
        dest="bundle",
        action="store_false",
        help=f"no packs under {s3.PACKS_DIR}/ (only the own-image agent reads them; they are "
        "skipped anyway for other DAG sources); the manifest is always written",
    )
    parser.add_argument("--workers", type=int, default=s3.DEFAULT_WORKERS, help="parallel uploads")
    parser.add_argument(
        "--max-delete-fraction",
        type=float,
        default=s3.DEFAULT_MAX_DELETE_FRACTION,
        help="refuse to delete more than this fraction of the objects (default 0.5; 1 disables)",
    )


def run(args: argparse.Namespace, session: Any = None) -> int:
    from airflow_gitops.stack import REPO_ROOT

    bucket, prefix = bucket_and_prefix(args)
    source = Path(args.source) if args.source else REPO_ROOT / "dags"
    if not 0 <= args.max_delete_fraction <= 1:
        raise UsageError(
            f"--max-delete-fraction: {args.max_delete_fraction:g} is not allowed; use 0..1"
        )
    plan = push_dags(
        source,
        bucket,
        prefix,
        session,
        args.workers,
        args.max_delete_fraction,
        args.dry_run,
        bundle=args.bundle and bundle_is_read(),
    )
    where = f"s3://{bucket}/{s3.normalize_prefix(prefix)}"
    verb = "would " if args.dry_run else ""
    for relpath in plan.uploads:
        print(f"{verb}upload {relpath}")
    for key in plan.packs:
        print(f"{verb}upload {key}")
    if plan.generation:
        print(f"{verb}upload {s3.MANIFEST_KEY} (generation {plan.generation})")
    for key in plan.deletes:
        print(f"{verb}delete {key}")
    if args.dry_run:
        counts = f"{len(plan.uploads)} to upload, {len(plan.deletes)} to delete"
    else:
        counts = f"{len(plan.uploads)} uploaded, {len(plan.deletes)} deleted"
    print(
        f"{where}: {counts}, {plan.unchanged} unchanged{' (dry run: nothing changed)' if args.dry_run else ''}"
    )
    return 0

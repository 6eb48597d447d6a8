"""The S3 DAG sync agent: mirrors s3://BUCKET/PREFIX into a DAG folder, atomically and cheaply.

Layout of DEST (an emptyDir shared with Airflow, which reads DEST/current)::

    DEST/current -> snapshots/20261127T001500-1a2b3c   relative symlink, swapped with rename(2)
    DEST/snapshots/<name>/...                          complete, immutable copies of the prefix
    DEST/snapshots/<name>/.dagsync-manifest.json       size, SHA-256 and ETag of each file
    DEST/.heartbeat                                    JSON: time of the last successful cycle
    DEST/.lock                                         flock(2) of the one agent writing DEST

A cycle asks for push-dags' manifest (PREFIX/.dagsync/manifest.json) with If-None-Match: the
ETag of the one it holds. Unchanged: S3 answers 304 and the cycle ends (one request, whatever
the number of files). Changed: the new manifest is one complete generation; a new snapshot is
built beside the published one, downloading only files whose size or SHA-256 changed (small
files from push-dags' packs when many are missing, as on a cold start) and hard-linking the
rest from the previous snapshot. Every file is checked against the manifest's SHA-256 (also
its S3 additional checksum); a file that no longer matches means a newer push is under way, and
the agent waits for its manifest instead of publishing a mix. The snapshot is then renamed into
place and `current` swapped by rename(2). Prefixes without a manifest (written by other tools)
are listed instead (one ListObjectsV2 per 1,000 objects, ETag and size as change tokens).

Safety: nothing is published or deleted after a failure; a change that would delete more than
--max-delete-fraction of the files held is refused; a cold start (nothing published yet) on an
empty prefix, or a manifest-less one without a single .py file, is refused unless
--allow-empty; a bad key (unsafe path, name too long, file/folder clash) is skipped and named
once, and the rest is published.

Exit codes: 0 done (or, looping, stopped by SIGTERM/SIGINT), 1 sync failed (--once), 2 bad
usage, 3 refused: shrink guard or cold-start guard (--once), 4 heartbeat missing or too old
(--check-heartbeat), 5 another agent holds DEST, 128+N --once stopped by signal N.

Runs without stack.yaml: every flag has an environment variable (DAGSYNC_BUCKET, ...), so the
container image needs only ``python -m airflow_gitops.dagsync [flags]``.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from airflow_gitops.dagsync import s3
from airflow_gitops.errors import ToolkitError, UsageError

EXIT_OK = 0
EXIT_SYNC_FAILED = 1
EXIT_USAGE = 2
EXIT_GUARD = 3
EXIT_UNHEALTHY = 4
EXIT_LOCKED = 5
EXIT_SIGNAL_BASE = 128  # --once stopped by signal N exits 128 + N, as a shell would

SNAPSHOTS = "snapshots"
CURRENT = "current"
MANIFEST = ".dagsync-manifest.json"
HEARTBEAT = ".heartbeat"
LOCK = ".lock"
BUILDING = ".building-"  # prefix of a snapshot still being built (never published)
STATE_FORMAT = 2
LISTING = "listing"  # Generation.name of a prefix without a manifest
# Use push-dags' packs when at least this many files are missing, as on a cold start.
BUNDLE_MIN_FILES = 20

# After SIGTERM the agent finishes or abandons the request in flight; if that takes longer than
# this, the process exits anyway (the published snapshot is consistent at every instant).
STOP_GRACE_SECONDS = 1.5
# --once: a push under way when an init container starts is waited for this long.
ONCE_WAIT_SECONDS = 60.0

log = logging.getLogger("dagsync")


class SyncFailed(ToolkitError):
    """S3 could not be listed or read; the published snapshot was left as it was."""

    exit_code = EXIT_SYNC_FAILED


class ShrinkRefused(ToolkitError):
    """The change would delete too many of the files held; nothing was changed."""

    exit_code = EXIT_GUARD


class ColdStartRefused(ShrinkRefused):
    """Nothing published yet and the prefix looks wrong (empty, or no .py without a manifest)."""


class GenerationChanged(SyncFailed):
    """A file no longer matches the manifest: a newer push is under way. Wait for its manifest."""


class DestLocked(ToolkitError):
    exit_code = EXIT_LOCKED


@dataclass
class SyncResult:
    changed: bool
    snapshot: str | None
    objects: int
    generation: str | None = None
    downloaded: int = 0
    from_bundle: int = 0
    linked: int = 0
    deleted: int = 0
    bytes_downloaded: int = 0
    skipped_keys: int = 0
    seconds: float = 0.0


# --- the DAG folder ---------------------------------------------------------------------------


def _snapshot_name() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{random.getrandbits(24):06x}"


class DagFolder:
    """DEST: the published snapshot, its manifest, the heartbeat and the writer's lock."""

    def __init__(self, dest: Path | str) -> None:
        self.dest = Path(dest)
        self.snapshots = self.dest / SNAPSHOTS
        self.current = self.dest / CURRENT
        self._lock_fd: int | None = None

    def prepare(self) -> None:
        """Create DEST, become its one writer, remove leftovers of an interrupted run.

        The published snapshot and the newest other complete one (the previous, which readers
        may still be walking) are kept across restarts; the next swap removes the older.
        """
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dest / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"--dest {self.dest}: cannot create it ({exc.strerror})") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise DestLocked(
                f"--dest {self.dest}: another sync agent is writing it (flock on {LOCK}); "
                "run one agent per folder"
            ) from None
        if self.current.exists() and not self.current.is_symlink():
            self.close()
            raise UsageError(
                f"--dest {self.dest}: {self.current} is a real folder, not our symlink; "
                "point --dest at an empty folder"
            )
        published = self.published_name()
        complete = sorted(
            e.name for e in self.snapshots.iterdir() if not e.name.startswith(BUILDING)
        )
        keep = {published} | (
            {max(n for n in complete if n != published)} if len(complete) > 1 else set()
        )
        self.remove_old_snapshots(keep)
        (self.dest / f".{CURRENT}.tmp").unlink(missing_ok=True)
        (self.dest / f"{HEARTBEAT}.tmp").unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def published_name(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        return Path(target).name

    def load_state(self) -> tuple[dict[str, s3.FileEntry], str | None]:
        """The published snapshot's files and the manifest ETag it came from."""
        name = self.published_name()
        if name is None:
            return {}, None
        try:
            data = json.loads((self.snapshots / name / MANIFEST).read_text(encoding="utf-8"))
            if data.get("format") != STATE_FORMAT:
                return {}, None
            files = {p: s3.FileEntry(int(s), h, e) for p, (s, h, e) in data["files"].items()}
            return files, data.get("manifest_etag")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}, None  # unknown state: the next cycle downloads everything once

    def publish(self, building: Path, name: str) -> None:
        """Rename the finished snapshot into place, then swap `current` with one rename(2)."""
        final = self.snapshots / name
        os.rename(building, final)
        tmp_link = self.dest / f".{CURRENT}.tmp"
        tmp_link.unlink(missing_ok=True)
        os.symlink(f"{SNAPSHOTS}/{name}", tmp_link)
        os.replace(tmp_link, self.current)

    def remove_old_snapshots(self, keep: set[str | None]) -> None:
        for entry in self.snapshots.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    def write_heartbeat(self, result: SyncResult) -> None:
        """Best effort: a full disk must not turn a good cycle into a crash."""
        now = time.time()
        beat = {
            "last_success": datetime.fromtimestamp(now, UTC).isoformat(),
            "last_success_unix": round(now, 3),
            "snapshot": result.snapshot,
            "objects": result.objects,
        }
        tmp = self.dest / f"{HEARTBEAT}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(beat) + "\n")
            os.replace(tmp, self.dest / HEARTBEAT)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.error(
                "heartbeat_failed", extra={"fields": {"reason": f"{tmp}: {exc.strerror or exc}"}}
            )


def check_heartbeat(dest: Path | str, max_age: float, now: float | None = None) -> tuple[bool, str]:
    """(healthy, reason): the last successful cycle is at most ``max_age`` seconds old."""
    path = Path(dest) / HEARTBEAT
    try:
        beat = json.loads(path.read_text(encoding="utf-8"))
        last = float(beat["last_success_unix"])
    except FileNotFoundError:
        return False, f"{path}: missing (no successful sync yet)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"{path}: unreadable ({exc})"
    age = (time.time() if now is None else now) - last
    if age > max_age:
        return False, f"last successful sync {age:.0f}s ago (limit {max_age:g}s)"
    return True, f"last successful sync {age:.0f}s ago"


# --- one sync ---------------------------------------------------------------------------------


def _same(new: s3.FileEntry, held: s3.FileEntry | None) -> bool:
    if held is None or new.size != held.size:
        return False
    if new.sha256 is not None:
        return new.sha256 == held.sha256
    return new.etag is not None and new.etag == held.etag


def _error_text(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', '?')} {error.get('Message', '')}".rstrip()
    return str(exc)


class SyncAgent:
    """Mirrors one bucket prefix into one DagFolder; ``sync_once`` is one cycle."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        dest: Path | str,
        workers: int = s3.DEFAULT_WORKERS,
        max_delete_fraction: float = s3.DEFAULT_MAX_DELETE_FRACTION,
        stop: threading.Event | None = None,
        use_bundle: bool = True,
        allow_empty: bool = False,
    ) -> None:
        self.client = client
        self.use_bundle = use_bundle
        self.allow_empty = allow_empty
        self.bucket = bucket
        self.prefix = s3.normalize_prefix(prefix)
        self.where = f"s3://{bucket}/{self.prefix}"
        self.folder = DagFolder(dest)
        self.workers = workers
        self.max_delete_fraction = max_delete_fraction
        self.stop = stop or threading.Event()
        self.folder.prepare()
        self.published = self.folder.published_name()
        self.held, self.manifest_etag = self.folder.load_state()
        try:
            self.name_max = os.pathconf(self.folder.snapshots, "PC_NAME_MAX")
        except (OSError, ValueError):
            self.name_max = s3.NAME_MAX
        self._named: set[str] = set()  # bad keys already logged
        self._listing: dict[str, s3.RemoteObject] = {}  # the last listing (no manifest)

    def close(self) -> None:
        self.folder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # -- reading S3 --

    def fetch_generation(self) -> s3.Generation | None:
        """The prefix's current generation, or None when the held manifest is still current."""
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs = {"Bucket": self.bucket, "Key": s3.key_for(self.prefix, s3.MANIFEST_KEY)}
        if self.manifest_etag and self.published:
            kwargs["IfNoneMatch"] = f'"{self.manifest_etag}"'
        try:
            response = self.client.get_object(**kwargs, ChecksumMode="ENABLED")
            data = response["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 304 or code in ("304", "NotModified"):
                return None
            if code not in ("NoSuchKey", "404"):
                raise SyncFailed(
                    f"{self.where}: reading {s3.MANIFEST_KEY} failed: {_error_text(exc)}"
                ) from None
            return self._generation_from_listing()
        except BotoCoreError as exc:
            raise SyncFailed(f"{self.where}: reading {s3.MANIFEST_KEY} failed: {exc}") from None
        try:
            return s3.parse_manifest(data, response["ETag"].strip('"'))
        except ValueError as exc:
            raise SyncFailed(
                f"{self.where}: {s3.MANIFEST_KEY} is not a push-dags manifest: {exc}"
            ) from None

    def _generation_from_listing(self) -> s3.Generation:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            listing, skipped = s3.list_objects(self.client, self.bucket, self.prefix)
        except (BotoCoreError, ClientError) as exc:
            raise SyncFailed(f"{self.where}: listing failed: {_error_text(exc)}") from None
        for key, reason in skipped.items():
            self._name_bad_key(key, reason)
        self._listing = {p: o for p, o in listing.items() if not s3.is_reserved(p)}
        files = {p: s3.FileEntry(o.size, None, o.etag) for p, o in self._listing.items()}
        return s3.Generation(files, [], LISTING, None)

    def _name_bad_key(self, key: str, reason: str) -> None:
        if key not in self._named:
            self._named.add(key)
            log.warning("skipped_key", extra={"fields": {"key": key, "reason": reason}})

    def usable_files(self, generation: s3.Generation) -> tuple[dict[str, s3.FileEntry], int]:
        """The files of ``generation`` that can be written here, and how many were skipped.

        A file/folder clash keeps the side of the newest complete push: with a manifest the
        paths are one push's (a clash there keeps the folder); in a listing the side with the
        newest LastModified wins.
        """
        files: dict[str, s3.FileEntry] = {}
        skipped = 0
        for relpath, entry in generation.files.items():
            if s3.is_reserved(relpath) or relpath == MANIFEST:
                continue
            reason = s3.unsafe_reason(relpath, self.name_max)
            if reason:
                self._name_bad_key(s3.key_for(self.prefix, relpath), reason)
                skipped += 1
                continue
            files[relpath] = entry
        listing = self._listing if generation.manifest_etag is None else {}
        for file, below in s3.file_folder_clashes(files).items():
            if file not in files:
                continue
            newest_below = max(
                (listing[p].last_modified for p in below if p in listing), default=""
            )
            file_newer = (
                listing.get(file) is not None and listing[file].last_modified > newest_below
            )
            losers, kept = (
                (below, f"the file {file}") if file_newer else ([file], f"the folder {file}/")
            )
            for path in losers:
                if path in files:
                    del files[path]
                    skipped += 1
                    self._name_bad_key(
                        s3.key_for(self.prefix, path), f"file/folder clash; kept {kept}"
                    )
        return files, skipped

    # -- the cycle --

    def sync_once(self) -> SyncResult:
        started = time.monotonic()
        self._listing = {}
        generation = self.fetch_generation()
        if generation is None:  # 304: the held manifest is current
            result = SyncResult(False, self.published, len(self.held))
            return self._finish(result, started, "unchanged")
        files, skipped = self.usable_files(generation)
        changed = [path for path, entry in files.items() if not _same(entry, self.held.get(path))]
        removed = [path for path in self.held if path not in files]
        if self.published and not changed and not removed:
            self.manifest_etag = generation.manifest_etag
            result = SyncResult(
                False, self.published, len(files), generation.name, skipped_keys=skipped
            )
            return self._finish(result, started, "unchanged")
        if not self.published and not self.allow_empty:
            self._refuse_a_wrong_cold_start(generation, files)
        if self.published and s3.deletion_refused(
            len(self.held), len(removed), self.max_delete_fraction
        ):
            raise ShrinkRefused(
                f"{self.where}: the change would delete {len(removed)} of {len(self.held)} files "
                f"(limit {self.max_delete_fraction:.0%}); kept the published snapshot. If the "
                "deletion is intended, raise --max-delete-fraction."
            )
        result = self._build_and_publish(generation, files, changed)
        result.deleted, result.skipped_keys = len(removed), skipped
        return self._finish(result, started, "published")

    def _finish(self, result: SyncResult, started: float, event: str) -> SyncResult:
        result.seconds = round(time.monotonic() - started, 3)
        self.folder.write_heartbeat(result)
        if event == "unchanged":
            log.debug(event, extra={"fields": asdict(result)})
        else:
            log.info(event, extra={"fields": asdict(result)})
        return result

    def _refuse_a_wrong_cold_start(
        self, generation: s3.Generation, files: dict[str, s3.FileEntry]
    ) -> None:
        if not files:
            problem = "holds no DAG files"
        elif generation.manifest_etag is None and not any(p.endswith(".py") for p in files):
            problem = f"has no push-dags manifest and not one .py file among {len(files)} objects"
        else:
            return
        raise ColdStartRefused(
            f"{self.where} {problem}; nothing published yet, so Airflow would start on it. "
            "Check --prefix/--bucket, or pass --allow-empty (DAGSYNC_ALLOW_EMPTY=1) if intended."
        )

    def _build_and_publish(self, generation, files, changed) -> SyncResult:
        from botocore.exceptions import BotoCoreError, ClientError

        name = _snapshot_name()
        building = self.folder.snapshots / f"{BUILDING}{name}"
        previous = self.folder.snapshots / self.published if self.published else None
        to_fetch = set(changed)
        try:
            building.mkdir()
            # Plain strings, not Path objects: this runs once per file (10,000s per cycle).
            root, before = str(building), str(previous)
            for directory in sorted({path.rpartition("/")[0] for path in files} - {""}):
                os.makedirs(f"{root}/{directory}", exist_ok=True)
            state: dict[str, s3.FileEntry] = {}
            linked = 0
            for path in files:
                if path in to_fetch:
                    continue
                try:
                    # Files are never modified in place: a hard link is as good as a copy.
                    os.link(f"{before}/{path}", f"{root}/{path}")
                except FileNotFoundError:  # someone removed it under us: fetch it again
                    to_fetch.add(path)
                    continue
                except OSError:
                    shutil.copy2(f"{before}/{path}", f"{root}/{path}")
                state[path] = self.held[path]
                linked += 1
            unpacked = {}
            if generation.packs and self.use_bundle and len(to_fetch) >= BUNDLE_MIN_FILES:
                unpacked = self._fetch_from_packs(generation, files, to_fetch, building)
            state.update(unpacked)
            to_get = sorted(to_fetch - set(unpacked))
            fetched = s3.run_parallel(
                lambda path: self._download(path, files[path], building / path),
                to_get,
                self.workers,
                self.stop,
            )
            state.update(zip(to_get, fetched))
            (building / MANIFEST).write_text(
                json.dumps(
                    {
                        "format": STATE_FORMAT,
                        "generation": generation.name,
                        "manifest_etag": generation.manifest_etag,
                        "files": {p: [e.size, e.sha256, e.etag] for p, e in sorted(state.items())},
                    }
                ),
                encoding="utf-8",
            )
            self.folder.publish(building, name)
        except BaseException as exc:
            shutil.rmtree(building, ignore_errors=True)
            if isinstance(exc, (ClientError, BotoCoreError, OSError)):
                raise SyncFailed(f"{self.where}: download failed: {_error_text(exc)}") from None
            raise
        self.folder.remove_old_snapshots({name, self.published})
        self.published, self.held, self.manifest_etag = name, state, generation.manifest_etag
        return SyncResult(
            changed=True,
            snapshot=name,
            objects=len(files),
            generation=generation.name,
            downloaded=len(fetched) + len(unpacked),
            from_bundle=len(unpacked),
            linked=linked,
            bytes_downloaded=sum(e.size for e in [*fetched, *unpacked.values()]),
        )

    def _fetch_from_packs(self, generation, files, to_fetch, building) -> dict[str, s3.FileEntry]:
        """Stream the packs that carry mostly wanted files; each member is checked by SHA-256."""
        members: dict[int, list[tuple[str, int]]] = {}
        wanted_by_pack: dict[int, dict[str, s3.FileEntry]] = {}
        for path, entry in generation.files.items():
            if entry.pack is not None:
                members.setdefault(entry.pack, []).append((path, entry.size))
                if path in to_fetch and path in files:
                    wanted_by_pack.setdefault(entry.pack, {})[path] = entry
        chosen = [
            (index, wanted)
            for index, wanted in wanted_by_pack.items()
            if sum(e.size for e in wanted.values()) * 2 >= sum(size for _, size in members[index])
        ]
        written: dict[str, s3.FileEntry] = {}
        for part in s3.run_parallel(
            lambda item: self._unpack(
                generation.packs[item[0]], members[item[0]], item[1], building
            ),
            chosen,
            self.workers,
            self.stop,
        ):
            written.update(part)
        return written

    def _unpack(
        self,
        pack: s3.Pack,
        members: list[tuple[str, int]],
        wanted: dict[str, s3.FileEntry],
        building: Path,
    ) -> dict[str, s3.FileEntry]:
        """One pack, streamed: wanted members are written to disk while hashed, nothing held."""
        from botocore.exceptions import BotoCoreError, ClientError

        root = str(building)
        written: dict[str, s3.FileEntry] = {}

        def open_member(relpath: str):
            if self.stop.is_set():
                raise s3.Interrupted()
            return open(f"{root}/{relpath}", "wb") if relpath in wanted else None

        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=s3.key_for(self.prefix, pack.key)
            )  # every member is checked against the manifest's SHA-256 below
            chunks = response["Body"].iter_chunks(s3.CHUNK)
            for relpath, size, sha in s3.read_pack(chunks, members, open_member):
                if sha == wanted[relpath].sha256:
                    written[relpath] = s3.FileEntry(size, sha, None)
                else:
                    os.unlink(f"{root}/{relpath}")  # left to its own GET
        except (BotoCoreError, ClientError, ValueError, zlib.error) as exc:
            log.warning(
                "pack_unusable", extra={"fields": {"pack": pack.key, "reason": _error_text(exc)}}
            )
        return written

    def _download(self, path: str, entry: s3.FileEntry, target: Path) -> s3.FileEntry:
        """GET one object into ``target`` (inside an unpublished snapshot) and verify it.

        With a manifest: its SHA-256 must be the manifest's, else a newer push is under way.
        Without: its size must be the listing's (else it changed since; the next cycle sees it),
        the S3 additional checksum is verified by botocore when the object has one, and the MD5
        only when the object says its ETag is one.
        """
        key = s3.key_for(self.prefix, path)
        # With a manifest we compute the SHA-256 ourselves (the value push-dags also stored as
        # the object's checksum), so botocore is not asked to compute it a second time. Without
        # one, botocore verifies whatever additional checksum the object carries.
        extra = {} if entry.sha256 is not None else {"ChecksumMode": "ENABLED"}
        response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        etag = response["ETag"].strip('"')
        has_checksum = any(k.startswith("Checksum") and k != "ChecksumType" for k in response)
        check_md5 = entry.sha256 is None and not has_checksum and s3.etag_is_md5(response)
        size, sha, md5 = s3.stream_to_file(
            response["Body"].iter_chunks(s3.CHUNK), target, check_md5
        )
        if size != response["ContentLength"] or (md5 is not None and md5 != etag):
            raise SyncFailed(f"s3://{self.bucket}/{key}: downloaded bytes do not match the object")
        if entry.sha256 is not None and sha != entry.sha256:
            raise GenerationChanged(
                f"{self.where}: {path} does not match the manifest (a push is under way)"
            )
        return s3.FileEntry(size, sha, etag)


def sync_into(
    dest: Path | str,
    bucket: str,
    prefix: str,
    session: Any = None,
    workers: int = s3.DEFAULT_WORKERS,
    max_delete_fraction: float = s3.DEFAULT_MAX_DELETE_FRACTION,
    use_bundle: bool = True,
    allow_empty: bool = False,
) -> SyncResult:
    """One complete sync of s3://bucket/prefix into ``dest`` (what `pull-dags` runs)."""
    client = s3.make_s3_client(session, workers)
    with SyncAgent(
        client,
        bucket,
        prefix,
        dest,
        workers,
        max_delete_fraction,
        use_bundle=use_bundle,
        allow_empty=allow_empty,
    ) as agent:
        return agent.sync_once()


def client_for_life(session: Any = None, workers: int = s3.DEFAULT_WORKERS) -> Any:
    """The agent's S3 client, made with the garbage collector paused, then frozen in place.

    botocore's import and its S3 model are most of the objects this process will ever hold,
    and all of them live as long as it does. Collecting while they are made finds nothing, and
    the full collection that followed (during the first request) walked them all again: pausing
    the collector, then moving everything start-up made out of its reach (gc.freeze), took the
    CPU of a cold sync of 1,000 files from 0.39 s to 0.29 s (benchmarks/s3sync.py). Later
    garbage is collected as usual, and costs less: the frozen objects are never walked again.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return s3.make_s3_client(session, workers)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


# --- the loop ---------------------------------------------------------------------------------


def run_loop(agent: SyncAgent, interval: float, jitter: float) -> int:
    """Sync every ``interval`` seconds (up to ``jitter`` of it sooner) until ``agent.stop`` is set.

    The jitter only shortens the wait: pods drift out of step, and a change is still seen at
    most ``interval`` after it lands (plus the cycle's own time).
    """
    failures = waits = 0
    while not agent.stop.is_set():
        delay = interval
        try:
            agent.sync_once()
            failures = waits = 0
        except s3.Interrupted:
            break
        except ShrinkRefused as exc:
            log.error("refused", extra={"fields": {"reason": str(exc)}})
        except GenerationChanged as exc:
            waits += 1
            # A push's manifest comes within seconds; past ONCE_WAIT_SECONDS something else
            # changed the files (not push-dags): say so, and stop polling fast.
            late = waits * 2.0 > ONCE_WAIT_SECONDS
            delay = interval if late else min(interval, 2.0)
            fields = {"reason": str(exc), "cycles": waits}
            if late:
                fields["hint"] = "objects differ from the manifest; run push-dags again"
            log.log(logging.ERROR if late else logging.INFO, "waiting", extra={"fields": fields})
        except SyncFailed as exc:
            failures += 1
            # Retry sooner than the interval at first (1, 2, 4 ... s), never faster than that.
            delay = min(interval, 2.0 ** (failures - 1))
            log.error("sync_failed", extra={"fields": {"reason": str(exc), "failures": failures}})
        except Exception as exc:  # a bug must not kill the sidecar: the snapshot stays served
            failures += 1
            delay = min(interval, 2.0 ** (failures - 1))
            log.exception("sync_crashed", extra={"fields": {"reason": repr(exc)}})
        agent.stop.wait(delay * (1 - random.uniform(0, jitter)))
    log.info("stopped", extra={"fields": {}})
    return EXIT_OK


def run_once(agent: SyncAgent, signals: dict[str, int]) -> int:
    """One sync (init containers): non-zero unless the DAG folder is published and current."""
    deadline = time.monotonic() + ONCE_WAIT_SECONDS
    while True:
        try:
            agent.sync_once()
            return EXIT_OK
        except s3.Interrupted:
            log.info("stopped", extra={"fields": {"interrupted": True}})
            return EXIT_SIGNAL_BASE + signals.get("signum", signal.SIGTERM)
        except GenerationChanged as exc:
            if time.monotonic() > deadline:
                log.error("sync_failed", extra={"fields": {"reason": str(exc)}})
                return exc.exit_code
            log.info("waiting", extra={"fields": {"reason": str(exc)}})
            agent.stop.wait(2.0)
        except ShrinkRefused as exc:
            log.error("refused", extra={"fields": {"reason": str(exc)}})
            return exc.exit_code
        except SyncFailed as exc:
            log.error("sync_failed", extra={"fields": {"reason": str(exc)}})
            return exc.exit_code
        if agent.stop.is_set():
            log.info("stopped", extra={"fields": {"interrupted": True}})
            return EXIT_SIGNAL_BASE + signals.get("signum", signal.SIGTERM)


def install_stop_handlers(stop: threading.Event, once: bool, signals: dict[str, int]) -> None:
    """SIGTERM/SIGINT: stop after the request in flight; exit hard if that takes too long.

    A looping sidecar that is told to stop has done its job (exit 0); an interrupted --once has
    not (exit 128 + signal), so an init container never counts as done without a sync.
    """

    def handle(signum, _frame):
        if stop.is_set():
            return
        signals["signum"] = signum
        stop.set()
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        code = EXIT_SIGNAL_BASE + signum if once else EXIT_OK
        timer = threading.Timer(STOP_GRACE_SECONDS, os._exit, args=(code,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


# --- JSON lines -------------------------------------------------------------------------------


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, event, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_json_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # botocore/urllib3 warnings, as JSON too
    log.setLevel(level.upper())


# --- command line -----------------------------------------------------------------------------

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

# (dest, flag, environment variable, type, default, check, what is allowed): one row per
# setting that can come from the environment, validated together into one-line errors.
NUMBERS = [
    ("interval", "--interval", "DAGSYNC_INTERVAL", float, 30.0, lambda v: v > 0, "seconds > 0"),
    ("jitter", "--jitter", "DAGSYNC_JITTER", float, 0.1, lambda v: 0 <= v < 1, "0 <= jitter < 1"),
    (
        "workers",
        "--workers",
        "DAGSYNC_WORKERS",
        int,
        s3.DEFAULT_WORKERS,
        lambda v: 1 <= v <= 64,
        "1..64",
    ),
    (
        "max_delete_fraction",
        "--max-delete-fraction",
        "DAGSYNC_MAX_DELETE_FRACTION",
        float,
        s3.DEFAULT_MAX_DELETE_FRACTION,
        lambda v: 0 <= v <= 1,
        "0..1",
    ),
    ("max_age", "--max-age", "DAGSYNC_MAX_AGE", float, 300.0, lambda v: v > 0, "seconds > 0"),
]
SWITCHES = [  # (dest, environment variable, default)
    ("once", "DAGSYNC_ONCE", False),
    ("use_bundle", "DAGSYNC_BUNDLE", True),
    ("allow_empty", "DAGSYNC_ALLOW_EMPTY", False),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--bucket", default=env("DAGSYNC_BUCKET"), help="S3 bucket [DAGSYNC_BUCKET]"
    )
    parser.add_argument(
        "--prefix", default=env("DAGSYNC_PREFIX", ""), help="key prefix to mirror [DAGSYNC_PREFIX]"
    )
    parser.add_argument(
        "--dest",
        default=env("DAGSYNC_DEST"),
        help="DAG folder; Airflow reads DEST/current [DAGSYNC_DEST]",
    )
    helps = {
        "interval": "seconds between cycles (default 30)",
        "jitter": "each wait is up to this fraction shorter, at random, so pods do not poll in "
        "step (default 0.1)",
        "workers": f"parallel downloads (default {s3.DEFAULT_WORKERS})",
        "max_delete_fraction": "refuse a change that would delete more than this fraction of the "
        "files held (default 0.5; 1 disables the guard)",
        "max_age": "seconds, for --check-heartbeat (default 300)",
    }
    for dest, flag, variable, _kind, _default, _check, _allowed in NUMBERS:
        # Kept as text here and converted in _validate, so a bad value from the environment
        # gets the same one-line error as a bad flag.
        parser.add_argument(flag, dest=dest, default=None, help=f"{helps[dest]} [{variable}]")
    parser.add_argument(
        "--once",
        action="store_const",
        const=True,
        default=None,
        help="one sync, then exit (init containers) [DAGSYNC_ONCE=1]",
    )
    parser.add_argument(
        "--no-bundle",
        dest="use_bundle",
        action="store_const",
        const=False,
        default=None,
        help="never use push-dags' packs; one GET per file [DAGSYNC_BUNDLE=0]",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_const",
        const=True,
        default=None,
        help="on a cold start, publish even an empty prefix, or one without a "
        "manifest and without .py files [DAGSYNC_ALLOW_EMPTY=1]",
    )
    parser.add_argument(
        "--check-heartbeat",
        action="store_true",
        help="probe mode: exit 0 when the last successful sync is at most --max-age old, else 4",
    )
    parser.add_argument(
        "--log-level",
        default=env("DAGSYNC_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )


def _validate(args: argparse.Namespace) -> None:
    """Fill the settings from flags, else DAGSYNC_*, else defaults; one-line error if bad."""
    for dest, flag, variable, kind, default, check, allowed in NUMBERS:
        text, source = getattr(args, dest), flag
        if text is None:
            text, source = os.environ.get(variable), variable
        if text is None:
            setattr(args, dest, default)
            continue
        try:
            value = kind(text)
            ok = check(value) and not math.isnan(value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UsageError(f"{source}: {text!r} is not allowed; use {allowed}")
        setattr(args, dest, value)
    for dest, variable, default in SWITCHES:
        if getattr(args, dest, None) is not None:
            continue
        text = os.environ.get(variable)
        if text is None:
            setattr(args, dest, default)
        elif text.strip().lower() in TRUE + FALSE:
            setattr(args, dest, text.strip().lower() in TRUE)
        else:
            raise UsageError(f"{variable}: {text!r} is not allowed; use 1/true/yes or 0/false/no")
    if not args.dest:
        raise UsageError("--dest: missing; give the DAG folder (or DAGSYNC_DEST)")
    if not args.check_heartbeat and not args.bucket:
        raise UsageError("--bucket: missing; give the DAG bucket (or DAGSYNC_BUCKET)")


def run(args: argparse.Namespace, session: Any = None) -> int:
    _validate(args)
    if args.check_heartbeat:
        healthy, reason = check_heartbeat(args.dest, args.max_age)
        print(
            ("OK: " if healthy else "UNHEALTHY: ") + reason,
            file=sys.stdout if healthy else sys.stderr,
        )
        return EXIT_OK if healthy else EXIT_UNHEALTHY
    setup_json_logging(args.log_level)
    stop = threading.Event()
    signals: dict[str, int] = {}
    if threading.current_thread() is threading.main_thread():
        install_stop_handlers(stop, args.once, signals)
    client = client_for_life(session, args.workers)
    with SyncAgent(
        client,
        args.bucket,
        args.prefix,
        args.dest,
        args.workers,
        args.max_delete_fraction,
        stop,
        use_bundle=args.use_bundle,
        allow_empty=args.allow_empty,
    ) as agent:
        log.info(
            "started",
            extra={
                "fields": {
                    "bucket": args.bucket,
                    "prefix": agent.prefix,
                    "dest": str(args.dest),
                    "once": args.once,
                    "interval": args.interval,
                    "snapshot": agent.published,
                }
            },
        )
        if args.once:
            return run_once(agent, signals)
        return run_loop(agent, args.interval, args.jitter)


def main(argv: list[str] | None = None) -> int:
    """Entrypoint of the container image (no stack.yaml there: flags and DAGSYNC_* only)."""
    parser = argparse.ArgumentParser(
        prog="dagsync", description="Mirror s3://BUCKET/PREFIX into a DAG folder, atomically."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ToolkitError as exc:
        print(f"ERROR [{type(exc).__name__}]: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

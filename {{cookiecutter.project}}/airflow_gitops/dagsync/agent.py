"""The S3 DAG sync agent: mirrors s3://BUCKET/PREFIX into a DAG folder, atomically and cheaply.

Layout of DEST (an emptyDir shared with Airflow, which reads DEST/current)::

    DEST/current -> snapshots/20261127T001500-1a2b3c   relative symlink, swapped with rename(2)
    DEST/snapshots/<name>/...                          complete, immutable copies of the prefix
    DEST/snapshots/<name>/.dagsync-manifest.json       relpath -> ETag and size of each file
    DEST/.heartbeat                                    JSON: time of the last successful cycle

A cycle lists the prefix (one ListObjectsV2 request per 1,000 objects) and compares ETag and
size with the manifest held in memory. Nothing changed: the cycle ends there (no GET, no disk
work beyond the heartbeat). Something changed: a new snapshot is built beside the published
one, downloading only new or changed objects in parallel and hard-linking the rest from the
previous snapshot (when many files are missing, as on a cold start, push-dags' bundle
PREFIX/.dagsync/bundle.tar.gz is streamed first: one GET instead of hundreds, each member
checked against the listing's ETag and size); it is renamed into place, the `current` symlink is replaced by rename(2),
and older snapshots are removed. A reader resolves `current` once per path, so it sees either
the old snapshot or the new one, never half a file nor a mix of the two.

Safety: files are deleted (left out of the next snapshot) only after a complete, successful
listing; any S3, auth or network error ends the cycle with the published snapshot untouched;
a listing that would delete more than --max-delete-fraction (default 0.5) of the files held is
refused until the fraction is raised.

Exit codes: 0 done (or stopped by SIGTERM/SIGINT), 1 sync failed (--once), 2 bad usage,
3 the shrink guard refused the listing (--once), 4 heartbeat missing or too old
(--check-heartbeat).

Runs without stack.yaml: every flag has an environment variable (DAGSYNC_BUCKET, ...), so the
container image needs only ``python -m airflow_gitops.dagsync [flags]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import tarfile
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_gitops.dagsync import s3
from airflow_gitops.errors import ToolkitError, UsageError

EXIT_OK = 0
EXIT_SYNC_FAILED = 1
EXIT_USAGE = 2
EXIT_GUARD = 3
EXIT_UNHEALTHY = 4

SNAPSHOTS = "snapshots"
CURRENT = "current"
MANIFEST = ".dagsync-manifest.json"
HEARTBEAT = ".heartbeat"
BUILDING = ".building-"  # prefix of a snapshot still being built (never published)
# Use push-dags' bundle (one GET) when at least this many files are missing, as on a cold start.
BUNDLE_MIN_FILES = 20

# After SIGTERM the agent finishes or abandons the request in flight; if that takes longer than
# this, the process exits anyway (the published snapshot is consistent at every instant).
STOP_GRACE_SECONDS = 1.5

log = logging.getLogger("dagsync")


class SyncFailed(ToolkitError):
    """S3 could not be listed or read; the published snapshot was left as it was."""

    exit_code = EXIT_SYNC_FAILED


class ShrinkRefused(ToolkitError):
    """The listing would delete too many of the files held; nothing was changed."""

    exit_code = EXIT_GUARD


@dataclass
class SyncResult:
    changed: bool
    snapshot: str | None
    objects: int
    downloaded: int = 0
    from_bundle: int = 0
    linked: int = 0
    deleted: int = 0
    bytes_downloaded: int = 0
    skipped_keys: int = 0
    seconds: float = 0.0


# --- the DAG folder ---------------------------------------------------------------------------


def _snapshot_name() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{random.getrandbits(24):06x}"


def _link_or_copy(source: Path, target: Path) -> None:
    """Files are never modified in place, so a hard link is as good as a copy (and free)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class DagFolder:
    """DEST: the published snapshot, its manifest and the heartbeat."""

    def __init__(self, dest: Path | str) -> None:
        self.dest = Path(dest)
        self.snapshots = self.dest / SNAPSHOTS
        self.current = self.dest / CURRENT

    def prepare(self) -> None:
        """Create DEST; remove leftovers of an interrupted run (anything not published)."""
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--dest {self.dest}: cannot create it ({exc.strerror})") from None
        if self.current.exists() and not self.current.is_symlink():
            raise UsageError(
                f"--dest {self.dest}: {self.current} is a real folder, not our symlink; "
                "point --dest at an empty folder"
            )
        published = self.published_name()
        for entry in self.snapshots.iterdir():
            if entry.name != published:
                shutil.rmtree(entry, ignore_errors=True)
        (self.dest / f".{CURRENT}.tmp").unlink(missing_ok=True)

    def published_name(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        return Path(target).name

    def load_manifest(self) -> dict[str, tuple[str, int]]:
        name = self.published_name()
        if name is None:
            return {}
        try:
            data = json.loads((self.snapshots / name / MANIFEST).read_text(encoding="utf-8"))
            return {path: (entry["etag"], entry["size"]) for path, entry in data.items()}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # unknown state: the next cycle downloads everything once

    def publish(self, building: Path, name: str) -> None:
        """Rename the finished snapshot into place, then swap `current` with one rename(2)."""
        final = self.snapshots / name
        os.rename(building, final)
        tmp_link = self.dest / f".{CURRENT}.tmp"
        tmp_link.unlink(missing_ok=True)
        os.symlink(f"{SNAPSHOTS}/{name}", tmp_link)
        os.replace(tmp_link, self.current)

    def remove_old_snapshots(self, keep: set[str]) -> None:
        """Keep the published snapshot and the one before it (a reader may still be walking it)."""
        for entry in self.snapshots.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    def write_heartbeat(self, result: SyncResult) -> None:
        now = time.time()
        beat = {
            "last_success": datetime.fromtimestamp(now, timezone.utc).isoformat(),
            "last_success_unix": round(now, 3),
            "snapshot": result.snapshot,
            "objects": result.objects,
        }
        tmp = self.dest / f"{HEARTBEAT}.tmp"
        tmp.write_text(json.dumps(beat) + "\n", encoding="utf-8")
        os.replace(tmp, self.dest / HEARTBEAT)


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
    ) -> None:
        self.client = client
        self.use_bundle = use_bundle
        self.bucket = bucket
        self.prefix = s3.normalize_prefix(prefix)
        self.folder = DagFolder(dest)
        self.workers = workers
        self.max_delete_fraction = max_delete_fraction
        self.stop = stop or threading.Event()
        self.folder.prepare()
        self.published = self.folder.published_name()
        self.manifest = self.folder.load_manifest()

    def sync_once(self) -> SyncResult:
        started = time.monotonic()
        listing, skipped = self._list()
        listing.pop(MANIFEST, None)  # a key with our manifest's name must not replace it
        bundle = listing.pop(s3.BUNDLE, None)
        for path in [path for path in listing if s3.is_reserved(path)]:
            del listing[path]
        changed = [
            path
            for path, obj in listing.items()
            if path not in self.manifest or not s3.same_content(obj.etag, obj.size, *self.manifest[path])
        ]
        removed = [path for path in self.manifest if path not in listing]
        if self.published and not changed and not removed:
            result = SyncResult(False, self.published, len(listing), skipped_keys=skipped)
            result.seconds = round(time.monotonic() - started, 3)
            self.folder.write_heartbeat(result)
            log.debug("unchanged", extra={"fields": asdict(result)})
            return result
        if self.published and s3.deletion_refused(
            len(self.manifest), len(removed), self.max_delete_fraction
        ):
            raise ShrinkRefused(
                f"s3://{self.bucket}/{self.prefix}: the listing would delete {len(removed)} of "
                f"{len(self.manifest)} files (limit {self.max_delete_fraction:.0%}); kept the "
                "published snapshot. If the deletion is intended, raise --max-delete-fraction."
            )
        result = self._build_and_publish(listing, changed, removed, bundle)
        result.skipped_keys = skipped
        result.seconds = round(time.monotonic() - started, 3)
        self.folder.write_heartbeat(result)
        log.info("published", extra={"fields": asdict(result)})
        return result

    def _list(self) -> tuple[dict[str, s3.RemoteObject], int]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return s3.list_objects(self.client, self.bucket, self.prefix)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise SyncFailed(
                f"s3://{self.bucket}/{self.prefix}: listing failed: "
                f"{error.get('Code', '?')} {error.get('Message', '')}".rstrip()
            ) from None
        except BotoCoreError as exc:
            raise SyncFailed(f"s3://{self.bucket}/{self.prefix}: listing failed: {exc}") from None

    def _build_and_publish(self, listing, changed, removed, bundle) -> SyncResult:
        from botocore.exceptions import BotoCoreError, ClientError

        name = _snapshot_name()
        building = self.folder.snapshots / f"{BUILDING}{name}"
        previous = self.folder.snapshots / self.published if self.published else None
        changed_set = set(changed)
        try:
            building.mkdir()
            for directory in {Path(path).parent for path in listing} - {Path(".")}:
                (building / directory).mkdir(parents=True, exist_ok=True)
            linked = 0
            for path in listing:
                if path in changed_set:
                    continue
                source = previous / path
                if source.is_file():
                    _link_or_copy(source, building / path)
                    linked += 1
                else:  # someone removed it under us: fetch it again
                    changed_set.add(path)
            to_fetch = sorted(changed_set)
            unbundled = {}
            if bundle is not None and self._bundle_pays_off(listing, to_fetch):
                unbundled = self._fetch_from_bundle(bundle, {p: listing[p] for p in to_fetch}, building)
            to_get = [path for path in to_fetch if path not in unbundled]
            fetched = s3.run_parallel(
                lambda path: self._download(listing[path], building / path),
                to_get,
                self.workers,
                self.stop,
            )
            # Record what was actually fetched: an object replaced between LIST and GET is then
            # seen as changed again by the next cycle.
            manifest = {path: (obj.etag, obj.size) for path, obj in listing.items()}
            manifest.update(unbundled)
            manifest.update(zip(to_get, fetched))
            (building / MANIFEST).write_text(
                json.dumps({p: {"etag": e, "size": s} for p, (e, s) in sorted(manifest.items())}),
                encoding="utf-8",
            )
            self.folder.publish(building, name)
        except BaseException as exc:
            shutil.rmtree(building, ignore_errors=True)
            if isinstance(exc, ClientError):
                error = exc.response.get("Error", {})
                raise SyncFailed(
                    f"s3://{self.bucket}/{self.prefix}: download failed: "
                    f"{error.get('Code', '?')} {error.get('Message', '')}".rstrip()
                ) from None
            if isinstance(exc, (BotoCoreError, OSError)):
                raise SyncFailed(f"s3://{self.bucket}/{self.prefix}: download failed: {exc}") from None
            raise
        keep = {name} | ({self.published} if self.published else set())
        self.folder.remove_old_snapshots(keep)
        self.published, self.manifest = name, manifest
        return SyncResult(
            changed=True,
            snapshot=name,
            objects=len(listing),
            downloaded=len(fetched) + len(unbundled),
            from_bundle=len(unbundled),
            linked=linked,
            deleted=len(removed),
            bytes_downloaded=sum(size for _, size in [*fetched, *unbundled.values()]),
        )

    def _bundle_pays_off(self, listing, to_fetch) -> bool:
        """One GET of the bundle instead of many, unless it would carry mostly unneeded bytes."""
        if not self.use_bundle or len(to_fetch) < BUNDLE_MIN_FILES:
            return False
        wanted = sum(listing[path].size for path in to_fetch)
        return wanted * 2 >= sum(obj.size for obj in listing.values())

    def _fetch_from_bundle(self, bundle, wanted, building) -> dict[str, tuple[str, int]]:
        """Stream the bundle (no temporary file) and keep every member that matches the listing.

        A member is written only when its path is one we want and its size and MD5 equal the
        listed object's; everything else (stale, foreign, multipart ETags) is left to the
        per-object GETs. Any failure here only means more GETs.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        written: dict[str, tuple[str, int]] = {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=bundle.key)
            with tarfile.open(fileobj=response["Body"], mode="r|gz") as archive:
                for member in archive:
                    if self.stop.is_set():
                        raise s3.Interrupted()
                    obj = wanted.get(member.name)
                    if obj is None or not member.isreg() or member.size != obj.size:
                        continue
                    data = archive.extractfile(member).read()
                    if s3.md5_hex(data) != obj.etag:
                        continue
                    (building / member.name).write_bytes(data)
                    written[member.name] = (obj.etag, obj.size)
        except (BotoCoreError, ClientError, tarfile.TarError, EOFError, zlib.error) as exc:
            log.warning("bundle_unusable", extra={"fields": {"reason": str(exc), "used": len(written)}})
        return written

    def _download(self, obj: s3.RemoteObject, target: Path) -> tuple[str, int]:
        """GET one object into ``target`` (inside an unpublished snapshot); verify its bytes."""
        response = self.client.get_object(Bucket=self.bucket, Key=obj.key)
        etag = response["ETag"].strip('"')
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        with open(target, "wb") as handle:
            for chunk in response["Body"].iter_chunks(1 << 16):
                digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
        if size != response["ContentLength"] or ("-" not in etag and digest.hexdigest() != etag):
            raise SyncFailed(f"s3://{self.bucket}/{obj.key}: downloaded bytes do not match ETag {etag}")
        return etag, size


def sync_into(
    dest: Path | str,
    bucket: str,
    prefix: str,
    session: Any = None,
    workers: int = s3.DEFAULT_WORKERS,
    max_delete_fraction: float = s3.DEFAULT_MAX_DELETE_FRACTION,
    use_bundle: bool = True,
) -> SyncResult:
    """One complete sync of s3://bucket/prefix into ``dest`` (what `pull-dags` runs)."""
    client = s3.make_s3_client(session, workers)
    return SyncAgent(
        client, bucket, prefix, dest, workers, max_delete_fraction, use_bundle=use_bundle
    ).sync_once()


# --- the loop ---------------------------------------------------------------------------------


def run_loop(agent: SyncAgent, interval: float, jitter: float) -> int:
    """Sync every ``interval`` seconds (+/- jitter) until ``agent.stop`` is set."""
    failures = 0
    while not agent.stop.is_set():
        delay = interval
        try:
            agent.sync_once()
            failures = 0
        except s3.Interrupted:
            break
        except ShrinkRefused as exc:
            log.error("refused", extra={"fields": {"reason": str(exc)}})
        except SyncFailed as exc:
            failures += 1
            # Retry sooner than the interval at first (1, 2, 4 ... s), never faster than that.
            delay = min(interval, 2.0 ** (failures - 1))
            log.error("sync_failed", extra={"fields": {"reason": str(exc), "failures": failures}})
        except Exception as exc:  # a bug must not kill the sidecar: the snapshot stays served
            failures += 1
            delay = min(interval, 2.0 ** (failures - 1))
            log.exception("sync_crashed", extra={"fields": {"reason": repr(exc)}})
        agent.stop.wait(delay * (1 + random.uniform(-jitter, jitter)))
    log.info("stopped", extra={"fields": {}})
    return EXIT_OK


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT: stop after the request in flight; exit hard if that takes too long."""

    def handle(signum, _frame):
        if stop.is_set():
            return
        stop.set()
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        timer = threading.Timer(STOP_GRACE_SECONDS, os._exit, args=(EXIT_OK,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


# --- JSON lines -------------------------------------------------------------------------------


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, event, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
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


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(f"DAGSYNC_{name}", default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", default=_env("BUCKET"), help="S3 bucket [DAGSYNC_BUCKET]")
    parser.add_argument(
        "--prefix", default=_env("PREFIX", ""), help="key prefix to mirror [DAGSYNC_PREFIX]"
    )
    parser.add_argument(
        "--dest", default=_env("DEST"), help="DAG folder; Airflow reads DEST/current [DAGSYNC_DEST]"
    )
    parser.add_argument(
        "--interval", type=float, default=float(_env("INTERVAL", 30)),
        help="seconds between cycles (default 30) [DAGSYNC_INTERVAL]",
    )
    parser.add_argument(
        "--jitter", type=float, default=float(_env("JITTER", 0.1)),
        help="random +/- fraction of the interval, so pods do not list in step (default 0.1)",
    )
    parser.add_argument(
        "--once", action="store_true", default=_env("ONCE", "") in ("1", "true"),
        help="one sync, then exit (init containers) [DAGSYNC_ONCE=1]",
    )
    parser.add_argument(
        "--workers", type=int, default=int(_env("WORKERS", s3.DEFAULT_WORKERS)),
        help=f"parallel downloads (default {s3.DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--max-delete-fraction", type=float,
        default=float(_env("MAX_DELETE_FRACTION", s3.DEFAULT_MAX_DELETE_FRACTION)),
        help="refuse a listing that would delete more than this fraction of the files held "
        "(default 0.5; 1 disables the guard) [DAGSYNC_MAX_DELETE_FRACTION]",
    )
    parser.add_argument(
        "--no-bundle", dest="use_bundle", action="store_false",
        default=_env("BUNDLE", "1") not in ("0", "false"),
        help="never use push-dags' bundle; one GET per file [DAGSYNC_BUNDLE=0]",
    )
    parser.add_argument(
        "--check-heartbeat", action="store_true",
        help="probe mode: exit 0 when the last successful sync is at most --max-age old, else 4",
    )
    parser.add_argument(
        "--max-age", type=float, default=float(_env("MAX_AGE", 300)),
        help="seconds, for --check-heartbeat (default 300) [DAGSYNC_MAX_AGE]",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])


def _validate(args: argparse.Namespace) -> None:
    if not args.dest:
        raise UsageError("--dest: missing; give the DAG folder (or DAGSYNC_DEST)")
    if args.check_heartbeat:
        return
    if not args.bucket:
        raise UsageError("--bucket: missing; give the DAG bucket (or DAGSYNC_BUCKET)")
    if args.interval <= 0:
        raise UsageError(f"--interval: {args.interval:g} is not allowed; use seconds > 0")
    if not 0 <= args.jitter < 1:
        raise UsageError(f"--jitter: {args.jitter:g} is not allowed; use 0 <= jitter < 1")
    if not 0 <= args.max_delete_fraction <= 1:
        raise UsageError(
            f"--max-delete-fraction: {args.max_delete_fraction:g} is not allowed; use 0..1"
        )
    if not 1 <= args.workers <= 64:
        raise UsageError(f"--workers: {args.workers} is not allowed; use 1..64")


def run(args: argparse.Namespace, session: Any = None) -> int:
    _validate(args)
    if args.check_heartbeat:
        healthy, reason = check_heartbeat(args.dest, args.max_age)
        print(("OK: " if healthy else "UNHEALTHY: ") + reason, file=sys.stdout if healthy else sys.stderr)
        return EXIT_OK if healthy else EXIT_UNHEALTHY
    setup_json_logging(args.log_level)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_handlers(stop)
    client = s3.make_s3_client(session, args.workers)
    agent = SyncAgent(
        client, args.bucket, args.prefix, args.dest, args.workers, args.max_delete_fraction, stop,
        use_bundle=args.use_bundle,
    )
    log.info("started", extra={"fields": {
        "bucket": args.bucket, "prefix": agent.prefix, "dest": str(args.dest),
        "once": args.once, "interval": args.interval, "snapshot": agent.published,
    }})
    if not args.once:
        return run_loop(agent, args.interval, args.jitter)
    try:
        agent.sync_once()
    except s3.Interrupted:
        log.info("stopped", extra={"fields": {}})
    except ToolkitError as exc:
        log.error("sync_failed", extra={"fields": {"reason": str(exc)}})
        return exc.exit_code
    return EXIT_OK


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

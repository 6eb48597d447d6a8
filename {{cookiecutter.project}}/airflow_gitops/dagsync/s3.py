"""What the sync agent and push-dags share: S3 client, listing, key <-> path, change test, pool.

Keys under the prefix map one-to-one to relative POSIX paths: ``<prefix>/<relpath>``. A key that
cannot be a safe relative path (``..``, empty segments, a leading ``/``) is skipped, so a hostile
or careless key can never write outside the DAG folder.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import threading
import xml.etree.ElementTree as ElementTree
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, NamedTuple

# Enough parallel requests to hide S3 latency for thousands of small files, few enough to stay
# polite on a 2-core node and within botocore's connection pool (sized to match).
DEFAULT_WORKERS = 16

# Refuse to delete more than this fraction of the files we hold, unless told otherwise: a
# listing that suddenly lost most objects is far more likely a mistake (wrong prefix, a bad
# push, a half-broken bucket) than a real change. Shared by the agent and push-dags.
DEFAULT_MAX_DELETE_FRACTION = 0.5


# Reserved folder under the prefix, never mirrored into the DAG folder. push-dags keeps there a
# gzipped tar of every file (BUNDLE); an agent that needs many files (a cold start: every init
# container of a task pod) streams it with one GET instead of one GET per file, and still checks
# every file against the listing's ETag and size (stale or foreign entries are fetched one by one).
RESERVED_DIR = ".dagsync"
BUNDLE = f"{RESERVED_DIR}/bundle.tar.gz"


class RemoteObject(NamedTuple):
    key: str
    etag: str  # without quotes; an MD5 hex digest unless the object was uploaded in parts
    size: int


class Interrupted(Exception):
    """The caller asked us to stop (SIGTERM) before the work was complete."""


def normalize_prefix(prefix: str) -> str:
    """``"/dags/"`` -> ``"dags"``; the empty prefix means the whole bucket."""
    return prefix.strip("/")


def key_for(prefix: str, relpath: str) -> str:
    prefix = normalize_prefix(prefix)
    return f"{prefix}/{relpath}" if prefix else relpath


def relpath_for(prefix: str, key: str) -> str | None:
    """The relative path of ``key`` under ``prefix``, or None when it is not a safe file path."""
    prefix = normalize_prefix(prefix)
    if prefix:
        if not key.startswith(prefix + "/"):
            return None
        key = key[len(prefix) + 1 :]
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") for part in parts) or "\\" in key or "\0" in key:
        return None  # folder markers ("x/"), traversal, Windows separators
    return key


def is_reserved(relpath: str) -> bool:
    return relpath == RESERVED_DIR or relpath.startswith(RESERVED_DIR + "/")


def build_bundle(files: dict[str, bytes]) -> bytes:
    """A reproducible tar.gz of ``{relpath: content}``: same files, same bytes, same ETag."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for relpath in sorted(files):
                info = tarfile.TarInfo(relpath)
                info.size, info.mode = len(files[relpath]), 0o644
                archive.addfile(info, io.BytesIO(files[relpath]))
    return raw.getvalue()


_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)


def _lean_list_objects_v2(response_dict, customized_response_dict, **_):
    """Parse ListObjectsV2's <Contents> here, keeping only Key, ETag and Size.

    botocore's generic parser spends most of an idle cycle's CPU on 1,000 entries (timestamps
    above all). The entries we parse are handed to botocore as ``customized_response_dict`` and
    removed from the body it parses; the rest (continuation token, URL-decoding of keys, errors,
    retries) stays botocore's.
    """
    if response_dict.get("status_code", 500) >= 300:
        return
    body = response_dict["body"]
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return  # not what we expect: botocore parses it (and raises what it raises)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    customized_response_dict["Contents"] = [
        {
            "Key": entry.findtext(f"{ns}Key"),
            "ETag": entry.findtext(f"{ns}ETag"),
            "Size": int(entry.findtext(f"{ns}Size")),
        }
        for entry in root.iter(f"{ns}Contents")
    ]
    response_dict["body"] = _CONTENTS.sub(b"", body)


def make_s3_client(session: Any = None, workers: int = DEFAULT_WORKERS, region: str | None = None):
    """One S3 client for the whole process (thread-safe; reuse it, it holds the connection pool).

    ``session`` is injectable (a ``boto3.session.Session``) so tests and callers decide where
    credentials come from. botocore reads AWS_ENDPOINT_URL itself (botocore >= 1.31), which is
    how the tests reach the local moto server. Standard retry mode: a few retries with backoff
    on throttling and transient errors, never forever.
    """
    import boto3
    from botocore.config import Config

    session = session or boto3.session.Session()
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max(workers, 10),
        connect_timeout=5,
        read_timeout=30,
        tcp_keepalive=True,
    )
    client = session.client("s3", region_name=region, config=config)
    # Registered on this client only (each client has its own copy of the event hooks).
    client.meta.events.register("before-parse.s3.ListObjectsV2", _lean_list_objects_v2)
    return client


def list_objects(client, bucket: str, prefix: str) -> tuple[dict[str, RemoteObject], int]:
    """Every object under ``prefix`` as ``{relpath: RemoteObject}``, and the count of skipped keys.

    One ListObjectsV2 request per 1,000 objects (the paginator). Raises on any failed page: a
    partial listing is never returned, because callers delete what is missing from it.
    """
    prefix = normalize_prefix(prefix)
    objects: dict[str, RemoteObject] = {}
    skipped = 0
    paginator = client.get_paginator("list_objects_v2")
    kwargs = {"Bucket": bucket, "Prefix": f"{prefix}/" if prefix else ""}
    for page in paginator.paginate(**kwargs):
        for item in page.get("Contents", ()):
            relpath = relpath_for(prefix, item["Key"])
            if relpath is None:
                if not item["Key"].endswith("/"):  # folder markers are expected, not news
                    skipped += 1
                continue
            objects[relpath] = RemoteObject(item["Key"], item["ETag"].strip('"'), item["Size"])
    return objects, skipped


def same_content(etag: str, size: int, other_etag: str, other_size: int) -> bool:
    """True when two (ETag, size) pairs describe the same bytes."""
    return size == other_size and etag.strip('"') == other_etag.strip('"')


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def file_md5(path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def deletion_refused(held: int, deleting: int, max_fraction: float) -> bool:
    """The shrink guard: True when deleting ``deleting`` of ``held`` files exceeds the limit."""
    return held > 0 and deleting > max_fraction * held


def run_parallel(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int = DEFAULT_WORKERS,
    stop: threading.Event | None = None,
) -> list[Any]:
    """``func(item)`` for every item on a bounded pool; results in item order.

    The first exception cancels what has not started and is raised; so is ``Interrupted`` when
    ``stop`` is set (checked before each item starts, so a SIGTERM is honoured within one
    request's time).
    """
    items = list(items)
    if not items:
        return []

    def guarded(item):
        if stop is not None and stop.is_set():
            raise Interrupted()
        return func(item)

    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="s3") as pool:
        futures = [pool.submit(guarded, item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()
        return [future.result() for future in futures]

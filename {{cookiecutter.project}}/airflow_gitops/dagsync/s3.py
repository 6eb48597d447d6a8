"""What the sync agent and push-dags share: S3 client, manifest, listing, key checks, packs, pool.

Keys under the prefix map one-to-one to relative POSIX paths: ``<prefix>/<relpath>``. A key that
cannot be a safe file path here (``..``, empty segments, a leading ``/``, a name longer than the
file system allows, a file that is also a folder) is skipped and named, never written.

``push-dags`` writes, last, one manifest of the generation it uploaded (MANIFEST_KEY): every
file's size and SHA-256 (also stored as the object's S3 additional checksum) and the packs
(tar.gz of small files) a cold agent may stream instead of one GET per file. An agent reading a
prefix with a manifest publishes only that generation, verified file by file; a prefix written
by other tools (no manifest) is listed instead.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import IO, Any, NamedTuple
from xml.etree import ElementTree

# Enough parallel requests to hide S3 latency for thousands of small files, few enough to stay
# polite on a 2-core node and within botocore's connection pool (sized to match).
DEFAULT_WORKERS = 16

# Refuse to delete more than this fraction of the files we hold, unless told otherwise: a
# listing that suddenly lost most objects is far more likely a mistake (wrong prefix, a bad
# push, a half-broken bucket) than a real change. Shared by the agent and push-dags.
DEFAULT_MAX_DELETE_FRACTION = 0.5

# A hung endpoint must fail a cycle in seconds, not minutes: worst case about
# MAX_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT). READ_TIMEOUT bounds one socket read, not a
# whole download, so large files are not affected.
CONNECT_TIMEOUT = 3
READ_TIMEOUT = 8
MAX_ATTEMPTS = 2

# Reserved folder under the prefix, never mirrored into the DAG folder (push-dags' bookkeeping).
RESERVED_DIR = ".dagsync"
MANIFEST_KEY = f"{RESERVED_DIR}/manifest.json"
PACKS_DIR = f"{RESERVED_DIR}/packs"
MANIFEST_FORMAT = 1

# Files up to PACK_MAX_FILE_BYTES travel in packs as well (a cold start streams a few packs
# instead of one GET per file). Up to a few MiB a GET costs more per request than per byte:
# on benchmarks/s3sync.py's server a 1 MiB GET takes about 1.3 times a 2 KiB one, and on S3
# each waits for its first byte; with 1 MiB files in the packs the cold start of 100 of them
# went from 0.94 to 0.72 s (s5cmd 0.91 s). Larger files (models, data) travel alone: one GET
# each moves them as fast, and packs stay small enough to rebuild. Files land in one of
# PACK_COUNT packs by a hash of their path, so a one-line change rebuilds one pack of
# 1/PACK_COUNT of the packed files.
PACK_MAX_FILE_BYTES = 4 * 1024 * 1024
PACK_COUNT = 16
# gzip level of the packs. benchmarks/s3sync.py --compression measures 1, 6 and 9 on DAG-like
# files: 6 is within a few percent of 9's size at a fraction of its CPU, and level 1 is larger
# for little gain (decompression costs the same at every level).
PACK_COMPRESSLEVEL = 6

NAME_MAX = 255  # bytes per path segment on ext4/xfs/overlayfs (the emptyDir's file system)
PATH_MAX = 4096

# Reads and decompressed pieces of at most 64 KiB: with 16 threads, larger pieces raised the
# peak RSS of a cold start by half (benchmarks/s3sync.py --memory) for no measurable speed.
CHUNK = 1 << 16


class RemoteObject(NamedTuple):
    key: str
    etag: str  # without quotes; an opaque version token (an MD5 only in some cases)
    size: int
    last_modified: str = ""  # ISO 8601 from the listing; orders the two sides of a clash


class FileEntry(NamedTuple):
    """One file of a generation: what the agent must end up with."""

    size: int
    sha256: str | None  # base64, as S3's ChecksumSHA256; None when only a listing is known
    etag: str | None  # the listing's ETag (listing mode): a change token, never a checksum
    pack: int | None = None  # index into Generation.packs


class Pack(NamedTuple):
    key: str
    size: int
    sha256: str


class Generation(NamedTuple):
    """A complete state of the prefix: from push-dags' manifest, or from a listing."""

    files: dict[str, FileEntry]
    packs: list[Pack]
    name: str  # push-dags' generation id, or "listing"
    manifest_etag: str | None  # None: listing mode


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
    return key if unsafe_reason(key) is None else None


def unsafe_reason(relpath: str, name_max: int = NAME_MAX, path_max: int = PATH_MAX) -> str | None:
    """Why ``relpath`` cannot be written below the DAG folder, or None when it can."""
    parts = relpath.split("/")
    if not relpath or any(part in ("", ".", "..") for part in parts):
        return "not a plain relative path (empty, '.' or '..' segment, or a folder marker)"
    if "\\" in relpath or "\0" in relpath:
        return "contains a backslash or NUL"
    if any(len(part.encode("utf-8", "surrogatepass")) > name_max for part in parts):
        return f"a name is longer than {name_max} bytes"
    if len(relpath.encode("utf-8", "surrogatepass")) > path_max:
        return f"the path is longer than {path_max} bytes"
    return None


def is_reserved(relpath: str) -> bool:
    return relpath == RESERVED_DIR or relpath.startswith(RESERVED_DIR + "/")


def file_folder_clashes(paths: Iterable[str]) -> dict[str, list[str]]:
    """``{file: [paths below it]}`` for every path that is also a folder of other paths."""
    paths = set(paths)
    clashes: dict[str, list[str]] = {}
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            if ancestor in paths:
                clashes.setdefault(ancestor, []).append(path)
    return clashes


def pack_index(relpath: str) -> int:
    return zlib.crc32(relpath.encode("utf-8", "surrogatepass")) % PACK_COUNT


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def file_size_and_sha256(path) -> tuple[int, str]:
    """Size and base64 SHA-256 of a file (S3's ChecksumSHA256 format), read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, b64(digest.digest())


def file_sha256(path) -> str:
    return file_size_and_sha256(path)[1]


def chunks_of(handle) -> Iterator[bytes]:
    """A readable file as CHUNK-sized pieces (never the whole file in memory)."""
    while block := handle.read(CHUNK):
        yield block


def stream_to_file(
    chunks: Iterable[bytes], target, expect_md5: bool = False
) -> tuple[int, str, str | None]:
    """Write ``chunks`` to ``target`` while hashing: (size, sha256 base64, md5 hex or None)."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False) if expect_md5 else None
    size = 0
    with open(target, "wb") as handle:
        for chunk in chunks:
            sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
            handle.write(chunk)
            size += len(chunk)
    return size, b64(sha.digest()), md5.hexdigest() if md5 is not None else None


def etag_is_md5(response: dict[str, Any]) -> bool:
    """True only when the object says its ETag is the MD5 of its bytes.

    S3 documents the ETag as the MD5 only for single-part objects stored unencrypted or with
    SSE-S3; SSE-KMS, DSSE-KMS, SSE-C and multipart uploads give other values.
    """
    etag = response.get("ETag", "").strip('"')
    return (
        bool(re.fullmatch(r"[0-9a-f]{32}", etag))
        and response.get("ServerSideEncryption") in (None, "AES256")
        and not response.get("SSECustomerAlgorithm")
    )


# --- packs --------------------------------------------------------------------------------


def pack_identity(members: list[tuple[str, int, str]]) -> str:
    """A name for a pack derived from its members (path, size, sha256): same files, same key."""
    digest = hashlib.sha256()
    for relpath, size, sha in sorted(members):
        digest.update(f"{relpath}\0{size}\0{sha}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def write_pack(files: list[tuple[str, Any]], out: IO[bytes]) -> None:
    """A pack: gzip of the files' bytes, one after the other in path order, read file by file.

    No headers: the manifest holds each member's path and size (and SHA-256), which is all a
    reader needs to cut the stream apart (``read_pack``). Same files, same bytes (mtime 0).
    """
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=PACK_COMPRESSLEVEL) as zipped:
        for _relpath, path in sorted(files, key=lambda item: item[0]):
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    zipped.write(block)


def read_pack(
    chunks: Iterable[bytes], members: list[tuple[str, int]], open_member: Callable[[str], Any]
) -> Iterator[tuple[str, int, str]]:
    """Cut a pack stream into its members (path order, sizes from the manifest), streaming.

    ``open_member(relpath)`` returns a writable file for a wanted member, or None to skip it.
    Yields (relpath, size, sha256 base64) of each member written. Memory stays at one chunk.
    Raises ValueError when the stream is shorter or longer than the members.
    """
    unzip = zlib.decompressobj(wbits=31)  # gzip
    queue = iter(sorted(members))
    current: list = []  # [relpath, remaining, handle, sha, size]

    def start_next() -> bool:
        item = next(queue, None)
        if item is None:
            current.clear()
            return False
        relpath, size = item
        current[:] = [relpath, size, open_member(relpath), hashlib.sha256(), size]
        return True

    def finish():
        relpath, _, handle, sha, size = current
        if handle is not None:
            handle.close()
            return relpath, size, b64(sha.digest())
        return None

    more = start_next()
    done: list = []
    try:
        for chunk in chunks:
            pending = chunk
            while pending:
                # At most CHUNK bytes out per call: text inflates several times, and a whole
                # chunk's worth per thread would be memory for nothing.
                view = memoryview(unzip.decompress(pending, CHUNK))
                pending = unzip.unconsumed_tail
                while more and (view or current[1] == 0):
                    take = view[: current[1]]
                    if take:
                        current[3].update(take)
                        if current[2] is not None:
                            current[2].write(take)
                        current[1] -= len(take)
                        view = view[len(take) :]
                    if current[1] == 0:
                        written = finish()
                        if written:
                            done.append(written)
                        more = start_next()
                if view:
                    raise ValueError("the pack is longer than its members")
            yield from done
            done.clear()
        while more and current[1] == 0:  # trailing empty files
            written = finish()
            if written:
                yield written
            more = start_next()
        if more or not unzip.eof:
            raise ValueError("the pack is shorter than its members")
    finally:
        if current and current[2] is not None and not current[2].closed:
            current[2].close()  # a member cut short: its caller fetches it on its own


# --- the manifest -------------------------------------------------------------------------


def dump_manifest(generation: str, files: dict[str, FileEntry], packs: list[Pack]) -> bytes:
    return json.dumps(
        {
            "format": MANIFEST_FORMAT,
            "generation": generation,
            "files": {p: [e.size, e.sha256, e.pack] for p, e in sorted(files.items())},
            "packs": [[p.key, p.size, p.sha256] for p in packs],
        },
        separators=(",", ":"),
    ).encode("utf-8")


def parse_manifest(data: bytes, etag: str) -> Generation:
    """A generation from manifest bytes; ValueError when it is not one of ours."""
    try:
        doc = json.loads(data)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {MANIFEST_FORMAT}")
        packs = [Pack(str(k), int(s), str(h)) for k, s, h in doc["packs"]]
        files = {
            str(p): FileEntry(int(s), str(h), None, None if i is None else int(i))
            for p, (s, h, i) in doc["files"].items()
        }
        if any(e.pack is not None and not 0 <= e.pack < len(packs) for e in files.values()):
            raise ValueError("a file names a pack that is not listed")
        return Generation(files, packs, str(doc["generation"]), etag)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed ({exc!r})") from None


# --- S3 -----------------------------------------------------------------------------------


_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.DOTALL)


def _lean_list_objects_v2(response_dict, customized_response_dict, **_):
    """Parse ListObjectsV2's <Contents> here, keeping only Key, ETag, Size and LastModified.

    botocore's generic parser spends most of a listing's CPU on 1,000 entries (timestamps above
    all). The entries we parse are handed to botocore as ``customized_response_dict`` and
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
            "LastModified": entry.findtext(f"{ns}LastModified") or "",
        }
        for entry in root.iter(f"{ns}Contents")
    ]
    response_dict["body"] = _CONTENTS.sub(b"", body)


def _check_services_on_demand(session) -> None:
    """Give ``session`` a data loader that looks up only the service it is asked for.

    botocore's ``Loader.load_service_model`` asks ``name in list_available_services(type)``, and
    that list walks every service folder of botocore/data (about 450 folders, each listed; twice
    per S3 client: its model and its endpoint rules): about 17 ms of every start here, and a disk
    read per folder in a fresh container. The loader below answers ``in`` from the one folder
    asked about, with botocore's own test (a version folder holding that type); anything else
    (iterating, ``len``) gets botocore's full list, so a botocore that uses the list in another
    way is slower, never wrong. Its search paths are the session's loader's (AWS_DATA_PATH too).
    """
    import botocore.loaders

    class KnownServices:
        def __init__(self, loader: botocore.loaders.Loader, type_name: str) -> None:
            self.loader, self.type_name = loader, type_name

        def __contains__(self, name: object) -> bool:
            if not isinstance(name, str) or not name or name in (".", "..") or os.sep in name:
                return name in self.full()
            exists = self.loader.file_loader.exists
            for root in self.loader.search_paths:
                folder = os.path.join(root, name)
                if os.path.isdir(folder) and any(
                    exists(os.path.join(folder, version, self.type_name))
                    for version in os.listdir(folder)
                ):
                    return True
            return False

        def full(self) -> list[str]:
            return botocore.loaders.Loader.list_available_services(self.loader, self.type_name)

        def __iter__(self) -> Iterator[str]:
            return iter(self.full())

        def __len__(self) -> int:
            return len(self.full())

    class OnDemandLoader(botocore.loaders.Loader):
        def list_available_services(self, type_name):
            return KnownServices(self, type_name)

    paths = session.get_component("data_loader").search_paths
    loader = OnDemandLoader(extra_search_paths=list(paths), include_default_search_paths=False)
    session.register_component("data_loader", loader)


def make_s3_client(session: Any = None, workers: int = DEFAULT_WORKERS, region: str | None = None):
    """One S3 client for the whole process (thread-safe; reuse it, it holds the connection pool).

    ``session`` is injectable (a ``boto3.session.Session`` or a ``botocore.session.Session``) so
    tests and callers decide where credentials come from. Without one, a plain botocore session:
    the agent never imports boto3, whose import (s3transfer and what it pulls in) cost about a
    sixth of the agent's start-up, for nothing it calls (benchmarks/s3sync.py --startup). botocore
    reads AWS_ENDPOINT_URL itself (botocore >= 1.31), which is how the tests reach the local
    moto server. That own session also skips botocore's walk of every service folder
    (``_check_services_on_demand``); an injected session is left as it is. Short timeouts and
    few retries: see CONNECT_TIMEOUT.
    """
    import botocore.session
    from botocore.config import Config

    if session is None:
        session = botocore.session.get_session()
        _check_services_on_demand(session)
    config = Config(
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        max_pool_connections=max(workers, 10),
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        tcp_keepalive=True,
        # Checksums only where we ask for them (push-dags sends SHA-256; the agent checks it).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # boto3 sessions name it client(), botocore's create_client(); same arguments.
    create = session.client if hasattr(session, "client") else session.create_client
    client = create("s3", region_name=region, config=config)
    # Registered on this client only (each client has its own copy of the event hooks).
    client.meta.events.register("before-parse.s3.ListObjectsV2", _lean_list_objects_v2)
    return client


def list_objects(
    client, bucket: str, prefix: str
) -> tuple[dict[str, RemoteObject], dict[str, str]]:
    """Every object under ``prefix``: ``{relpath: RemoteObject}`` and ``{bad key: reason}``.

    One ListObjectsV2 request per 1,000 objects (the paginator). Raises on any failed page: a
    partial listing is never returned, because callers delete what is missing from it.
    """
    prefix = normalize_prefix(prefix)
    objects: dict[str, RemoteObject] = {}
    skipped: dict[str, str] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for item in page.get("Contents", ()):
            key = item["Key"]
            relpath = key[len(prefix) + 1 :] if prefix else key
            if key.endswith("/"):
                continue  # folder markers are expected, not news
            reason = unsafe_reason(relpath)
            if reason:
                skipped[key] = reason
                continue
            last = item.get("LastModified", "")
            objects[relpath] = RemoteObject(
                key,
                item["ETag"].strip('"'),
                item["Size"],
                last if isinstance(last, str) else last.isoformat(),
            )
    return objects, skipped


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


def deletion_refused(held: int, deleting: int, max_fraction: float) -> bool:
    """The shrink guard: True when deleting ``deleting`` of ``held`` files exceeds the limit."""
    return held > 0 and deleting > max_fraction * held

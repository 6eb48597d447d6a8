"""The tags of this repo's own images: a digest of exactly the files each is built from.

One function, ``source_tag(root, dockerfile)``, gives the tag of any of them: the s3-sync image
(``sync_image_tag``) and the Airflow image (``airflow_image_tag``, image/Dockerfile). The build
workflows push that tag and ``render`` writes it into the values the deployment runs, so the
two can never disagree and a change rolls out with no hand edit. The sources are read from the
Dockerfile itself (its COPY and ADD lines, relative to the build context, the repository root),
so there is no second list to keep in step.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from airflow_gitops.errors import ToolkitError

DOCKERFILE = Path("images/s3-sync/Dockerfile")
AIRFLOW_DOCKERFILE = Path("image/Dockerfile")
DOCKERFILES = {"s3-sync": DOCKERFILE, "airflow": AIRFLOW_DOCKERFILE}
TAG_PREFIX = "src-"
DIGEST_CHARS = 16
# Build debris that never reaches the image (and differs between machines).
IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}


def add_arguments(parser) -> None:
    parser.add_argument(
        "--sources", action="store_true", help="list the files the digest covers, then the tag"
    )
    parser.add_argument(
        "--image",
        choices=sorted(DOCKERFILES),
        default="s3-sync",
        help="which image (default: s3-sync)",
    )


def run(args) -> int:
    dockerfile = DOCKERFILES[args.image]
    if args.sources:
        for path in image_sources(dockerfile=dockerfile):
            print(path.as_posix())
    print(source_tag(dockerfile=dockerfile))
    return 0


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines with backslash continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def copy_sources(dockerfile_text: str, dockerfile: Path = DOCKERFILE) -> list[str]:
    """Source paths of every COPY/ADD that reads the build context (not ``--from=`` a stage)."""
    sources: list[str] = []
    for line in _logical_lines(dockerfile_text):
        instruction, _, rest = line.partition(" ")
        if instruction.upper() not in {"COPY", "ADD"}:
            continue
        rest = rest.strip()
        words: list[str] = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            rest = rest.strip()
            if flag.startswith("--from"):
                words = []
                rest = ""
                break
        if not rest:
            continue
        if rest.startswith("["):
            try:
                words = json.loads(rest)
            except json.JSONDecodeError:
                raise ToolkitError(f"{dockerfile}: cannot parse {line!r}") from None
        else:
            words = shlex.split(rest)
        sources.extend(words[:-1])  # the last word is the destination
    return sources


def repo_root(root: Path | str | None) -> Path:
    """``root``, or this repo's. stack.py is imported only then: the bake's post_gen hook
    passes its root and imports this module alone (a bake is mostly Jinja and imports)."""
    if root:
        return Path(root)
    from airflow_gitops.stack import REPO_ROOT

    return REPO_ROOT


def image_sources(root: Path | str | None = None, dockerfile: Path = DOCKERFILE) -> list[Path]:
    """Every file (relative to ``root``) whose bytes end up in the image, Dockerfile included."""
    root = repo_root(root)
    try:
        text = (root / dockerfile).read_text(encoding="utf-8")
    except FileNotFoundError:
        why = (
            "the s3-sync image is built only with sync_image own-image"
            if dockerfile == DOCKERFILE
            else "it is generated with the repo"
        )
        raise ToolkitError(f"{root / dockerfile}: not found; {why}") from None
    files = {dockerfile}
    # BuildKit's per-Dockerfile ignore file shapes the context the COPY lines read.
    dockerignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if (root / dockerignore).is_file():
        files.add(dockerignore)
    for source in copy_sources(text, dockerfile):
        if "://" in source:
            raise ToolkitError(f"{dockerfile}: remote source {source!r}; pin it by digest instead")
        matches = sorted(root.glob(source)) if any(c in source for c in "*?[") else [root / source]
        if not matches or not all(m.exists() for m in matches):
            raise ToolkitError(f"{dockerfile}: COPY source {source!r} does not exist under {root}")
        for match in matches:
            candidates = [match] if match.is_file() else sorted(match.rglob("*"))
            for path in candidates:
                rel = path.relative_to(root)
                if path.is_file() and not (
                    IGNORED_PARTS.intersection(rel.parts) or path.suffix in IGNORED_SUFFIXES
                ):
                    files.add(rel)
    return sorted(files, key=lambda p: p.as_posix())


def sync_image_tag(root: Path | str | None = None) -> str:
    return source_tag(root, DOCKERFILE)


def airflow_image_tag(root: Path | str | None = None) -> str:
    return source_tag(root, AIRFLOW_DOCKERFILE)


def source_tag(root: Path | str | None = None, dockerfile: Path = DOCKERFILE) -> str:
    """``src-<digest>``: sha256 over the path and content of every image source file."""
    root = repo_root(root)
    digest = hashlib.sha256()
    for rel in image_sources(root, dockerfile):
        content = (root / rel).read_bytes()
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(content).hexdigest().encode() + b"\n")
    return TAG_PREFIX + digest.hexdigest()[:DIGEST_CHARS]

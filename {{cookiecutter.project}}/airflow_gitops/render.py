"""``render``: the deploy-time copies of helm/values.yaml and k8s/, with the two facts that
only exist at deploy time filled in.

- build/values.yaml: helm/values.yaml with the tag of the s3-sync image (own-image option)
  replaced by the digest of its sources (``image_tag.sync_image_tag``), the tag that
  build-sync-image.yml pushes. Committed values never carry a tag, so nobody edits one by hand.
- build/values.yaml also runs this repo's own Airflow image when image/ adds packages or
  plugins (``airflow_image.builds_own_image``): ``images.airflow.repository`` and ``tag`` (the
  digest of image/'s sources, ``image_tag.airflow_image_tag``, which build-airflow-image.yml
  pushes) are set under ``images.airflow``. Otherwise the stock image of helm/values.yaml runs.
- build/k8s/: the manifests of k8s/, with an empty ``parameters.fileSystemId`` of the EFS
  StorageClass filled from ``elasticfilesystem:DescribeFileSystems`` by the creation token in
  stack.yaml (efs mode; `make apply` creates that file system).

Everything is rendered in memory first; the outputs are replaced only when all of it worked.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from airflow_gitops.errors import ToolkitError, UsageError
from airflow_gitops.image_tag import airflow_image_tag, sync_image_tag
from airflow_gitops.stack import (
    ENVIRONMENTS_DIR,
    REPO_ROOT,
    choose_environment,
    load_stack,
    read_filled,
    read_stack,
)

EFS_PROVISIONER = "efs.csi.aws.com"
# The environment's values overlay, beside values.yaml; helm reads it second (helm.values_files).
OVERLAY_FILE = "environment-values.yaml"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="build", help="output folder (default: build)")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="no AWS calls: leave an empty EFS fileSystemId empty (pull request previews)",
    )


def run(args) -> int:
    root = REPO_ROOT
    written = render(root, root / args.out, offline=args.offline)
    for path in written:
        print(f"rendered {path}")
    return 0


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, anchors and key order survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def sync_image_repository(stack: dict[str, Any]) -> str | None:
    """``<registry>/<repository>`` of our own s3-sync image, or None when this mode has none."""
    dags = stack.get("dags") or {}
    if dags.get("source") != "s3-sync" or dags.get("sync_image") != "own-image":
        return None
    aws, images = stack.get("aws") or {}, stack.get("images") or {}
    try:
        return (
            f"{aws['account_id']}.dkr.ecr.{aws['region']}.amazonaws.com/"
            f"{images['s3_sync_repository']}"
        )
    except KeyError as exc:
        raise UsageError(f"stack.yaml: missing {exc.args[0]!r}; run `make validate`") from None


def _walk(node: Any) -> Iterator[dict]:
    """Every mapping in a YAML tree (an aliased mapping is visited once per reference)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def sync_images_in(values: Any, repository: str) -> set[str]:
    """Every ``image:`` value of the form ``<repository>:<tag>`` in the values tree."""
    return {
        mapping["image"]
        for mapping in _walk(values)
        if isinstance(mapping.get("image"), str)
        and mapping["image"].rpartition(":")[0] == repository
    }


def render_values(root: Path, stack: dict[str, Any]) -> str:
    """helm/values.yaml with the s3-sync image tag set to the digest of the image's sources.

    The images are found by parsing; the tag is then replaced in the text, so comments,
    anchors and layout stay byte for byte what the reviewer saw in helm/values.yaml.
    """
    import yaml

    source = root / "helm" / "values.yaml"
    text = pin_airflow_image(root, stack, read_filled(source, stack))
    repository = sync_image_repository(stack)
    if repository is None:
        return text
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML ({exc}); run `make validate`") from None
    images = sync_images_in(values, repository)
    if not images:
        raise ToolkitError(
            f"{source}: no container uses image {repository}:<tag>; "
            "the s3-sync containers must name the repository from stack.yaml"
        )
    pinned = f"{repository}:{sync_image_tag(root)}"
    for image in images:
        text = text.replace(image, pinned)
    return text


AIRFLOW_IMAGE_BLOCK = "images:\n  airflow:\n"


def pin_airflow_image(root: Path, stack: dict[str, Any], text: str) -> str:
    """``text`` (helm/values.yaml) running this repo's own Airflow image when image/ adds
    something; unchanged otherwise. Inserted as the first keys of the top-level
    ``images.airflow`` block, so the rest of the file stays byte for byte."""
    from airflow_gitops.airflow_image import builds_own_image, own_image_repository

    if not builds_own_image(root):
        return text
    if text.count(AIRFLOW_IMAGE_BLOCK) != 1 or not (
        text.startswith(AIRFLOW_IMAGE_BLOCK) or f"\n{AIRFLOW_IMAGE_BLOCK}" in text
    ):
        raise ToolkitError(
            "helm/values.yaml: no top-level `images:` block starting with `airflow:`; "
            "image/ adds packages or plugins, so the values must run the own Airflow image"
        )
    pinned = (
        f"{AIRFLOW_IMAGE_BLOCK}    # This repo's own image (image/), set by `render`.\n"
        f"    repository: {own_image_repository(stack)}\n"
        f"    tag: {airflow_image_tag(root)}\n"
    )
    return text.replace(AIRFLOW_IMAGE_BLOCK, pinned, 1)


def _efs_storage_classes(documents: list[Any]) -> list[dict]:
    return [
        doc
        for doc in documents
        if isinstance(doc, dict)
        and doc.get("kind") == "StorageClass"
        and doc.get("provisioner") == EFS_PROVISIONER
        and not (doc.get("parameters") or {}).get("fileSystemId")
    ]


def find_file_system_id(stack: dict[str, Any], session=None) -> str:
    """The id of the EFS file system created with stack.yaml's creation token."""
    token = ((stack.get("dags") or {}).get("efs") or {}).get("creation_token")
    if not token:
        raise UsageError("stack.yaml: dags.efs.creation_token is missing; run `make validate`")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = session or boto3.session.Session(region_name=(stack.get("aws") or {}).get("region"))
    client = session.client("efs")
    try:
        found = client.describe_file_systems(CreationToken=token)["FileSystems"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ToolkitError(
            f"EFS file system {token!r}: DescribeFileSystems failed "
            f"({error.get('Code')}: {error.get('Message')}); check elasticfilesystem:DescribeFileSystems"
        ) from None
    except BotoCoreError as exc:
        raise ToolkitError(f"EFS file system {token!r}: {exc}") from None
    if not found:
        raise ToolkitError(
            f"EFS file system with creation token {token!r} not found in "
            f"{client.meta.region_name}; run `make apply` first"
        )
    return found[0]["FileSystemId"]


def render_manifests(
    root: Path, stack: dict[str, Any], session=None, offline: bool = False
) -> dict[str, str]:
    """File name -> text of every manifest in k8s/, EFS file system id filled in."""
    rendered: dict[str, str] = {}
    file_system_id: str | None = None
    for path in sorted((root / "k8s").glob("*.y*ml")):
        text = read_filled(path, stack)
        if EFS_PROVISIONER not in text:
            rendered[path.name] = text
            continue
        yaml = _yaml()
        yaml.explicit_start = text.lstrip().startswith("---")
        documents = list(yaml.load_all(text))
        classes = _efs_storage_classes(documents)
        if not classes or offline:
            rendered[path.name] = text
            continue
        file_system_id = file_system_id or find_file_system_id(stack, session)
        for storage_class in classes:
            storage_class["parameters"]["fileSystemId"] = file_system_id
        out = io.StringIO()
        yaml.dump_all(documents, out)
        rendered[path.name] = out.getvalue()
    return rendered


def _replace(target: Path, staged: Path) -> None:
    """Put ``staged`` where ``target`` is, removing the old one after the swap."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)


def environment_values(root: Path, stack: dict[str, Any], env: str | None = None) -> str | None:
    """environments/<env>/values.yaml of the environment acted on, filled; None when it has
    none (a one-environment repo). helm takes it after helm/values.yaml (``values_files``)."""
    env = choose_environment(read_stack(root), env)
    path = root / ENVIRONMENTS_DIR / str(env) / "values.yaml"
    if env is None or not path.is_file():
        return None
    return read_filled(path, stack)


def render(
    root: Path, out: Path, session=None, offline: bool = False, env: str | None = None
) -> list[Path]:
    """Write ``out``/values.yaml (and ``out``/environment-values.yaml when the environment has
    an overlay) and ``out``/k8s/; return what was written."""
    stack = load_stack(root, env)
    values = render_values(root, stack)
    overlay = environment_values(root, stack, env)
    manifests = render_manifests(root, stack, session, offline)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".render-") as tmp:
        staged = Path(tmp)
        (staged / "values.yaml").write_text(values, encoding="utf-8")
        (staged / OVERLAY_FILE).write_text(overlay or "", encoding="utf-8")
        (staged / "k8s").mkdir()
        for name, text in manifests.items():
            (staged / "k8s" / name).write_text(text, encoding="utf-8")
        _replace(out / "values.yaml", staged / "values.yaml")
        if overlay is None:
            (out / OVERLAY_FILE).unlink(missing_ok=True)
        else:
            _replace(out / OVERLAY_FILE, staged / OVERLAY_FILE)
        _replace(out / "k8s", staged / "k8s")
    written = [out / "values.yaml", *(out / "k8s" / name for name in manifests)]
    if overlay is not None:
        written.insert(1, out / OVERLAY_FILE)
    return [p.relative_to(root) if p.is_relative_to(root) else p for p in written]

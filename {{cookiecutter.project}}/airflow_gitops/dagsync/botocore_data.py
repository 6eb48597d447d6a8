"""The sync agent's slice of botocore's data, written at image build time from botocore's own.

Every S3 client reads two large files: the whole S3 model (about 110 operations, 730 shapes)
and the endpoints of every AWS service (``endpoints.json``, 1.2 MB), although the agent calls
two operations; parsing them is about 30 ms of every agent start (benchmarks/s3sync.py). This
writes, from the installed botocore's files, the same data cut down to what the agent's process
uses:

- ``s3/<version>/service-2.json``: the operations in OPERATIONS and every shape they reference,
  transitively, each copied unchanged (botocore still merges its own ``sdk-extras`` over it);
- ``endpoints.json``: every partition, region and default as they are, with the services in
  SERVICES only.

images/s3-sync/Dockerfile writes the folder and puts it first on botocore's search path
(AWS_DATA_PATH), for the agent's image only: everything not in it (the endpoint rule set, the
paginators, other services' models) is still found in botocore's own folder. push-dags and the
rest of the toolkit never see it. A botocore that lacks one of OPERATIONS (or S3 in its
endpoints) stops the build with one line naming it.

    python -m airflow_gitops.dagsync.botocore_data OUT
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any

SERVICE = "s3"
OPERATIONS = (
    "GetObject",  # the agent: manifest, packs, files
    "ListObjectsV2",  # the agent: prefixes without a manifest (its paginator)
    "HeadBucket",  # botocore: finding a bucket's region when S3 redirects (utils.py)
    "CreateSession",  # botocore: credentials for S3 Express directory buckets (utils.py)
)
# S3, and every client botocore's credential and token providers create from the agent's
# session: STS (IRSA, assume-role), SSO, SSO-OIDC and sign-in (a test reads them from botocore).
SERVICES = ("s3", "sts", "sso", "sso-oidc", "signin")


def referenced_shapes(model: dict[str, Any], roots: Iterable[Any]) -> list[str]:
    """Names of every shape reachable from ``roots`` (any JSON holding ``{"shape": name}``)."""
    shapes = model["shapes"]
    found: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            name = node.get("shape")
            if isinstance(name, str) and name not in found:
                if name not in shapes:
                    raise ValueError(f"shape {name!r} is referenced but not defined")
                found.add(name)
                todo.append(shapes[name])
            todo.extend(v for k, v in node.items() if k != "shape")
        elif isinstance(node, list):
            todo.extend(node)
    return [name for name in shapes if name in found]  # botocore's order


def trim_model(model: dict[str, Any], operations: Iterable[str] | None = None) -> dict[str, Any]:
    """``model`` with only ``operations`` and the shapes they reference; ValueError if one lacks."""
    operations = list(OPERATIONS if operations is None else operations)
    missing = [name for name in operations if name not in model.get("operations", {})]
    if missing:
        raise ValueError(f"operations {', '.join(missing)} are not in the model")
    kept = {name: model["operations"][name] for name in model["operations"] if name in operations}
    shapes = referenced_shapes(model, kept.values())
    return {**model, "operations": kept, "shapes": {n: model["shapes"][n] for n in shapes}}


def trim_endpoints(
    endpoints: dict[str, Any], services: Iterable[str] | None = None
) -> dict[str, Any]:
    """``endpoints.json`` with every partition as it is but only ``services`` in each.

    A service that endpoints.json lacks altogether (sso-oidc, signin today) is resolved from
    the partition's defaults with either file; S3 missing means this is not the botocore the
    agent was written for: ValueError.
    """
    services = set(SERVICES if services is None else services)
    if not any(SERVICE in p.get("services", {}) for p in endpoints["partitions"]):
        raise ValueError(f"service {SERVICE} is in no partition of endpoints.json")
    partitions = [
        {**p, "services": {n: s for n, s in p.get("services", {}).items() if n in services}}
        for p in endpoints["partitions"]
    ]
    return {**endpoints, "partitions": partitions}


def write_data(out: str, loader: Any = None) -> list[str]:
    """Write the slice into folder ``out`` (created); returns the files written."""
    from botocore.loaders import Loader

    # botocore's own files only: never a folder on AWS_DATA_PATH (such as an older slice).
    loader = loader or Loader([Loader.BUILTIN_DATA_PATH], include_default_search_paths=False)
    version = loader.determine_latest_version(SERVICE, "service-2")
    model, _ = loader.load_data_with_path(f"{SERVICE}/{version}/service-2")
    endpoints, _ = loader.load_data_with_path("endpoints")
    written = []
    for relpath, data in (
        (f"{SERVICE}/{version}/service-2.json", trim_model(model)),
        ("endpoints.json", trim_endpoints(endpoints)),
    ):
        path = os.path.join(out, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m airflow_gitops.dagsync.botocore_data OUT", file=sys.stderr)
        return 2
    try:
        write_data(args[0])
    except ValueError as exc:
        import botocore

        print(f"ERROR: botocore {botocore.__version__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

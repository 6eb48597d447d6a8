"""`pull-dags`: one sync of the agent into a local folder (debugging; what a pod would see)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from airflow_gitops.dagsync import s3
from airflow_gitops.dagsync.agent import setup_json_logging, sync_into
from airflow_gitops.dagsync.push import bucket_and_prefix
from airflow_gitops.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dest", required=True, help="local folder; the DAGs appear in DEST/current"
    )
    parser.add_argument("--bucket", default=None, help="default: dags.bucket of stack.yaml")
    parser.add_argument("--prefix", default=None, help="default: dags.prefix of stack.yaml")
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="publish even an empty prefix (or one with neither manifest nor .py files)",
    )
    parser.add_argument(
        "--max-delete-fraction",
        type=float,
        default=s3.DEFAULT_MAX_DELETE_FRACTION,
        help="refuse a listing that would delete more than this fraction (default 0.5)",
    )


def run(args: argparse.Namespace, session: Any = None) -> int:
    bucket, prefix = bucket_and_prefix(args)
    if not 0 <= args.max_delete_fraction <= 1:
        raise UsageError(
            f"--max-delete-fraction: {args.max_delete_fraction:g} is not allowed; use 0..1"
        )
    setup_json_logging("warning")
    result = sync_into(
        args.dest,
        bucket,
        prefix,
        session,
        max_delete_fraction=args.max_delete_fraction,
        allow_empty=args.allow_empty,
    )
    state = "updated" if result.changed else "already current"
    print(
        f"{Path(args.dest) / 'current'}: {state}, {result.objects} files "
        f"({result.downloaded} downloaded, {result.deleted} removed) from s3://{bucket}/{s3.normalize_prefix(prefix)}"
    )
    return 0

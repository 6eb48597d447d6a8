"""Task logs, the secrets backend and the Airflow image: values, stack.yaml and iam/ agree.

- ``log-location``: Airflow's remote log folder is ``s3://<logs.bucket>/<logs.prefix>``, remote
  logging is on, and the log policies name exactly that bucket and prefix.
- ``log-claim``: where S3 holds the logs, no pod keeps a log claim.
- ``secrets-prefix``: the backend's prefixes are stack.yaml's, and the pods' read grant names
  exactly those prefixes in this account and region.
- ``airflow-image``: the Airflow image is the stock one at stack.yaml's version, or this
  repo's own ECR repository; never an image the repo doesn't build or pin.
"""

from __future__ import annotations

import json
from typing import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import as_dict, as_list, as_str

BACKEND = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
WRITE_POLICY = "iam/task-log-write-policy.json"
READ_POLICY = "iam/task-log-read-policy.json"
SECRETS_POLICY = "iam/secrets-read-policy.json"
STOCK_IMAGE = "apache/airflow"


def check(repo) -> Iterator[Finding]:
    yield from _log_location(repo)
    yield from _log_claims(repo)
    yield from _secrets(repo)
    yield from _airflow_image(repo)
    yield from _dockerfile_version(repo)


def _log_location(repo) -> Iterator[Finding]:
    bucket, prefix = repo.fact("logs", "bucket"), repo.fact("logs", "prefix")
    if not isinstance(bucket, str) or not isinstance(prefix, str):
        return
    values = repo.values
    logging = as_dict(values.get("config", "logging"))
    wanted = f"s3://{bucket}/{prefix.strip('/')}"
    if str(logging.get("remote_logging")) != "True":
        yield values.finding(
            ("config", "logging") if logging else ("config",),
            f'config.logging.remote_logging is not "True": task logs die with their pods; '
            f"set it and remote_base_log_folder {wanted!r}",
            "log-location",
        )
    folder = logging.get("remote_base_log_folder")
    if "remote_base_log_folder" in logging and as_str(folder).rstrip("/") != wanted:
        yield values.finding(
            ("config", "logging", "remote_base_log_folder"),
            f"{folder!r} is not stack.yaml's logs.bucket/logs.prefix {wanted!r}",
            "log-location",
        )
    bucket_arn = f"arn:aws:s3:::{bucket}"
    objects = f"{bucket_arn}/{prefix.strip('/')}/*"
    for path in (WRITE_POLICY, READ_POLICY):
        doc = repo.iam.get(path)
        if doc is None:
            continue
        for index, statement in enumerate(as_list(doc.get("Statement"))):
            statement = as_dict(statement)
            actions = [a for a in as_list(statement.get("Action")) or [statement.get("Action")]]
            resources = statement.get("Resource")
            for item in resources if isinstance(resources, list) else [resources]:
                allowed = {bucket_arn} if "s3:ListBucket" in actions else {objects}
                if item not in allowed:
                    yield doc.finding(
                        ("Statement", index, "Resource"),
                        f"{item!r}: task-log statements name {sorted(allowed)[0]!r} "
                        "(stack.yaml logs.bucket and logs.prefix)",
                        "log-location",
                    )


def _log_claims(repo) -> Iterator[Finding]:
    """The chart's defaults keep a claim for the triggerer and the Celery workers (each falls
    back to true); logs.persistence is a shared claim (default false)."""
    values = repo.values
    if str(values.get("config", "logging", "remote_logging")) != "True":
        return
    switches = [("triggerer", "persistence")]
    if "Celery" in as_str(values.get("executor")):
        celery = ("workers", "celery", "persistence")
        set_in_celery = "enabled" in as_dict(values.get(*celery))
        switches.append(celery if set_in_celery else ("workers", "persistence"))
    for path in switches:
        if as_dict(values.get(*path)).get("enabled", True) is not False:
            yield _claim_finding(values, path)
    if as_dict(values.get("logs", "persistence")).get("enabled") is True:
        yield _claim_finding(values, ("logs", "persistence"))


def _claim_finding(values, path: tuple) -> Finding:
    present = "enabled" in as_dict(values.get(*path))
    where = path + ("enabled",) if present else path[:1]
    return values.finding(
        where,
        f"{'.'.join(path)}.enabled is {'true' if present else 'unset (the chart: true)'}: a "
        "log claim although task logs go to S3; set it to false (logs wait on an emptyDir)",
        "log-claim",
    )


def _secrets(repo) -> Iterator[Finding]:
    prefixes = {k: repo.fact("secrets", k) for k in ("connections_prefix", "variables_prefix")}
    if not all(isinstance(v, str) for v in prefixes.values()):
        return
    values = repo.values
    secrets = as_dict(values.get("config", "secrets"))
    if secrets.get("backend") != BACKEND:
        yield values.finding(
            ("config", "secrets", "backend") if "backend" in secrets else ("config",),
            f"config.secrets.backend is {secrets.get('backend')!r}, not {BACKEND}: connections "
            "written by `make connection` would never be read",
            "secrets-prefix",
        )
    else:
        try:
            kwargs = json.loads(as_str(secrets.get("backend_kwargs")) or "{}")
        except json.JSONDecodeError as exc:
            kwargs = None
            yield values.finding(
                ("config", "secrets", "backend_kwargs"),
                f"backend_kwargs is not JSON ({exc.msg})",
                "secrets-prefix",
            )
        for key, wanted in prefixes.items():
            if isinstance(kwargs, dict) and kwargs.get(key) != wanted:
                yield values.finding(
                    ("config", "secrets", "backend_kwargs"),
                    f"backend_kwargs {key} is {kwargs.get(key)!r}, not stack.yaml's "
                    f"secrets.{key} {wanted!r}",
                    "secrets-prefix",
                )
    doc = repo.iam.get(SECRETS_POLICY)
    if doc is None:
        return
    region, account = repo.fact("aws", "region"), repo.fact("aws", "account_id")
    arn = f"arn:aws:secretsmanager:{region}:{account}:secret:"
    wanted = {f"{arn}{p.rstrip('/')}/*" for p in prefixes.values()}
    for index, statement in enumerate(as_list(doc.get("Statement"))):
        resources = as_dict(statement).get("Resource")
        for item in resources if isinstance(resources, list) else [resources]:
            if item not in wanted:
                yield doc.finding(
                    ("Statement", index, "Resource"),
                    f"{item!r} is not one of stack.yaml's secrets prefixes: {sorted(wanted)}",
                    "secrets-prefix",
                )


def _airflow_image(repo) -> Iterator[Finding]:
    values = repo.values
    version = repo.fact("airflow", "version")
    image = as_dict(values.get("images", "airflow"))
    repository = image.get("repository")
    own = _own_repository(repo)
    if repository is not None and repository not in (STOCK_IMAGE, own):
        yield values.finding(
            ("images", "airflow", "repository"),
            f"{repository!r} is neither {STOCK_IMAGE} (pinned to stack.yaml's airflow.version) "
            f"nor this repo's own image {own!r}: nothing here builds or pins it",
            "airflow-image",
        )
    tag = image.get("tag")
    if tag is not None and (repository in (None, STOCK_IMAGE)) and str(tag) != str(version):
        yield values.finding(
            ("images", "airflow", "tag"),
            f"tag {tag!r} of {STOCK_IMAGE} is not stack.yaml's airflow.version {version!r}",
            "airflow-image",
        )


def _dockerfile_version(repo) -> Iterator[Finding]:
    """image/Dockerfile builds on apache/airflow at stack.yaml's version, pinned by its ARG."""
    import re

    path = "image/Dockerfile"
    version = repo.fact("airflow", "version")
    try:
        lines = (repo.root / path).read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return
    found = False
    for number, line in enumerate(lines, 1):
        match = re.match(r"^\s*ARG\s+AIRFLOW_VERSION=(\S+)\s*$", line)
        if match:
            found = True
            if match.group(1) != str(version):
                yield Finding(
                    path,
                    number,
                    1,
                    f"AIRFLOW_VERSION {match.group(1)!r} is not "
                    f"stack.yaml's airflow.version {version!r}",
                    "airflow-image",
                )
        elif re.match(r"^\s*FROM\s", line, re.I) and line.split()[1] != (
            f"{STOCK_IMAGE}:${{AIRFLOW_VERSION}}"
        ):
            yield Finding(
                path,
                number,
                1,
                f"{line.split()[1]!r}: the image builds on "
                f"{STOCK_IMAGE}:${{AIRFLOW_VERSION}} (the pinned release)",
                "airflow-image",
            )
    if not found:
        yield Finding(
            path, 1, 1, "no ARG AIRFLOW_VERSION=<stack.yaml airflow.version>", "airflow-image"
        )


def _own_repository(repo) -> str | None:
    name = repo.fact("images", "airflow_repository")
    account, region = repo.fact("aws", "account_id"), repo.fact("aws", "region")
    if not isinstance(name, str):
        return None
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{name}"

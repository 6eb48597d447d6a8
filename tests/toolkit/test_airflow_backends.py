"""Airflow's own classes against moto, configured exactly as helm/values.yaml configures them:
the amazon provider's S3 task-log IO writes a task log to the log prefix and reads it back, and
its SecretsManagerBackend resolves a connection and a variable that `make connection` /
`make variable` stored.

Airflow is not in this venv (it brings hundreds of packages). The test runs the Airflow side in
AIRFLOW_PYTHON (default .venv-airflow/bin/python; airflow_gitops/airflow_probe.py): one with apache-airflow at
stack.yaml's version and the amazon provider, e.g. `make airflow-venv` with
apache-airflow-providers-amazon in image/requirements.txt. Without one it is skipped, saying so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from urllib.parse import quote
import subprocess

import pytest
import yaml
from aws_testkit import recorder, session
from iam_eval import Request, allowed

from airflow_gitops import cli
from airflow_gitops.airflow_probe import WRITES, airflow_env
from airflow_gitops.stack import load_stack

from repos import REPO  # the default bake

LOG = "dag_id=example_delivery_check/run_id=manual__1/task_id=where_am_i/attempt=1.log"
# A password made per run (none is committed), with a "/" so it must be URL-encoded in the URI.
PASSWORD = secrets.token_hex(8) + "/t"
URI = "postgresql://report_user:" + quote(PASSWORD, safe="") + "@db.example.internal:5432/reports"


def airflow_python(version: str) -> str:
    python = os.environ.get("AIRFLOW_PYTHON") or str(REPO / ".venv-airflow" / "bin" / "python")
    probe = (
        "import sys, airflow, airflow.providers.amazon; "
        f"sys.exit(airflow.__version__ != {version!r})"
    )
    try:
        ok = subprocess.run([python, "-c", probe], capture_output=True).returncode == 0
    except OSError:
        ok = False
    if not ok:
        pytest.skip(
            f"{python}: no apache-airflow {version} with the amazon provider (set "
            "AIRFLOW_PYTHON, or make airflow-venv with apache-airflow-providers-amazon "
            "in image/requirements.txt)"
        )
    return python


def test_task_log_and_connection_through_airflows_own_classes(aws, monkeypatch, tmp_path):
    stack = load_stack(REPO)
    python = airflow_python(str(stack["airflow"]["version"]))
    config = yaml.safe_load((REPO / "helm" / "values.yaml").read_text())["config"]
    s3 = session().client("s3")
    bucket = stack["logs"]["bucket"]
    # The bucket as bootstrap makes it, minus the TLS-only policy: moto serves plain HTTP and
    # would honour the Deny (tests/test_task_logs.py checks the policy itself).
    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": stack["aws"]["region"]}
    )
    monkeypatch.setenv("URI", URI)
    assert cli.main(["connection", "--name", "reports_db"]) == 0
    monkeypatch.setenv("VALUE", "42")
    assert cli.main(["variable", "--name", "report_threshold"]) == 0

    env = airflow_env(config, dict(os.environ), str(tmp_path / "airflow-home"))
    local = str(tmp_path / "local-logs")
    arguments = {
        "secrets": ["reports_db", "report_threshold"],
        "missing": ["not_there", "nope"],
        "write": [local, LOG],
        "read": [local, LOG],
    }
    phases = {}
    existing: set[str] = set()  # log keys in the bucket, as the phases write them
    for phase, args in arguments.items():
        recorder(aws, "reset-recording")
        recorder(aws, "start-recording")
        try:
            result = subprocess.run(
                [
                    python,
                    "-m",
                    "airflow_gitops.airflow_probe",
                    "secrets" if phase == "missing" else phase,
                    *args,
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
        finally:
            recorder(aws, "stop-recording")
        assert result.returncode == 0, result.stderr[-3000:]
        phases[phase] = (
            json.loads(result.stdout.strip().splitlines()[-1]),
            recorded_requests(aws, stack, existing),
        )
    out = phases["secrets"][0]
    assert out["conn"] == {
        "conn_type": "postgres",
        "host": "db.example.internal",
        "login": "report_user",
        "password_sha256": hashlib.sha256(PASSWORD.encode()).hexdigest(),  # URI-decoded
        "port": 5432,
        "schema": "reports",
    }
    assert out["variable"] == "42"
    assert phases["missing"][0] == {"conn": None, "variable": None}
    key = f"{stack['logs']['prefix']}/{LOG}"
    log = phases["read"][0]["log"]
    assert log["messages"] == [f"s3://{bucket}/{key}"]
    # The second upload is appended to the first (the handler reads, appends, writes back; the
    # separator between the two differs between provider releases).
    [text] = log["logs"]
    assert text.index(WRITES[0].strip()) < text.index(WRITES[1].strip())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode() == text

    # Every request Airflow's own classes sent is allowed by the role of the pod that sends it.
    policies = {
        name: json.loads((REPO / "iam" / f"{name}.json").read_text())
        for name in ("secrets-read-policy", "task-log-write-policy", "task-log-read-policy")
    }
    for phase, policy in (
        ("secrets", "secrets-read-policy"),
        ("missing", "secrets-read-policy"),
        ("write", "task-log-write-policy"),
        ("read", "task-log-read-policy"),
    ):
        requests = phases[phase][1]
        assert requests, phase
        denied = [r for r in requests if not allowed([policies[policy]], r)]
        assert denied == [], f"{phase}: {denied}"
    # The API server's role could not have written the log.
    puts = [r for r in phases["write"][1] if r.action == "s3:PutObject"]
    assert puts and not any(allowed([policies["task-log-read-policy"]], r) for r in puts)


def recorded_requests(server, stack: dict, existing: set[str]) -> list[Request]:
    """The authorisations of the S3 and Secrets Manager requests moto logged (path-style S3 on
    127.0.0.1). A HeadObject needs s3:GetObject, and, when the key is missing (``existing``
    tracks the keys written so far), s3:ListBucket with no prefix: S3 answers 404 only to a
    caller allowed to list, 403 otherwise, and the handler treats only 404 as "no log yet"."""
    from urllib.parse import parse_qs, unquote, urlparse

    region, account = stack["aws"]["region"], stack["aws"]["account_id"]
    out = []
    for line in recorder(server, "download-recording").splitlines():
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        target = headers.get("x-amz-target", "")
        if target.startswith("secretsmanager."):
            secret = json.loads(body)["SecretId"]
            out.append(
                Request(
                    f"secretsmanager:{target.split('.', 1)[1]}",
                    f"arn:aws:secretsmanager:{region}:{account}:secret:{secret}-AbCdEf",
                )
            )
            continue
        url = urlparse(entry["url"])
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        arn, query, method = f"arn:aws:s3:::{bucket}", parse_qs(url.query), entry["method"]
        if not key and method == "GET":
            context = {"s3:prefix": query["prefix"][0]} if "prefix" in query else {}
            out.append(Request("s3:ListBucket", arn, context))
        elif key and method in ("GET", "HEAD"):
            out.append(Request("s3:GetObject", f"{arn}/{key}"))
            if method == "HEAD" and key not in existing:
                out.append(Request("s3:ListBucket", arn))
        elif key and method in ("PUT", "POST"):
            out.append(Request("s3:PutObject", f"{arn}/{key}"))
            existing.add(key)
        else:
            raise AssertionError(f"unexpected request {method} {entry['url']}")
    return out

"""Airflow's own classes against moto, configured exactly as helm/values.yaml configures them:
the amazon provider's S3 task-log IO writes a task log to the log prefix and reads it back, and
its SecretsManagerBackend resolves a connection and a variable that `make connection` /
`make variable` stored.

Airflow is not in this venv (it brings hundreds of packages). The test runs the Airflow side in
AIRFLOW_PYTHON (default .venv-airflow/bin/python): an interpreter with apache-airflow at
stack.yaml's version and the amazon provider, e.g. `make airflow-venv` with
apache-airflow-providers-amazon in image/requirements.txt. Without one it is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from aws_testkit import session

from airflow_gitops import cli
from airflow_gitops.stack import load_stack

REPO = Path(__file__).resolve().parent.parent
LOG = "dag_id=example_delivery_check/run_id=manual__1/task_id=where_am_i/attempt=1.log"
URI = "postgresql://report_user:s3cr%2Ft@db.example.internal:5432/reports"

AIRFLOW_SIDE = r"""
import json, pathlib, sys, tempfile
from airflow.configuration import conf
from airflow.providers.amazon.aws.log.s3_task_handler import S3RemoteLogIO
from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend

backend = SecretsManagerBackend(**json.loads(conf.get("secrets", "backend_kwargs")))
conn = backend.get_connection("reports_db")
out = {"conn": {k: getattr(conn, k) for k in ("conn_type", "host", "login", "password",
                                               "port", "schema")},
       "variable": backend.get_variable("report_threshold"),
       "missing": backend.get_connection("not_there")}
base = pathlib.Path(tempfile.mkdtemp())
relative = sys.argv[1]
(base / relative).parent.mkdir(parents=True)
(base / relative).write_text("hello from the task\n")
io = S3RemoteLogIO(remote_base=conf.get("logging", "remote_base_log_folder"),
                   base_log_folder=base, delete_local_copy=False)
io.upload(relative, None)
(base / relative).write_text("second upload\n")
io.upload(relative, None)
messages, logs = io.read(relative, None)
out["log"] = {"messages": messages, "logs": logs}
print(json.dumps(out))
"""


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


def airflow_env(config: dict, home: Path) -> dict:
    """helm/values.yaml ``config.<section>.<key>`` as Airflow's AIRFLOW__SECTION__KEY."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    for section in ("logging", "secrets"):
        for key, value in config[section].items():
            env[f"AIRFLOW__{section.upper()}__{key.upper()}"] = str(value)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    )
    return env


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

    result = subprocess.run(
        [python, "-c", AIRFLOW_SIDE, LOG],
        capture_output=True,
        text=True,
        env=airflow_env(config, tmp_path / "airflow-home"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["conn"] == {
        "conn_type": "postgres",
        "host": "db.example.internal",
        "login": "report_user",
        "password": "s3cr/t",
        "port": 5432,
        "schema": "reports",
    }
    assert out["variable"] == "42"
    assert out["missing"] is None
    key = f"{stack['logs']['prefix']}/{LOG}"
    assert out["log"]["messages"] == [f"s3://{bucket}/{key}"]
    # The second upload is appended to the first (the handler reads, appends, writes back; the
    # separator between the two differs between provider releases).
    [log] = out["log"]["logs"]
    assert log.index("hello from the task") < log.index("second upload")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert body == log

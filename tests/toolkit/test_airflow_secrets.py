"""`make connection` / `make variable` against moto over HTTP, and the pods' read grant.

What is proven here: the secret lands under the name the amazon provider's
SecretsManagerBackend asks for (``<prefix>`` + "/" + id, with the prefixes helm/values.yaml
gives the backend), holds exactly the value in a form that backend accepts (a URI or a JSON
object), and the value never reaches argv or output. What is not: the lookup through Airflow's
own backend class, which tests/test_airflow_backends.py does with an Airflow interpreter.
"""

from __future__ import annotations

import json
import os
import secrets
from urllib.parse import quote
import subprocess
import sys

import pytest
import yaml
from aws_testkit import session
from iam_eval import Request, allowed

from airflow_gitops import cli
from airflow_gitops.stack import load_stack

from repos import REPO  # the default bake

# A password made per run (none is committed), with a "/" so it must be URL-encoded in the URI.
PASSWORD = secrets.token_hex(8) + "/t"
URI = "postgresql://report_user:" + quote(PASSWORD, safe="") + "@db.example.internal:5432/reports"


def secret(name: str) -> dict:
    return session().client("secretsmanager").get_secret_value(SecretId=name)


def backend_kwargs() -> dict:
    """What helm/values.yaml hands Airflow's SecretsManagerBackend."""
    values = yaml.safe_load((REPO / "helm" / "values.yaml").read_text())
    config = values["config"]["secrets"]
    assert config["backend"] == (
        "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
    )
    return json.loads(config["backend_kwargs"])


def backend_secret_id(prefix: str, key: str, sep: str = "/") -> str:
    # The provider's _get_secret: build_path(prefix.rstrip(sep), key, sep) = prefix + sep + key.
    return f"{prefix.rstrip(sep)}{sep}{key}"


def make(*args: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), f"PYTHON={sys.executable}", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
    )


def test_make_connection_stores_the_uri_where_the_backend_looks(aws):
    env = {**os.environ, "URI": URI}
    result = make("connection", "NAME=reports_db", env=env)
    assert result.returncode == 0, result.stderr
    name = backend_secret_id(backend_kwargs()["connections_prefix"], "reports_db")
    assert name == f"{load_stack(REPO)['secrets']['connections_prefix']}/reports_db"
    assert secret(name)["SecretString"] == URI
    assert name in result.stdout
    for shown in (result.stdout, result.stderr, " ".join(result.args)):
        assert PASSWORD[:16] not in shown


def test_make_variable_reads_stdin_and_a_second_write_is_a_new_version(aws):
    # Values with letters no UUID or ARN in the output can hold ("43" once matched a version id).
    first_value, second_value = "quota-42", "quota-43"
    env = {k: v for k, v in os.environ.items() if k != "VALUE"}
    first = make("variable", "NAME=report.threshold", env=env, stdin=f"{first_value}\n")
    assert first.returncode == 0, first.stderr
    name = backend_secret_id(backend_kwargs()["variables_prefix"], "report.threshold")
    before = secret(name)
    assert before["SecretString"] == first_value
    second = make("variable", "NAME=report.threshold", env={**env, "VALUE": second_value})
    assert second.returncode == 0, second.stderr
    after = secret(name)
    assert after["SecretString"] == second_value and after["VersionId"] != before["VersionId"]
    assert "updated" in second.stdout
    for shown in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert "quota" not in shown


def test_json_connections_are_accepted_as_the_backend_reads_them(aws, monkeypatch, capsys):
    value = json.dumps({"conn_type": "http", "host": "api.example.com", "password": "tok"})
    monkeypatch.setenv("URI", value)
    assert cli.main(["connection", "--name", "api"]) == 0
    assert "tok" not in capsys.readouterr().out
    stored = json.loads(
        secret(f"{load_stack(REPO)['secrets']['connections_prefix']}/api")["SecretString"]
    )
    assert stored["conn_type"] == "http"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("bad name", URI, "connection name 'bad name': letters, digits"),
        ("x" * 251, URI, "1-250 characters"),
        ("db", "not a uri s3cr3t", "neither a URI (<conn-type>://...) nor a JSON object"),
        ("db", "{not json s3cr3t", "not valid JSON (line 1, column 2)"),
        ("db", "", "empty value; set URI"),
    ],
    # not the values: URI holds a password made per run, and test ids must be the same in
    # every pytest-xdist worker
    ids=["name-with-space", "name-too-long", "not-a-uri", "not-json", "empty"],
)
def test_bad_input_is_one_line_that_never_repeats_the_value(
    aws, monkeypatch, capsys, name, value, expected
):
    monkeypatch.setenv("URI", value)
    assert cli.main(["connection", "--name", name]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert "s3cr3t" not in err
    assert session().client("secretsmanager").list_secrets()["SecretList"] == []


def test_make_connection_needs_a_name(aws):
    result = make("connection", env={**os.environ, "URI": URI})
    assert result.returncode != 0
    assert "NAME=<connection id> is required" in result.stderr


def test_the_pods_may_read_only_this_projects_prefixes():
    stack = load_stack(REPO)
    policy = json.loads((REPO / "iam" / "secrets-read-policy.json").read_text())
    arn = f"arn:aws:secretsmanager:{stack['aws']['region']}:{stack['aws']['account_id']}:secret:"
    kwargs = backend_kwargs()
    assert kwargs["config_prefix"] is None  # no config lookups, so no grant for them
    for prefix in (kwargs["connections_prefix"], kwargs["variables_prefix"]):
        # Secret ARNs end in "-" and six random characters.
        wanted = Request(
            "secretsmanager:GetSecretValue",
            f"{arn}{backend_secret_id(prefix, 'reports_db')}-AbCdEf",
        )
        assert allowed([policy], wanted), wanted
    other = stack["project"] + "-other"
    for denied in (
        Request("secretsmanager:GetSecretValue", f"{arn}airflow/{other}/connections/x-AbCdEf"),
        Request("secretsmanager:GetSecretValue", f"{arn}airflow/config/sql_alchemy_conn-AbCdEf"),
        Request("secretsmanager:GetSecretValue", f"{arn}{kwargs['connections_prefix']}-AbCdEf"),
        Request(
            "secretsmanager:PutSecretValue",
            f"{arn}{kwargs['connections_prefix']}/reports_db-AbCdEf",
        ),
        Request("secretsmanager:ListSecrets", "*"),
    ):
        assert not allowed([policy], denied), denied

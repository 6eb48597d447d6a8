"""A first login without a default password: `make admin-user` and `make ui` in a generated repo.

kubectl is a fake that keeps Secrets in a folder and records every call with its stdin, so the
tests see exactly what would reach the cluster. The names the commands use (the API server's
Deployment, container, Service and port) are checked against the real chart's render.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import run_make
from helm_chart import render

FAKE_KUBECTL = r"""
import base64, json, os, sys
state = os.environ["FAKE_KUBECTL_STATE"]
args = sys.argv[1:]
stdin = sys.stdin.read() if args[0] in ("create", "exec") else ""  # only these take stdin
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps({"argv": args, "stdin": stdin}) + "\n")
def secret_path(name):
    return os.path.join(state, f"secret-{name}.json")
if args[:2] == ["get", "secret"]:
    try:
        print(open(secret_path(args[2])).read())
    except FileNotFoundError:
        print(f'Error from server (NotFound): secrets "{args[2]}" not found', file=sys.stderr)
        sys.exit(1)
elif args[:3] == ["create", "--filename", "-"]:
    doc = json.loads(stdin)
    doc["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in doc.pop("stringData").items()}
    open(secret_path(doc["metadata"]["name"]), "w").write(json.dumps(doc))
elif args[0] == "exec":
    users = os.path.join(state, "airflow-users")
    username = args[-2]
    known = open(users).read().split() if os.path.exists(users) else []
    if username in known:
        print(f"{username} already exist in the db")
    else:
        open(users, "a").write(username + "\n")
        print(f"User \"{username}\" created with role \"Admin\"")
elif args[0] == "port-forward":
    print("Forwarding from 127.0.0.1:8080 -> 8080")
"""


@pytest.fixture()
def cluster(tmp_path, default_repo):
    """(repo copy, environment with the fake kubectl, state folder)."""
    repo = tmp_path / "repo"
    shutil.copytree(default_repo, repo)
    state = tmp_path / "cluster"
    state.mkdir()
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    fake.chmod(0o755)
    env = {**os.environ, "KUBECTL": str(fake), "FAKE_KUBECTL_STATE": str(state)}
    return repo, env, state


def calls(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def stored_password(state: Path, name: str = "airflow-admin-user") -> str:
    secret = json.loads((state / f"secret-{name}.json").read_text())
    return base64.b64decode(secret["data"]["password"]).decode()


def test_admin_user_makes_a_random_password_once_and_keeps_it_off_command_lines(cluster):
    repo, env, state = cluster
    first = run_make(repo, "admin-user", env=env)
    password = stored_password(state)
    assert len(password) >= 32 and password.isprintable()
    exec_call = next(c for c in calls(state) if c["argv"][0] == "exec")
    argv = exec_call["argv"]
    assert argv[argv.index("--namespace") + 1] == "airflow"
    assert "deployment/airflow-api-server" in argv
    assert argv[argv.index("--container") + 1] == "api-server"
    assert exec_call["stdin"] == password  # the password goes in on stdin...
    for call in calls(state):
        assert password not in " ".join(call["argv"])  # ...and never on a command line
    assert "Airflow admin 'admin' is ready" in first.stdout

    run_make(repo, "admin-user", env=env)  # again: same password, no second Secret
    second = calls(state)[len(calls(state)) - 2 :]
    assert [c["argv"][0] for c in second] == ["get", "exec"]
    assert second[1]["stdin"] == password
    assert stored_password(state) == password


def test_admin_user_refuses_a_new_password_for_an_existing_user(cluster):
    repo, env, state = cluster
    run_make(repo, "admin-user", env=env)
    (state / "secret-airflow-admin-user.json").unlink()  # the Secret was lost, the user was not
    result = run_make(repo, "admin-user", env=env, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "already has a user 'admin'" in errors[0]


def test_ui_forwards_the_api_server_service(cluster):
    repo, env, state = cluster
    result = run_make(repo, "ui", env=env)
    assert "http://127.0.0.1:8080" in result.stdout
    (call,) = calls(state)
    assert call["argv"] == [
        "port-forward",
        "--namespace",
        "airflow",
        "service/airflow-api-server",
        "8080:8080",
    ]


@pytest.mark.parametrize("release", ["airflow", "af3"])
def test_the_names_the_commands_use_exist_in_the_rendered_chart(baked, release):
    docs = render(baked(airflow_release=release))
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    api = deployments[f"{release}-api-server"]["spec"]["template"]["spec"]
    assert "api-server" in [c["name"] for c in api["containers"]]
    ports = [p["port"] for p in services[f"{release}-api-server"]["spec"]["ports"]]
    assert 8080 in ports
    # FAB's `airflow users create` exists only with the FAB auth manager.
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and "airflow.cfg" in d.get("data", {})
    )
    assert (
        "auth_manager = airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
        in (config["data"]["airflow.cfg"])
    )

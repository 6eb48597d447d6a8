"""``admin-user`` and ``ui``: the first way into Airflow, with no default password anywhere.

``admin-user`` makes the first Airflow admin (the chart's own user job would create
admin/admin, so it is off). The password is random, made once and kept in the Kubernetes Secret
stack.yaml names (airflow.admin_user_secret); a second run reuses it. The user is created by
Airflow's own CLI (`airflow users create`, from the FAB auth manager the chart configures)
inside the running API server pod; the password travels on stdin, never on a command line.

``ui`` forwards the API server's port to localhost (the chart's Service, port 8080), so the UI
is reachable without exposing it. Both use your kubeconfig (`aws eks update-kubeconfig`).
"""

from __future__ import annotations

import base64
import os
import secrets
from typing import Any

from airflow_gitops.cluster_secrets import create_secret, read_secret
from airflow_gitops.errors import ToolkitError, UsageError
from airflow_gitops.kube import kubectl
from airflow_gitops.stack import load_stack

# The chart names the API server `<release>-api-server` (Deployment, Service, container
# api-server; port 8080 by default: values `ports.apiServer`).
API_SERVER_PORT = 8080
PASSWORD_KEY, USERNAME_KEY = "password", "username"
# Runs in the API server container: the password arrives on stdin, the rest as arguments.
CREATE_USER = (
    'password="$(cat)"; exec airflow users create --role Admin --username "$1" '
    '--email "$2" --firstname Airflow --lastname Admin --password "$password"'
)


def add_arguments(parser) -> None:
    if parser.prog.endswith(" admin-user"):
        parser.add_argument("--username", default="admin", help="default: admin")
        parser.add_argument(
            "--email", default="admin@example.invalid", help="the admin's email (FAB requires one)"
        )
    else:
        parser.add_argument(
            "--port",
            type=int,
            default=API_SERVER_PORT,
            help=f"local port (default {API_SERVER_PORT})",
        )


def facts(stack: dict[str, Any]) -> tuple[str, str, str]:
    airflow = stack.get("airflow") or {}
    try:
        return airflow["namespace"], airflow["release"], airflow["admin_user_secret"]
    except KeyError as exc:
        raise UsageError(
            f"stack.yaml: airflow.{exc.args[0]} is missing; run `make validate`"
        ) from None


def admin_password(namespace: str, name: str, username: str, out=print) -> tuple[str, bool]:
    """(password, made now): the one in the Secret, or a new random one stored there first."""
    secret = read_secret(namespace, name)
    if secret is not None:
        data = secret.get("data") or {}
        if PASSWORD_KEY not in data:
            raise ToolkitError(
                f"Secret {namespace}/{name} has no key {PASSWORD_KEY!r}; delete it "
                "and run `make admin-user` again"
            )
        return base64.b64decode(data[PASSWORD_KEY]).decode(), False
    password = secrets.token_urlsafe(24)
    create_secret(
        namespace,
        name,
        PASSWORD_KEY,
        password,
        extra={USERNAME_KEY: username},
        note="first Airflow admin: random password, made once by `make admin-user`",
    )
    out(f"created Secret {namespace}/{name} (random password)")
    return password, True


def create_admin(namespace: str, release: str, username: str, email: str, password: str) -> str:
    result = kubectl(
        "exec",
        "--stdin",
        "--namespace",
        namespace,
        f"deployment/{release}-api-server",
        "--container",
        "api-server",
        "--",
        "bash",
        "-c",
        CREATE_USER,
        "create-admin",
        username,
        email,
        stdin=password,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise ToolkitError(
            f"airflow users create in {release}-api-server failed: "
            f"{output.splitlines()[-1] if output else 'no output'}"
        )
    return output


def admin_user(args, stack: dict[str, Any], out=print) -> int:
    namespace, release, secret = facts(stack)
    password, made_now = admin_password(namespace, secret, args.username, out)
    output = create_admin(namespace, release, args.username, args.email, password)
    if "already exist" in output and made_now:
        raise ToolkitError(
            f"Airflow already has a user {args.username!r}, so the new password in Secret "
            f"{namespace}/{secret} does not match it. Delete that user in the UI (or "
            f"`airflow users delete --username {args.username}` in the API server pod) and run "
            "`make admin-user` again."
        )
    out(
        f"Airflow admin {args.username!r} is ready. Password: kubectl get secret {secret} "
        f"--namespace {namespace} --output jsonpath='{{.data.{PASSWORD_KEY}}}' | base64 -d"
    )
    out("Open the UI: make ui")
    return 0


def ui(args, stack: dict[str, Any], out=print) -> int:
    namespace, release, _ = facts(stack)
    command = [
        os.environ.get("KUBECTL", "kubectl"),
        "port-forward",
        "--namespace",
        namespace,
        f"service/{release}-api-server",
        f"{args.port}:{API_SERVER_PORT}",
    ]
    out(f"Airflow UI on http://127.0.0.1:{args.port} (Ctrl-C stops); log in with `make admin-user`")
    out("+ " + " ".join(command))
    try:
        os.execvp(command[0], command)  # kubectl owns the terminal from here
    except FileNotFoundError:
        raise ToolkitError(f"{command[0]}: not found; install kubectl") from None
    return 0  # not reached


def run(args) -> int:
    stack = load_stack()
    return admin_user(args, stack) if args.command == "admin-user" else ui(args, stack)

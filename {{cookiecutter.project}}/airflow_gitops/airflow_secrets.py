"""``connection`` / ``variable``: store one Airflow connection or variable in AWS Secrets Manager,
where Airflow's secrets backend reads it (helm/values.yaml ``config.secrets``).

The secret is ``<prefix>/<name>`` (stack.yaml ``secrets.*``), which is exactly the id the amazon
provider's ``SecretsManagerBackend`` asks for: prefix, its separator "/", then the connection id
or variable key. A connection is stored as Airflow's URI form or its JSON form (a value that
starts with "{"), the two the backend accepts; a variable as its plain value.

The value never comes from the command line (where ``ps``, shell history and CI logs keep it):
it is read from the environment (``URI`` for a connection, ``VALUE`` for a variable) or, when
that is unset, from stdin (without echo on a terminal). Nothing printed contains it.

Run it with AWS credentials allowed ``secretsmanager:DescribeSecret``, ``CreateSecret`` and
``PutSecretValue`` on the prefix (an admin's; no CI role and no pod holds them).
"""

from __future__ import annotations

import json
import os
import re
import sys

from airflow_gitops.errors import ToolkitError, UsageError
from airflow_gitops.stack import load_stack

# command -> (stack.yaml secrets key, environment variable holding the value, what it is)
KINDS = {
    "connection": ("connections_prefix", "URI", "connection"),
    "variable": ("variables_prefix", "VALUE", "variable"),
}
# Airflow's rule for connection ids and variable keys (airflow.utils.helpers.validate_key):
# letters, digits, "_", "-" and "."; at most 250 characters.
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
# A connection URI: <conn-type>://... (Airflow parses the scheme as the connection type).
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+._-]*://")
MAX_BYTES = 65536  # Secrets Manager's limit for one secret value


def add_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="connection id or variable key")


def secret_id(stack: dict, command: str, name: str) -> str:
    """The Secrets Manager name Airflow's backend asks for when it looks ``name`` up."""
    prefix_key, _, kind = KINDS[command]
    if not NAME.fullmatch(name or ""):
        raise UsageError(
            f"{kind} name {name!r}: letters, digits, '_', '-' and '.' only, 1-250 characters "
            "(Airflow's rule for ids and keys)"
        )
    return f"{stack['secrets'][prefix_key].rstrip('/')}/{name}"


def read_value(command: str, environ=os.environ, stdin=sys.stdin) -> str:
    """The value from $URI / $VALUE, else stdin (no echo on a terminal); never from argv."""
    _, variable, kind = KINDS[command]
    value = environ.get(variable)
    if value is None:
        if stdin.isatty():
            import getpass

            value = getpass.getpass(f"{kind} value (not echoed): ")
        else:
            value = stdin.read()
    value = value.rstrip("\r\n")  # `echo ... |` and heredocs add one
    if not value:
        raise UsageError(f"{kind}: empty value; set {variable} in the environment or pipe it in")
    if len(value.encode()) > MAX_BYTES:
        raise UsageError(
            f"{kind}: value of {len(value.encode())} bytes; Secrets Manager takes "
            f"at most {MAX_BYTES}"
        )
    if command == "connection":
        check_connection(value)
    return value


def check_connection(value: str) -> None:
    """Refuse what Airflow's backend could not turn into a connection (the message never
    repeats the value: it is a secret)."""
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"connection: the value starts with '{{' but is not valid JSON "
                f"(line {exc.lineno}, column {exc.colno})"
            ) from None
        if not isinstance(parsed, dict):
            raise UsageError("connection: a JSON value must be an object") from None
        return
    if not URI.match(value):
        raise UsageError(
            "connection: the value is neither a URI (<conn-type>://...) nor a JSON "
            'object; see README, "Connections and variables"'
        )


def store(session, name: str, value: str, description: str) -> tuple[str, str]:
    """Create the secret, or add a new version when it exists. Returns (action, version id)."""
    from botocore.exceptions import ClientError

    client = session.client("secretsmanager")
    try:
        client.describe_secret(SecretId=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        created = client.create_secret(Name=name, SecretString=value, Description=description)
        return "created", created["VersionId"]
    updated = client.put_secret_value(SecretId=name, SecretString=value)
    return "updated", updated["VersionId"]


def run(args, environ=os.environ, stdin=sys.stdin, session=None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    stack = load_stack()
    name = secret_id(stack, args.command, args.name)
    value = read_value(args.command, environ, stdin)
    kind = KINDS[args.command][2]
    if session is None:
        from airflow_gitops.aws.session import new_session

        session = new_session(stack["aws"]["region"])
    description = f"Airflow {kind} {args.name} of {stack['project']} (make {args.command})"
    try:
        action, version = store(session, name, value, description)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ToolkitError(
            f"{kind} {args.name}: Secrets Manager refused {name} "
            f"({error.get('Code')}: {error.get('Message')})"
        ) from None
    except BotoCoreError as exc:
        raise ToolkitError(f"{kind} {args.name}: cannot reach Secrets Manager ({exc})") from None
    print(
        f"{kind} {args.name}: {action} secret {name} in {stack['aws']['region']} "
        f"(version {version}); the value is not shown"
    )
    return 0

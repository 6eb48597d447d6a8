"""Run by an interpreter that has Airflow and its amazon provider (not by the toolkit's own):
Airflow's own S3 task-log IO and Secrets Manager backend, configured by AIRFLOW__* variables
(the ``config`` of helm/values.yaml, see ``airflow_env``), against whatever AWS the environment
points at. One phase per process, so each phase's requests can be told apart:

    python -m airflow_gitops.airflow_probe secrets CONN_ID VARIABLE_KEY
    python -m airflow_gitops.airflow_probe write LOCAL_LOG_FOLDER RELATIVE_LOG_PATH
    python -m airflow_gitops.airflow_probe read LOCAL_LOG_FOLDER RELATIVE_LOG_PATH

Prints one JSON line. Used by `make demo` and the template's
tests/toolkit/test_airflow_backends.py.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

WRITES = ("hello from the task\n", "second upload\n")  # a retry appends to the same log


def airflow_env(config: dict, base: dict, home: str) -> dict:
    """``base`` (an environment) with helm/values.yaml ``config.logging`` and ``config.secrets``
    as Airflow's AIRFLOW__SECTION__KEY variables, and a throw-away AIRFLOW_HOME."""
    env = {k: v for k, v in base.items() if not k.startswith("AIRFLOW__")}
    for section in ("logging", "secrets"):
        for key, value in (config.get(section) or {}).items():
            env[f"AIRFLOW__{section.upper()}__{key.upper()}"] = str(value)
    env.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    )
    return env


def main(argv: list[str]) -> dict:
    from airflow.configuration import conf

    phase = argv[0]
    if phase == "secrets":
        from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend

        backend = SecretsManagerBackend(**json.loads(conf.get("secrets", "backend_kwargs")))
        conn = backend.get_connection(argv[1])
        fields = ("conn_type", "host", "login", "port", "schema")
        found = conn and {k: getattr(conn, k) for k in fields}
        if conn:  # the password is a secret: only its digest leaves this process
            found["password_sha256"] = hashlib.sha256((conn.password or "").encode()).hexdigest()
        return {"conn": found, "variable": backend.get_variable(argv[2])}
    from airflow.providers.amazon.aws.log.s3_task_handler import S3RemoteLogIO

    base, relative = pathlib.Path(argv[1]), argv[2]
    io = S3RemoteLogIO(
        remote_base=conf.get("logging", "remote_base_log_folder"),
        base_log_folder=base,
        delete_local_copy=False,
    )
    if phase == "write":
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        for text in WRITES:
            (base / relative).write_text(text)
            io.upload(relative, None)
        return {"written": list(WRITES)}
    messages, logs = io.read(relative, None)
    return {"log": {"messages": messages, "logs": logs}}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))

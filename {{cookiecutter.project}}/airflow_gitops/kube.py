"""The one way the toolkit runs kubectl: captured, with a timeout, input on stdin.

``KUBECTL`` overrides the binary (the tests point it at a fake). Secrets and archives go in
on stdin, never on the command line, so they do not show in process listings or logs.
"""

from __future__ import annotations

import os
import subprocess

from airflow_gitops.errors import ToolkitError

TIMEOUT_SECONDS = 900


def kubectl(*args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess:
    """Run kubectl; stdout and stderr come back as text whatever ``stdin`` was."""
    binary = os.environ.get("KUBECTL", "kubectl")
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        result = subprocess.run(
            [binary, *args], input=data, capture_output=True, timeout=TIMEOUT_SECONDS
        )
    except FileNotFoundError:
        raise ToolkitError(f"{binary}: not found; install kubectl") from None
    except subprocess.TimeoutExpired:
        raise ToolkitError(
            f"kubectl {' '.join(args[:2])}: no answer in {TIMEOUT_SECONDS} s"
        ) from None
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )

"""A moto server on 127.0.0.1: the stand-in for AWS used by the tests and by `make demo`.

moto runs as a separate process and is reached over real HTTP through AWS_ENDPOINT_URL, so
the code under test takes exactly the path it takes against AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator

HOST = "127.0.0.1"

# Dummy credentials: moto accepts anything, and real credentials must never reach it.
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class MotoServer:
    """One moto server process. ``endpoint`` is its URL; ``env()`` the variables to reach it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen | None = None

    def env(self, region: str = "eu-west-1") -> dict[str, str]:
        return {
            **FAKE_ENV,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
        }

    def start(self, timeout: float = 30.0) -> "MotoServer":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} in {timeout:.0f}s")

    def reset(self) -> None:
        """Forget every resource, so one server can serve many tests."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        # Slow when moto reloads the AWS managed policies (tests: MOTO_IAM_LOAD_MANAGED_POLICIES).
        urllib.request.urlopen(request, timeout=60).close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextmanager
def moto_server(port: int | None = None) -> Iterator[MotoServer]:
    server = MotoServer(port).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def aws_env(server: MotoServer, region: str = "eu-west-1") -> Iterator[None]:
    """Point boto3 in this process at ``server`` for the duration of the block."""
    saved = {key: os.environ.get(key) for key in (*server.env(region), "AWS_PROFILE")}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(server.env(region))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

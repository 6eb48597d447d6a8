"""Local AWS on 127.0.0.1: a moto server with what it lacks filled in, for `make local-aws`, the
tests and the template's demo.

moto runs as a server reached over real HTTP through AWS_ENDPOINT_URL, so the toolkit takes
exactly the path it takes against AWS. The server process (``python -m airflow_gitops.local_aws``)
is moto's own WSGI app with two gaps of moto 5.2.5 filled, both stated where they are filled:

- EKS access entries and add-ons, which moto lacks: ``local_eks.EksExtras`` answers them on
  the same port; every other EKS call (DescribeCluster included) is moto's.
- The bucket's TLS-only policy: moto skips the ``Bool`` condition operator and so applies that
  Deny to every request; ``evaluate_bucket_policies_as_aws_over_tls`` makes it evaluate
  ``aws:SecureTransport`` as AWS does for HTTPS (every request to AWS is HTTPS).

`make local-aws` (the ``local-aws`` command) serves in the foreground, creates the EKS cluster
stack.yaml names (the one thing `bootstrap` and `apply` need that they do not create), and
prints the environment to export in another shell.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

HOST = "127.0.0.1"
DEFAULT_PORT = 5123
# Dummy credentials: moto accepts anything, and real credentials must never reach it.
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# This server's own endpoint (beside moto's /moto-api/): what the EKS stand-in answered.
STATE_PATH = "/local-aws/state"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class MotoServer:
    """One local AWS server process. ``endpoint`` is its URL; ``env()`` the variables to
    reach it."""

    def __init__(self, port: int | None = None, account: str | None = None) -> None:
        self.port = port or free_port()
        self.account = account
        self.endpoint = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen | None = None

    def env(self, region: str = "eu-west-1") -> dict[str, str]:
        return {
            **FAKE_ENV,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
        }

    def start(self, timeout: float = 30.0) -> MotoServer:
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "airflow_gitops.local_aws", "--port", str(self.port)]
        if self.account:
            argv += ["--account", self.account]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"local AWS server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"local AWS server did not answer on {self.endpoint} in {timeout:.0f}s")

    def reset(self) -> None:
        """Forget every resource, so one server can serve many tests."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        # Slow when moto reloads the AWS managed policies (tests: MOTO_IAM_LOAD_MANAGED_POLICIES).
        urllib.request.urlopen(request, timeout=60).close()

    def state(self) -> dict:
        """What the EKS stand-in holds and the operations it answered."""
        with urllib.request.urlopen(f"{self.endpoint}{STATE_PATH}", timeout=5) as response:
            return json.loads(response.read())

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


# --- the server process ----------------------------------------------------------------------


def evaluate_bucket_policies_as_aws_over_tls() -> None:
    """Teach moto the ``Bool`` condition operator and evaluate each request as AWS sees it
    over TLS; a statement whose Condition does not match then does what IAM says: nothing
    (neither allow nor deny). Without this, `bootstrap`'s TLS-only policy denies everything."""
    from moto.iam import access_control, policy_conditions

    def bool_equals(expected, actual) -> bool:
        wanted = expected if isinstance(expected, list) else [expected]
        return str(actual).lower() in [str(value).lower() for value in wanted]

    policy_conditions.CONDITION_OPERATIONS.setdefault("Bool", bool_equals)
    statement = access_control.IAMPolicyStatement
    original = statement.is_action_permitted

    def is_action_permitted(
        self, action, resource="*", principal=None, incoming_condition_values=None
    ):
        values = {"aws:SecureTransport": "true", **(incoming_condition_values or {})}
        if self._statement.get("Condition") and not self._check_conditions(values):
            return access_control.PermissionResult.NEUTRAL
        return original(self, action, resource, principal, values)

    statement.is_action_permitted = is_action_permitted


def local_aws_app(extras):
    """moto's WSGI app behind the EKS stand-in, plus this server's state and reset."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from airflow_gitops import local_eks

    evaluate_bucket_policies_as_aws_over_tls()
    # AWS managed policies exist in every real account, and bootstrap attaches one
    # (AmazonEBSCSIDriverPolicy); moto has them only when told to load them.
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    moto_app = DomainDispatcherApplication(create_backend_app)
    front = local_eks.wsgi(extras, moto_app)

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == STATE_PATH:
            data = json.dumps({"answered": extras.answered, **extras.state()}).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
            )
            return [data]
        if path == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
            extras.reset()
        return front(environ, start_response)

    return application


def make_local_server(port: int, account: str | None):
    """(werkzeug server, EksExtras) on 127.0.0.1:``port``; moto's default account is
    ``account`` (set before moto is imported, as moto reads it then)."""
    if account:
        os.environ["MOTO_ACCOUNT_ID"] = account
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    from airflow_gitops.local_eks import EksExtras

    # Bound here, not by werkzeug, which prints its own paragraph and exits on a busy port.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((HOST, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    extras = EksExtras()
    server = make_server(HOST, port, local_aws_app(extras), threaded=True, fd=listener.fileno())
    listener.detach()  # werkzeug's socket owns the descriptor now
    return server, extras


def create_cluster(ec2, eks, name: str, account: str) -> dict:
    """An EKS cluster in moto with what DescribeCluster shows on AWS and `apply` reads: its
    OIDC issuer, VPC, subnets (two zones, two subnets in one) and cluster security group.

    moto keeps resourcesVpcConfig as sent and botocore drops output-only fields, so vpcId and
    clusterSecurityGroupId are added to the request body before it is signed."""
    region = ec2.meta.region_name
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{region}{zone}"
        )["Subnet"]["SubnetId"]
        for i, zone in enumerate("aba")
    ]
    cluster_sg = ec2.create_security_group(
        GroupName=f"eks-cluster-sg-{name}", Description="EKS cluster", VpcId=vpc
    )["GroupId"]

    def add_output_fields(request, **kwargs):
        body = json.loads(request.body)
        body["resourcesVpcConfig"].update(clusterSecurityGroupId=cluster_sg, vpcId=vpc)
        request.data = json.dumps(body).encode()
        request.headers["Content-Length"] = str(len(request.data))

    event = "before-sign.eks.CreateCluster"
    eks.meta.events.unregister(event, unique_id="add-output-fields")
    eks.meta.events.register(event, add_output_fields, unique_id="add-output-fields")
    eks.create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{account}:role/eks-cluster",
        resourcesVpcConfig={"subnetIds": subnets},
    )
    return {"vpc": vpc, "subnets": subnets, "cluster_sg": cluster_sg}


def exports(endpoint: str, region: str) -> str:
    variables = {
        **FAKE_ENV,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    return "export " + " ".join(f"{k}={v}" for k, v in variables.items()) + "; unset AWS_PROFILE"


# --- `python -m airflow_gitops local-aws` ----------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})"
    )


def served_clusters(stack: dict) -> tuple[str | None, str, list[tuple[str, str]]]:
    """(the environment the hints name, or None in a one-environment repo; the account served;
    the (region, cluster) of every environment in that account, the named one's first).

    Every environment's cluster is made, so ENV=<any of them> works against one server; the
    named one is ENV's when given, else the first."""
    from airflow_gitops.stack import (
        ENV_VARIABLE,
        choose_environment,
        environment_names,
        environment_view,
    )

    names = environment_names(stack)
    chosen = names[0] if len(names) > 1 and not os.environ.get(ENV_VARIABLE) else None
    chosen = chosen or choose_environment(stack)
    views = [environment_view(stack, name) for name in [chosen, *names] if name or not names]
    account = str(views[0]["aws"]["account_id"])
    clusters = []
    for view in views:
        place = (view["aws"]["region"], view["eks"]["cluster_name"])
        if str(view["aws"]["account_id"]) == account and place not in clusters:
            clusters.append(place)
    return chosen, account, clusters


def run(args) -> int:
    """Serve local AWS in the foreground with the clusters stack.yaml names, until Ctrl-C."""
    import boto3

    from airflow_gitops.errors import UsageError
    from airflow_gitops.stack import read_stack

    env, account, clusters = served_clusters(read_stack())
    region, cluster = clusters[0]
    try:
        server, _ = make_local_server(args.port, account)
    except OSError as exc:
        raise UsageError(
            f"--port {args.port}: cannot listen on {HOST} ({exc.strerror}); "
            "stop what uses it or pass another, e.g. make local-aws PORT=5124"
        ) from None
    endpoint = f"http://{HOST}:{server.port}"
    threading.Thread(target=server.serve_forever, name="local-aws", daemon=True).start()
    for place_region, place_cluster in clusters:
        session = boto3.Session(
            region_name=place_region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
        )
        create_cluster(
            session.client("ec2", endpoint_url=endpoint),
            session.client("eks", endpoint_url=endpoint),
            place_cluster,
            account,
        )
    import moto

    others = "".join(f", EKS cluster {c} in {r}" for r, c in clusters[1:])
    print(
        f"Local AWS (moto {moto.__version__}, with EKS access entries and add-ons) on "
        f"{endpoint}: account {account}, region {region}, EKS cluster {cluster}{others}."
    )
    print("In another shell, in this repository:")
    print(f"  {exports(endpoint, region)}")
    print(
        "  "
        + " && ".join(
            f"make {target}{f' ENV={env}' if env else ''}"
            for target in ("bootstrap", "apply", "push-dags", "pull-dags DEST=/tmp/dags")
        )
    )
    print("Everything lives in memory; Ctrl-C stops it.", flush=True)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        stop.wait()
    finally:
        server.shutdown()
    print("local AWS stopped: everything it held is gone.")
    return 0


def stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C or SIGTERM ends the server cleanly, also when started in the background (where
    the shell hands SIGINT down ignored)."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


def main(argv: list[str] | None = None) -> int:
    """The bare server (no cluster, no stack.yaml) that ``MotoServer`` starts."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m airflow_gitops.local_aws")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account", help="moto's default account id")
    args = parser.parse_args(argv)
    server, _ = make_local_server(args.port, args.account)
    threading.Thread(target=server.serve_forever, name="local-aws", daemon=True).start()
    stop = threading.Event()
    stop_on_signals(stop)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

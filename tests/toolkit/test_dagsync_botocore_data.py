"""The sync agent's slice of botocore's data (dagsync/botocore_data.py, written by its image).

The slice must change nothing but start-up time: a client on it sends byte-identical, identically
signed requests and parses identical responses for every operation the agent (and botocore on
its behalf) calls, against the moto server on 127.0.0.1; endpoints resolve as with botocore's
full file; and a botocore without one of the operations stops the image build.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

import boto3
import botocore
import botocore.auth
import botocore.loaders
import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.regions import EndpointResolver

from airflow_gitops.dagsync import agent, botocore_data, push, s3
from airflow_gitops.local_aws import aws_env, moto_server

from repos import REPO  # the default bake

BUCKET = "dag-bucket-slice"
PREFIX = "dags"
DAGSYNC = REPO / "airflow_gitops" / "dagsync"
FULL = botocore.loaders.Loader(
    [botocore.loaders.Loader.BUILTIN_DATA_PATH], include_default_search_paths=False
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("botocore-data")
    assert botocore_data.main([str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def server():
    with moto_server() as srv, aws_env(srv):
        yield srv


def full_model() -> dict:
    version = FULL.determine_latest_version("s3", "service-2")
    return FULL.load_data_with_path(f"s3/{version}/service-2")[0]


def shape_refs(node) -> set[str]:
    if isinstance(node, dict):
        own = {node["shape"]} if isinstance(node.get("shape"), str) else set()
        return own.union(*(shape_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(shape_refs(v) for v in node))
    return set()


def test_the_slice_keeps_the_operations_and_every_shape_they_reference_unchanged(data):
    full = full_model()
    [path] = (data / "s3").glob("*/service-2.json")
    sliced = json.loads(path.read_text())
    assert list(sliced["operations"]) == sorted(botocore_data.OPERATIONS)
    assert all(sliced["operations"][n] == full["operations"][n] for n in sliced["operations"])
    assert all(sliced["shapes"][n] == full["shapes"][n] for n in sliced["shapes"])
    closed = shape_refs([*sliced["operations"].values(), *sliced["shapes"].values()])
    assert closed == set(sliced["shapes"])  # every reference defined, nothing unreferenced
    assert {k: v for k, v in sliced.items() if k not in ("operations", "shapes")} == {
        k: v for k, v in full.items() if k not in ("operations", "shapes")
    }
    assert len(full["operations"]) > 90 and len(sliced["shapes"]) < len(full["shapes"]) / 4
    assert "PutObject" not in sliced["operations"] and "PutObjectRequest" not in sliced["shapes"]


def test_a_botocore_without_an_operation_stops_the_build_with_one_line(tmp_path):
    with pytest.raises(ValueError, match="operations NoSuchThing are not in the model"):
        botocore_data.trim_model(full_model(), ["GetObject", "NoSuchThing"])
    script = (
        "import sys\n"
        "from airflow_gitops.dagsync import botocore_data as b\n"
        "b.OPERATIONS += ('NoSuchThing',)\n"
        "raise SystemExit(b.main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"ERROR: botocore {botocore.__version__}: operations NoSuchThing are not in the model\n"
    )
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_everything_the_agent_calls_is_in_the_slice():
    """Read from the agent's source, so a new call cannot miss the slice unnoticed."""
    source = "".join((DAGSYNC / name).read_text() for name in ("agent.py", "s3.py"))
    methods = set(re.findall(r"client\.(\w+)\(", source)) - {"get_paginator"}
    methods |= set(re.findall(r"get_paginator\(\"(\w+)\"\)", source))
    assert {"get_object", "list_objects_v2"} <= methods
    api = botocore.session.get_session().create_client("s3", "eu-west-1").meta
    assert {api.method_to_api_mapping[m] for m in methods} <= set(botocore_data.OPERATIONS)


def test_the_slice_keeps_every_service_botocore_creates_a_client_for():
    """Credential and token providers build their own clients (STS for IRSA, ...) from the
    agent's session: read from botocore's source, so an upgrade adding one fails here."""
    folder = Path(botocore.__file__).parent
    created = set()
    for name in ("credentials.py", "tokens.py", "utils.py"):
        text = (folder / name).read_text()
        created |= set(re.findall(r"client_creator\(\s*['\"]([\w-]+)['\"]", text))
        created |= set(re.findall(r"create_nested_client\(\s*[\w.]+,\s*['\"]([\w-]+)['\"]", text))
    assert {"sts", "sso"} <= created
    assert created <= set(botocore_data.SERVICES)


def answer(function, *args):
    """What ``function(*args)`` returns, or the error it raises (type and text)."""
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001 (compared, not hidden)
        return type(exc).__name__, str(exc)


def test_endpoints_resolve_as_with_botocores_full_file(data):
    full = EndpointResolver(FULL.load_data("endpoints"))
    sliced = EndpointResolver(json.loads((data / "endpoints.json").read_text()))
    assert sliced.get_available_partitions() == full.get_available_partitions()
    checked = 0
    for partition in FULL.load_data("endpoints")["partitions"]:
        name = partition["partition"]
        # Listed regions, one that only matches the partition's pattern, one that matches none.
        for region in [*partition["regions"], "us-nowhere-9", "xx-nowhere-1"]:
            assert answer(sliced.get_partition_for_region, region) == answer(
                full.get_partition_for_region, region
            )
            for service in botocore_data.SERVICES:
                for dualstack, fips in ((False, False), (True, False), (False, True)):
                    args = (service, region, name, dualstack, fips)
                    assert answer(sliced.construct_endpoint, *args) == answer(
                        full.construct_endpoint, *args
                    )
                    checked += 1
        for service in botocore_data.SERVICES:
            assert sliced.get_available_endpoints(service, name) == full.get_available_endpoints(
                service, name
            )
    assert checked > 500
    size = len((data / "endpoints.json").read_bytes())
    assert size < len(json.dumps(FULL.load_data("endpoints"))) / 20


def test_credential_clients_on_the_slice_reach_the_same_endpoints(data, monkeypatch):
    """IRSA builds an STS client from the agent's session: with the slice on the data path it
    still loads STS's full model (botocore's folder) and resolves the same endpoint."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS", raising=False)

    def endpoints(data_path: Path | None) -> list[tuple[str, int]]:
        if data_path is None:
            monkeypatch.delenv("AWS_DATA_PATH", raising=False)
        else:
            monkeypatch.setenv("AWS_DATA_PATH", str(data_path))
        session = botocore.session.get_session()
        s3._check_services_on_demand(session)  # as the agent's own session
        found = []
        for region in ("eu-west-1", "us-east-1", "cn-north-1", "us-gov-west-1"):
            for service in ("sts", "sso"):
                client = session.create_client(service, region_name=region)
                found.append(
                    (client.meta.endpoint_url, len(client.meta.service_model.operation_names))
                )
        return found

    assert endpoints(data) == endpoints(None)


# --- the same requests and responses, over HTTP ----------------------------------------------


@pytest.fixture
def bucket(server, tmp_path):
    """A bucket holding a push-dags generation and one object written by another tool."""
    server.reset()
    client = boto3.client("s3")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    source = tmp_path / "source"
    for i in range(30):
        (source / f"team_{i % 3}").mkdir(parents=True, exist_ok=True)
        (source / f"team_{i % 3}" / f"dag_{i}.py").write_text(f"# dag {i}\n" * 20)
    push.push_dags(source, BUCKET, PREFIX)
    client.put_object(Bucket=BUCKET, Key="other/a.py", Body=b"print(1)\n")
    return client


def agent_client(monkeypatch, data_path: Path | None):
    """The agent's own client (make_s3_client), with or without the slice on AWS_DATA_PATH."""
    if data_path is None:
        monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    else:
        monkeypatch.setenv("AWS_DATA_PATH", str(data_path))
    client = s3.make_s3_client()
    sent: list = []

    def record(request, **_):
        headers = {k: v for k, v in request.headers.items() if k != "amz-sdk-invocation-id"}
        sent.append((request.method, request.url, headers, request.body))

    client.meta.events.register("before-send.s3", record)
    return client, sent


def calls(client) -> list:
    """Every operation in the slice, as the agent and botocore call them, and what came back."""
    manifest_key = s3.key_for(PREFIX, s3.MANIFEST_KEY)
    out = []

    def outcome(call):
        try:
            response = call()
        except ClientError as exc:
            response = exc.response
        response = dict(response)
        body = response.pop("Body", None)
        meta = response.pop("ResponseMetadata")
        headers = {
            k: v
            for k, v in meta["HTTPHeaders"].items()
            if k not in ("date", "x-amz-request-id", "x-amzn-requestid")
        }
        return response, meta["HTTPStatusCode"], headers, body.read() if body else None

    manifest = client.get_object(Bucket=BUCKET, Key=manifest_key, ChecksumMode="ENABLED")
    etag, pack = manifest["ETag"], json.loads(manifest["Body"].read())["packs"][0][0]
    out.append(outcome(lambda: client.get_object(Bucket=BUCKET, Key=manifest_key)))
    out.append(
        outcome(lambda: client.get_object(Bucket=BUCKET, Key=manifest_key, IfNoneMatch=etag))
    )
    out.append(outcome(lambda: client.get_object(Bucket=BUCKET, Key=s3.key_for(PREFIX, pack))))
    out.append(
        outcome(
            lambda: client.get_object(
                Bucket=BUCKET, Key=f"{PREFIX}/team_0/dag_0.py", ChecksumMode="ENABLED"
            )
        )
    )
    out.append(outcome(lambda: client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/missing.py")))
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{PREFIX}/", PaginationConfig={"PageSize": 7}
    )
    out.append([dict(page, ResponseMetadata=None) for page in pages])
    out.append(outcome(lambda: client.list_objects_v2(Bucket=BUCKET, Prefix="other/")))
    out.append(outcome(lambda: client.head_bucket(Bucket=BUCKET)))
    out.append(outcome(lambda: client.head_bucket(Bucket="no-such-bucket-here")))
    out.append(outcome(lambda: client.create_session(Bucket=BUCKET)))
    return out


def test_a_client_on_the_slice_sends_and_parses_exactly_what_the_full_model_does(
    server, bucket, data, monkeypatch
):
    fixed = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=datetime.UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)  # same signatures
    full, full_sent = agent_client(monkeypatch, None)
    sliced, sliced_sent = agent_client(monkeypatch, data)
    assert len(full.meta.service_model.operation_names) > 90
    assert sorted(sliced.meta.service_model.operation_names) == sorted(botocore_data.OPERATIONS)
    assert calls(sliced) == calls(full)
    assert sliced_sent == full_sent
    assert len(full_sent) >= 12
    assert all(b"Signature=" in h["Authorization"] for _, _, h, _ in full_sent)  # SigV4 compared


def test_the_agent_syncs_on_the_slice(server, bucket, data, monkeypatch, tmp_path):
    """Cold start from the packs, then a prefix without a manifest (listing mode)."""
    client, sent = agent_client(monkeypatch, data)
    with agent.SyncAgent(client, BUCKET, PREFIX, tmp_path / "dest") as sync:
        result = sync.sync_once()
    assert result.changed and result.from_bundle == 30
    current = tmp_path / "dest" / "current"
    assert (current / "team_1" / "dag_4.py").read_text() == "# dag 4\n" * 20
    with agent.SyncAgent(client, BUCKET, "other", tmp_path / "other") as sync:
        assert sync.sync_once().downloaded == 1
    assert (tmp_path / "other" / "current" / "a.py").read_bytes() == b"print(1)\n"


def test_the_image_writes_the_slice_and_points_botocore_at_it():
    dockerfile = (REPO / "images" / "s3-sync" / "Dockerfile").read_text()
    folder = re.search(r"^ENV AWS_DATA_PATH=(\S+)$", dockerfile, re.M).group(1)
    assert folder.startswith("/app/")
    assert re.search(
        r"^RUN python -m airflow_gitops\.dagsync\.botocore_data \"\$AWS_DATA_PATH\"",
        dockerfile,
        re.M,
    )
    # push-dags and the rest of the toolkit run outside the image, on botocore's full data:
    # no toolkit code sets or reads the variable.
    toolkit = list((REPO / "airflow_gitops").rglob("*.py"))
    assert len(toolkit) > 10
    assert not any(re.search(r"[\"']AWS_DATA_PATH[\"']", p.read_text()) for p in toolkit)


def test_the_slice_is_reproducible(data, tmp_path):
    again = tmp_path / "again"
    botocore_data.write_data(str(again))
    files = sorted(p.relative_to(data) for p in data.rglob("*.json"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.json"))
    assert all((data / f).read_bytes() == (again / f).read_bytes() for f in files)

"""`make demo` (tools/demo.py) end to end: it generates a dev,prod repo and moves prod to another
region, validates, converges dev on a local moto twice (the second time changing nothing),
ships the example DAG and pulls it back, promotes dev's commit to prod, deploys prod from that
pin in its own region, and previews the next promotion; and it stops its moto server whether it
succeeds, fails or is interrupted."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import PYTHON, TEMPLATE

DEMO = TEMPLATE / "tools" / "demo.py"
MOTO_LINE = re.compile(r"moto (http://127\.0\.0\.1:(\d+)) \(pid (\d+)\)")


def load_demo():
    """tools/demo.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def demo_env(**extra: str) -> dict[str, str]:
    """The caller's environment with AWS settings that must NOT be used: if the demo let any
    of them through, boto3 would fail (unknown profile) or go to a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_PROFILE="must-not-be-used",
        AWS_ACCESS_KEY_ID="AKIAMUSTNOTBEUSED",
        AWS_SECRET_ACCESS_KEY="must-not-be-used",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_ENDPOINT_URL_S3="http://127.0.0.1:9",
        **extra,
    )
    return env


def start_demo(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, str(DEMO), "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_stopped(port: int, pid: int) -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


STEPS = [
    "generate",
    "edit",
    "validate",
    "git",
    "aws",
    "dev-bootstrap",
    "dev-apply",
    "dev-apply-again",
    "dev-push-dags",
    "dev-pull-dags",
    "promote",
    "validate-pin",
    "checkout",
    "prod-bootstrap",
    "prod-apply",
    "prod-push-dags",
    "prod-pull-dags",
    "placement",
    "diff",
]
COUNT = len(STEPS)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.slow  # the demo itself: two environments, 19 steps
def test_demo_runs_dev_then_prod_in_another_region_through_one_promotion(tmp_path):
    result = subprocess.run(
        [PYTHON, str(DEMO), "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    # progress: one line per step, each with its time
    steps = re.findall(rf"^\[ ?(\d+)/{COUNT}\] .+? ok +\d+\.\ds \(total +\d+\.\ds\)", out, re.M)
    assert steps == [str(n) for n in range(1, COUNT + 1)], out

    summary = json.loads((tmp_path / "out" / "demo-summary.json").read_text())
    assert summary["ok"] is True
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert summary["generated"]["dag_source"] == "s3-sync"
    assert summary["generated"]["files"] > 20
    assert summary["generated"]["environments"] == ["dev", "prod"]
    assert summary["edited"]["aws.region"] == ["eu-west-1", "eu-west-2"]
    assert summary["validate"].startswith("0 findings"), summary["validate"]
    assert summary["validate_pinned"].startswith("0 findings"), summary["validate_pinned"]
    dev, prod = summary["dev"], summary["prod"]

    created = {kind for kind, _ in dev["bootstrap"]["changes"]}
    assert {
        "s3 bucket",
        "ecr repository",
        "iam oidc provider",
        "iam role",
        "iam policy",
        "eks access entry",
        "eks access policy",
        "eks add-on",
    } <= created
    # Both converged: bootstrap (the admin) makes everything; the deploy role's apply then
    # only checks. Prod's bootstrap leaves alone only the account's GitHub provider, dev's.
    for env in (dev, prod):
        assert env["bootstrap"]["created"] > 0
        assert (env["apply"]["created"], env["apply"]["updated"]) == (0, 0)
    made = {tuple(r) for r in prod["bootstrap"]["changes"]}
    assert [r for r in prod["bootstrap"]["resources"] if tuple(r) not in made] == [
        ["iam oidc provider", "token.actions.githubusercontent.com"]
    ]
    again = dev["apply_again"]
    assert (again["created"], again["updated"], again["changes"]) == (0, 0, [])
    assert again["state_unchanged"] is True
    assert re.search(
        r"^  apply again 0 created, 0 updated, \d+ unchanged -> changed nothing", out, re.M
    ), out

    # Prod runs the commit dev ran, and only through the pin: read back from git itself.
    repo = Path(summary["generated"]["path"])
    checkout = Path(prod["checkout"])
    pin = summary["promote"]["pin"]
    assert pin == dev["commit"] == prod["commit"] == git(checkout, "rev-parse", "HEAD")
    assert git(repo, "rev-list", "--max-parents=0", "HEAD") == pin  # the generated commit
    promotion = summary["promote"]["commit"]
    assert git(repo, "show", f"{promotion}:environments/prod/release.yaml").endswith(
        f"commit: {pin}"
    )
    assert git(repo, "show", "--name-only", "--format=", promotion) == (
        "environments/prod/release.yaml"
    )
    assert "commit: null" in git(checkout, "show", "HEAD:environments/prod/release.yaml")

    # Each environment's resources: in its region, on its cluster, named for it.
    for env, region, cluster in (
        (dev, "eu-west-1", "data-platform"),
        (prod, "eu-west-2", "data-platform-prod"),
    ):
        placed = env["placement"]["resources"]
        assert set(placed["s3 bucket"].values()) == {region}, placed["s3 bucket"]
        assert set(placed["ecr repository"].values()) == {region}, placed["ecr repository"]
        for kind in ("eks access entry", "eks access policy", "eks add-on"):
            assert set(placed[kind].values()) == {cluster}, placed[kind]
        assert f"oidc.eks.{region}.amazonaws.com" in " ".join(placed["iam oidc provider"])
    assert prod["placement"]["resources"]["s3 bucket"] == {
        "airflow-gitops-dags-123456789012-eu-west-2-prod": "eu-west-2",
        "airflow-gitops-prod-logs-123456789012": "eu-west-2",
    }
    # the same roles and policies as dev's, under prod's project prefix
    for kind in ("iam role", "iam policy", "ecr repository"):
        dev_names = set(dev["placement"]["resources"][kind])
        prod_names = set(prod["placement"]["resources"][kind])
        assert not any(name.startswith("airflow-gitops-prod") for name in dev_names)
        assert prod_names == {
            name.replace("airflow-gitops", "airflow-gitops-prod", 1) for name in dev_names
        }
    assert summary["untouched"]["changed"] == {} and summary["untouched"]["checked"] > 20

    # DAGs went up to each environment's bucket and came back, byte for byte.
    for env, source in (("dev", repo), ("prod", checkout)):
        pulled = Path(summary[env]["pull_dags"]["dest"])
        assert pulled == tmp_path / "out" / "demo-dags" / env / "current"
        assert (pulled / "example_dag.py").read_bytes() == (
            source / "dags" / "example_dag.py"
        ).read_bytes()
        assert f"  pull-dags   out/demo-dags/{env}/current/: example_dag.py" in out
    bucket = summary["prod"]["push_dags"]["output"]
    assert bucket.startswith("s3://airflow-gitops-dags-123456789012-eu-west-2-prod/dags:"), bucket

    # The next promotion's preview: two commits on, the values change.
    assert summary["diff"][0].startswith(f"prod: {pin[:12]} -> "), summary["diff"]
    assert "(2 commits)" in summary["diff"][0]
    assert any("helm/values.yaml" in line for line in summary["diff"])

    moto = summary["moto"]
    assert moto["clusters"] == [["eu-west-1", "data-platform"], ["eu-west-2", "data-platform-prod"]]
    assert moto["stopped"] and moto["port_closed"]
    assert_stopped(moto["port"], moto["pid"])
    assert f"pid {moto['pid']} on {moto['endpoint']}: stopped, port closed" in out
    assert summary["total_seconds"] < 240


def test_the_stack_edit_changes_three_lines_of_prod_only(baked, tmp_path):
    """What the demo does to stack.yaml, as a team would: prod's region, cluster and bucket;
    every other line as generated; the toolkit then sees prod there."""
    demo = load_demo()
    original = (baked(**demo.ANSWERS) / "stack.yaml").read_text()
    edited, changes = demo.place_environment(original, "prod", "eu-west-2")
    assert changes == {
        "aws.region": ["eu-west-1", "eu-west-2"],
        "eks.cluster_name": ["data-platform", "data-platform-prod"],
        "dags.bucket": [
            "airflow-gitops-dags-123456789012-eu-west-1-prod",
            "airflow-gitops-dags-123456789012-eu-west-2-prod",
        ],
    }
    different = [
        (a, b) for a, b in zip(original.splitlines(), edited.splitlines(), strict=True) if a != b
    ]
    assert len(different) == 3, different
    view = yaml.safe_load(edited)["environments"]
    assert view["dev"] == yaml.safe_load(original)["environments"]["dev"]
    assert (view["prod"]["aws"]["region"], view["prod"]["eks"]["cluster_name"]) == (
        "eu-west-2",
        "data-platform-prod",
    )
    with pytest.raises(ValueError, match="no environments.prod section"):
        demo.place_environment((baked() / "stack.yaml").read_text(), "prod", "eu-west-2")


@pytest.mark.slow  # the demo itself: two environments, 19 steps
def test_a_failing_step_is_named_with_its_output_and_moto_is_stopped(tmp_path):
    """A `make` that fails for `bootstrap` only: step 6 (dev's) fails after moto is up."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    real_make = subprocess.run(
        ["sh", "-c", "command -v make"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (fake_bin / "make").write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        for arg in "$@"; do
          if [ "$arg" = bootstrap ]; then echo "injected failure for bootstrap"; exit 3; fi
        done
        exec {real_make} "$@"
        """)
    )
    (fake_bin / "make").chmod(0o755)
    env = demo_env(PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [PYTHON, str(DEMO), "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(rf"^\[ 6/{COUNT}\] make bootstrap ENV=dev \.+ FAILED", result.stdout, re.M), (
        result.stdout
    )
    assert f"FAILED at step 6/{COUNT} (dev-bootstrap)" in result.stderr
    assert "exited 3" in result.stderr
    assert "    injected failure for bootstrap" in result.stderr  # the output's tail
    assert "Summary" not in result.stdout
    url, port, pid = MOTO_LINE.search(result.stdout).groups()
    assert f"moto server (pid {pid}, {url}) stopped." in result.stdout
    assert_stopped(int(port), int(pid))
    summary = json.loads((tmp_path / "out" / "demo-summary.json").read_text())
    assert (summary["ok"], summary["failed_step"]) == (False, "dev-bootstrap")


@pytest.mark.slow  # the demo itself: two environments, 19 steps
def test_ctrl_c_stops_moto_and_exits_130(tmp_path):
    demo = start_demo(tmp_path, demo_env())
    try:
        for line in demo.stdout:  # until step 5 (moto) has reported its endpoint
            match = MOTO_LINE.search(line)
            if match:
                break
        else:
            pytest.fail(f"no moto line; stderr: {demo.stderr.read()}")
        demo.send_signal(signal.SIGINT)  # the demo only, not its children: it must stop them
        rest, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 128 + signal.SIGINT, rest + err
    assert re.search(rf"INTERRUPTED during step \d+/{COUNT} \(\S+\) by SIGINT", err), err
    url, port, pid = match.groups()
    assert f"moto server (pid {pid}, {url}) stopped." in rest
    assert_stopped(int(port), int(pid))

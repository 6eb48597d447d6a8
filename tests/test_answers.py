"""Answers the template must refuse, with the exact line it prints and nothing left on disk;
and hostile answers it accepts, which must come out as data, never as code or template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TEMPLATE, bake

GITHUB_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
LABEL = (
    "a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and "
    "ending with a letter or digit"
)
BUCKET = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "answers.schema.json").read_text()
)["$defs"]["s3BucketName"]["x-allowed"]

# (answers, the exact ERROR line expected)
REJECTED = [
    ({"aws_account_id": "12345"}, 'aws_account_id = "12345": exactly 12 digits'),
    ({"aws_account_id": "12345678901a"}, 'aws_account_id = "12345678901a": exactly 12 digits'),
    (
        {"aws_region": "eu-west-9"},
        'aws_region = "eu-west-9": an AWS region of the commercial partition where EKS runs, e.g. eu-west-1',
    ),
    ({"namespace": "Airflow"}, f'namespace = "Airflow": {LABEL}'),
    ({"namespace": "a" * 64}, f'namespace = "{"a" * 64}": {LABEL}'),
    ({"namespace": 'air"flow'}, f'namespace = "air\\"flow": {LABEL}'),
    (
        {"airflow_release": "-airflow"},
        "airflow_release = \"-airflow\": a Helm release name: 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit",
    ),
    (
        {"git_ssh_key_secret": "ssh_key", "dag_source": "git-sync"},
        f'git_ssh_key_secret = "ssh_key": {LABEL}',
    ),
    ({"dag_bucket": "My_Bucket"}, f'dag_bucket = "My_Bucket": {BUCKET}'),
    ({"dag_bucket": "ab"}, f'dag_bucket = "ab": {BUCKET}'),
    ({"dag_bucket": "dags..bucket"}, f'dag_bucket = "dags..bucket": {BUCKET}'),
    ({"dag_bucket": "192.168.10.1"}, f'dag_bucket = "192.168.10.1": {BUCKET}'),
    ({"dag_bucket": "xn--dags"}, f'dag_bucket = "xn--dags": {BUCKET}'),
    ({"dag_bucket": "dags-s3alias"}, f'dag_bucket = "dags-s3alias": {BUCKET}'),
    (
        {"github_repository": "just-a-name"},
        'github_repository = "just-a-name": owner/name of a GitHub repository, e.g. example-org/airflow-gitops',
    ),
    (
        {"github_repository": "org/repo; rm -rf /"},
        'github_repository = "org/repo; rm -rf /": owner/name of a GitHub repository, e.g. example-org/airflow-gitops',
    ),
    (
        {"executor": "LocalExecutor"},
        'executor = "LocalExecutor": CeleryExecutor or KubernetesExecutor',
    ),
    (
        {"dag_source": "nfs"},
        'dag_source = "nfs": one of s3-sync, git-sync, efs, git-bundle, s3-bundle',
    ),
    ({"sync_interval_seconds": "2"}, 'sync_interval_seconds = "2": whole seconds from 5 to 3600'),
    ({"log_retention_days": "0"}, 'log_retention_days = "0": whole days from 1 to 3650'),
    ({"log_retention_days": "3651"}, 'log_retention_days = "3651": whole days from 1 to 3650'),
    ({"log_retention_days": "30d"}, 'log_retention_days = "30d": whole days from 1 to 3650'),
    (
        {"sync_interval_seconds": "30s"},
        'sync_interval_seconds = "30s": whole seconds from 5 to 3600',
    ),
    (
        {"dag_source": "git-sync", "git_known_hosts": ""},
        "git_known_hosts = \"\": required for git over SSH: the host's known_hosts line(s), e.g. from ssh-keyscan checked against the host's published keys",
    ),
    (
        {"dag_source": "git-bundle", "git_known_hosts": ""},
        "git_known_hosts = \"\": required for git over SSH: the host's known_hosts line(s), e.g. from ssh-keyscan checked against the host's published keys",
    ),
    (
        {"dag_source": "git-sync", "git_known_hosts": "github.com ssh-dss AAAA"},
        "git_known_hosts = \"github.com ssh-dss AAAA\": known_hosts lines 'host keytype base64key' with keytype one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com",
    ),
    (
        {"github_oidc_subject": "immutable"},
        'github_owner_id = "": required with the immutable subject format: the numeric id from the GitHub API',
    ),
    (
        {"airflow_version": "2.10.5"},
        'airflow_version = "2.10.5": an Airflow 3 version such as 3.2.2',
    ),
    (
        {"dag_prefix": "/dags/"},
        'dag_prefix = "/dags/": a key prefix such as dags or team/dags: safe characters separated by single slashes, no leading or trailing slash',
    ),
    (
        {"efs_volume_size": "5GB"},
        'efs_volume_size = "5GB": a Kubernetes quantity such as 5Gi (Mi, Gi or Ti)',
    ),
    ({"size": "large"}, 'size = "large": small or production'),
    (
        {"workers_min": "5", "workers_max": "2"},
        'workers_min = "5": a whole number of workers from 0 to 999, at most workers_max (2)',
    ),
    (
        {"workers_max": "0"},
        'workers_max = "0": a whole number of workers from 1 to 999, at least workers_min',
    ),
    (
        {"workers_max": "-1"},
        'workers_max = "-1": a whole number of workers from 1 to 999, at least workers_min',
    ),
    (
        {"ui_access": "alb"},
        'alb_certificate_arn = "": required with ui_access alb: an ACM certificate ARN in eu-west-1 and account 123456789012, arn:aws:acm:eu-west-1:123456789012:certificate/UUID',
    ),
    (
        {
            "ui_access": "alb",
            "alb_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012",
        },
        'alb_certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012": required with ui_access alb: an ACM certificate ARN in eu-west-1 and account 123456789012, arn:aws:acm:eu-west-1:123456789012:certificate/UUID',
    ),
    (
        {
            "ui_access": "alb",
            "alb_certificate_arn": "arn:aws:iam::123456789012:server-certificate/ui",
        },
        'alb_certificate_arn = "arn:aws:iam::123456789012:server-certificate/ui": an ACM certificate ARN, arn:aws:acm:REGION:ACCOUNT:certificate/UUID, in the repo\'s region and account (required with ui_access alb)',
    ),
    (
        {"ui_hostname": "Airflow.example.com/"},
        'ui_hostname = "Airflow.example.com/": a lowercase DNS name such as airflow.example.com',
    ),
    (
        {"project": "x$(touch pwned)"},
        "project = \"x$(touch pwned)\": 2-40 lowercase letters, digits and '-', starting and ending with a letter or digit (it prefixes IAM role, ECR and EFS names)",
    ),
    (
        {"eks_cluster_name": "data\nplatform"},
        "eks_cluster_name = \"data\\nplatform\": an EKS cluster name: 1-100 letters, digits, '-' and '_', starting with a letter or digit",
    ),
    (
        {"github_environment": "prod`id`"},
        "github_environment = \"prod`id`\": a GitHub environment name of letters, digits, '.', '_' and '-'",
    ),
    (
        {"git_branch": "main\\x", "dag_source": "git-bundle"},
        "git_branch = \"main\\\\x\": a branch name of letters, digits, '.', '_', '-' and '/' (main, not refs/heads/main)",
    ),
]


def run_cookiecutter(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    out.mkdir()
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", "-o", str(out), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )


def error_lines(stderr: str) -> list[str]:
    return [line[len("ERROR: ") :] for line in stderr.splitlines() if line.startswith("ERROR: ")]


CHOICES = {
    k
    for k, v in json.loads((TEMPLATE / "cookiecutter.json").read_text()).items()
    if isinstance(v, list)
}


@pytest.mark.parametrize(
    ("answers", "expected"),
    REJECTED,
    ids=[f"{i:02d}-{next(iter(a))}" for i, (a, _) in enumerate(REJECTED)],
)
def test_bad_answer_is_refused_with_one_clear_line(tmp_path, default_repo, answers, expected):
    if CHOICES & set(answers):
        # cookiecutter itself refuses an unknown choice on the command line; a recorded
        # answers file (replay) reaches our hook unchanged, so check that path.
        args = ["--replay-file", str(replay_file(tmp_path, default_repo, **answers)), str(TEMPLATE)]
    else:
        args = ["--no-input", str(TEMPLATE), *(f"{k}={v}" for k, v in answers.items())]
    result = run_cookiecutter(tmp_path, *args)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert expected in lines, result.stderr
    assert (
        lines[-2].endswith("nothing was generated.")
        or "nothing was generated" in lines[-2] + lines[-1]
    )
    assert list((tmp_path / "out").iterdir()) == [], "a refused answer left files behind"
    assert not (tmp_path / "pwned").exists()


def test_all_problems_are_reported_at_once(tmp_path):
    result = run_cookiecutter(
        tmp_path, "--no-input", str(TEMPLATE), "aws_account_id=1", "namespace=A", "dag_bucket=B"
    )
    fields = [line.split(" = ")[0] for line in error_lines(result.stderr) if " = " in line]
    assert fields == ["aws_account_id", "dag_bucket", "namespace"]
    assert "3 answer(s) rejected; nothing was generated." in error_lines(result.stderr)


def replay_file(tmp_path: Path, default_repo: Path, **changes: str) -> Path:
    """Answers as cookiecutter replays them: taken verbatim, never rendered as a template."""
    answers = json.loads((default_repo / ".cookiecutter.json").read_text())["cookiecutter"]
    defaults = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    answers.update({k: v for k, v in defaults.items() if k.startswith("_")}, **changes)
    path = tmp_path / "replay.json"
    path.write_text(json.dumps({"cookiecutter": answers}))
    return path


HOSTILE_COMMENT = "ops \"quoted\" 'single' $(touch pwned) `touch pwned2` {{ cookiecutter.project }} {% raw %} back\\slash"


def test_hostile_text_stays_data(tmp_path, default_repo):
    """A known_hosts comment is free text: it must reach stack.yaml and the chart values
    byte for byte, with no shell, Python or Jinja ever acting on it."""
    known_hosts = f"github.com ssh-ed25519 {GITHUB_KEY} {HOSTILE_COMMENT}\nexample.com ssh-ed25519 {GITHUB_KEY}"
    replay = replay_file(tmp_path, default_repo, dag_source="git-sync", git_known_hosts=known_hosts)
    result = run_cookiecutter(tmp_path, "--replay-file", str(replay), str(TEMPLATE))
    assert result.returncode == 0, result.stderr
    repo = tmp_path / "out" / "airflow-gitops"
    stack = yaml.safe_load((repo / "stack.yaml").read_text())
    values = yaml.safe_load((repo / "helm" / "values.yaml").read_text())
    assert stack["dags"]["git"]["known_hosts"] == known_hosts
    assert values["dags"]["gitSync"]["knownHosts"] == known_hosts
    assert not list(tmp_path.rglob("pwned*"))


def test_template_syntax_in_an_answer_is_not_rendered(tmp_path, default_repo):
    replay = replay_file(tmp_path, default_repo, dag_bucket="{{ cookiecutter.project }}-dags")
    result = run_cookiecutter(tmp_path, "--replay-file", str(replay), str(TEMPLATE))
    assert f'dag_bucket = "{{{{ cookiecutter.project }}}}-dags": {BUCKET}' in error_lines(
        result.stderr
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_recorded_answers_regenerate_the_same_repo(tmp_path):
    first = bake(
        tmp_path / "first", dag_source="efs", namespace="data", executor="KubernetesExecutor"
    )
    replay = replay_file(tmp_path, first)
    result = run_cookiecutter(tmp_path, "--replay-file", str(replay), str(TEMPLATE))
    assert result.returncode == 0, result.stderr
    again = tmp_path / "out" / first.name

    def files(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    assert files(again) == files(first)

"""`validate`: the engine (positions, schemas, rules) on small repos built here, and the CLI.

Each test builds its own repository in a tmp folder (stack.yaml, helm/values.yaml, k8s/, iam/)
with the schemas of this repo, so the tests do not depend on this repo's answers.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from airflow_gitops.validate.engine import validate
from airflow_gitops.validate.loader import parse_text
from airflow_gitops.validate.rules.security import image_problem

from repos import REPO as REPO_ROOT  # the default bake

SCHEMAS = REPO_ROOT / "schemas"
FINDING = re.compile(
    r"^(?P<path>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+) \[(?P<rule>[a-z0-9-]+)\]$"
)

ACCOUNT, REGION, BUCKET = "123456789012", "eu-west-1", "team-dags-123456789012"
SYNC_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/team/s3-sync:src-0123456789abcdef"


def stack(source: str = "s3-sync", executor: str = "CeleryExecutor") -> dict:
    dags: dict = {"source": source, "mount_path": "/opt/airflow/dags", "sync_interval_seconds": 30}
    if source in ("s3-sync", "s3-bundle"):
        dags.update(
            bucket=BUCKET,
            prefix="dags",
            reader_service_account="af-dag-reader",
            parser_service_account="af-dag-parser",
            reader_role="team-dag-reader",
        )
    if source == "s3-sync":
        dags["sync_image"] = "own-image"
    if source == "git-sync":
        dags["git"] = {
            "repo_url": "git@github.com:org/team.git",
            "branch": "main",
            "subdir": "dags",
            "ssh_key_secret": "af-git-ssh",
            "known_hosts": "github.com ssh-ed25519 AAAA",
        }
    if source == "efs":
        dags["efs"] = {
            "creation_token": "team-dags",
            "throughput_mode": "elastic",
            "storage_class": "af-efs-dags",
            "claim": "af-dags",
            "volume_size": "5Gi",
            "csi_driver_role": "team-efs-csi-driver",
        }
    return {
        "project": "team",
        "github": {
            "repository": "org/team",
            "deploy_branch": "main",
            "environment": "production",
            "oidc_subject": "classic",
        },
        "aws": {
            "account_id": ACCOUNT,
            "region": REGION,
            "deploy_role": "team-deploy",
            "drift_check_role": "team-drift-check",
            "ebs_csi_driver_role": "team-ebs-csi-driver",
        },
        "eks": {"cluster_name": "platform", "deploy_kubernetes_group": "team-deploy"},
        "airflow": {
            "namespace": "af",
            "release": "af",
            "chart_version": "1.22.0",
            "version": "3.2.2",
            "executor": executor,
            "admin_user_secret": "af-admin-user",
        },
        "dags": dags,
        "storage": {"ebs_storage_class": "af-gp3"},
        "images": {
            "airflow": "apache/airflow:3.2.2",
            **({"s3_sync_repository": "team/s3-sync"} if source == "s3-sync" else {}),
        },
    }


HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 50000,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def values(source: str = "s3-sync", executor: str = "CeleryExecutor") -> dict:
    reader = {"create": False, "name": "af-dag-reader"}
    out: dict = {
        "executor": executor,
        "airflowVersion": "3.2.2",
        "defaultAirflowTag": "3.2.2",
        "securityContexts": {"pod": {"runAsNonRoot": True, "runAsUser": 50000, "fsGroup": 0}},
        "postgresql": {"enabled": False},
        "data": {"metadataSecretName": "af-metadata-db"},
    }
    worker = "kubernetes" if executor == "KubernetesExecutor" else "celery"
    if source == "s3-sync":
        volume = [{"name": "s3-dags", "emptyDir": {}}]
        mount = [{"name": "s3-dags", "mountPath": "/opt/airflow/dags", "readOnly": True}]

        def sync(name, once):
            return {
                "name": name,
                "image": SYNC_IMAGE,
                "args": ["--bucket", BUCKET, "--prefix", "dags", "--dest", "/opt/airflow/dags"]
                + (["--once"] if once else []),
                "securityContext": dict(HARDENED),
                "volumeMounts": [{"name": "s3-dags", "mountPath": "/opt/airflow/dags"}],
            }

        pod = {
            "serviceAccount": dict(reader),
            "extraVolumes": volume,
            "extraVolumeMounts": mount,
            "extraInitContainers": [sync("s3-sync-init", True)],
            "extraContainers": [sync("s3-sync", False)],
        }
        out["config"] = {"core": {"dags_folder": "/opt/airflow/dags/current"}}
        out["dagProcessor"] = copy.deepcopy(pod)
        out["triggerer"] = copy.deepcopy(pod)
        task = copy.deepcopy(pod)
        if worker == "kubernetes":
            del task["extraContainers"]
        out["workers"] = {worker: task}
    elif source == "git-sync":
        out["dags"] = {
            "gitSync": {
                "enabled": True,
                "repo": "git@github.com:org/team.git",
                "branch": "main",
                "subPath": "dags",
                "sshKeySecret": "af-git-ssh",
                "knownHosts": "github.com ssh-ed25519 AAAA",
                "securityContexts": {"container": dict(HARDENED)},
            }
        }
    elif source == "efs":
        # The claim of k8s/, read-only in every DAG reader (only efs-publish writes).
        volumes = [
            {
                "name": "efs-dags",
                "persistentVolumeClaim": {"claimName": "af-dags", "readOnly": True},
            }
        ]
        mounts = [{"name": "efs-dags", "mountPath": "/opt/airflow/dags", "readOnly": True}]
        efs_dags = {"extraVolumes": volumes, "extraVolumeMounts": mounts}
        out["dagProcessor"] = dict(efs_dags)
        out["triggerer"] = dict(efs_dags)
        out["workers"] = {worker: dict(efs_dags)}
    elif source == "s3-bundle":
        out["dagProcessor"] = {
            "serviceAccount": dict(reader),
            "dagBundleConfigList": [
                {
                    "name": "dags",
                    "classpath": "airflow.providers.amazon.aws.bundles.s3.S3DagBundle",
                    "kwargs": {"bucket_name": BUCKET, "prefix": "dags"},
                }
            ],
        }
        out["triggerer"] = {"serviceAccount": dict(reader)}
        out["workers"] = {worker: {"serviceAccount": dict(reader)}}
    return out


def trust(subject: str, provider: str = "EKS_OIDC_ISSUER") -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{provider}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{provider}:sub": subject,
                        f"{provider}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def build(root: Path, source: str = "s3-sync", executor: str = "CeleryExecutor") -> Path:
    """A complete, valid repository for ``source`` in ``root``."""
    (root / "helm").mkdir(parents=True)
    (root / "k8s").mkdir()
    (root / "iam").mkdir()
    (root / "dags").mkdir()  # the git modes' DAG folder (dags.git.subdir) is this repository's
    (root / "schemas").symlink_to(SCHEMAS)
    (root / "stack.yaml").write_text(yaml.safe_dump(stack(source, executor), sort_keys=False))
    (root / "helm" / "values.yaml").write_text(
        yaml.safe_dump(values(source, executor), sort_keys=False)
    )
    manifests = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "af"}}]
    if source in ("s3-sync", "s3-bundle"):
        for name in ("af-dag-reader", "af-dag-parser"):
            manifests.append(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {
                        "name": name,
                        "namespace": "af",
                        "annotations": {
                            "eks.amazonaws.com/role-arn": f"arn:aws:iam::{ACCOUNT}:role/team-dag-reader"
                        },
                    },
                }
            )
        (root / "iam" / "dag-reader-trust.json").write_text(
            json.dumps(
                trust(
                    [
                        "system:serviceaccount:af:af-dag-reader",
                        "system:serviceaccount:af:af-dag-parser",
                    ]
                ),
                indent=2,
            )
        )
        (root / "iam" / "dag-read-policy.json").write_text(
            json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "s3:ListBucket",
                            "Resource": f"arn:aws:s3:::{BUCKET}",
                            "Condition": {"StringLike": {"s3:prefix": ["dags", "dags/*"]}},
                        },
                        {
                            "Effect": "Allow",
                            "Action": "s3:GetObject",
                            "Resource": f"arn:aws:s3:::{BUCKET}/dags/*",
                        },
                    ],
                },
                indent=2,
            )
        )
    if source == "efs":
        manifests.append(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "af-efs-dags"},
                "provisioner": "efs.csi.aws.com",
                "parameters": {"fileSystemId": ""},
            }
        )
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "af-dags", "namespace": "af"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "af-efs-dags",
                    "resources": {"requests": {"storage": "5Gi"}},
                },
            }
        )
    (root / "k8s" / "all.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    return root


def findings(root: Path) -> list:
    return validate(root, root / "schemas")[0]


def rules(root: Path) -> set:
    return {f.rule for f in findings(root)}


def edit(path: Path, old: str, new: str) -> int:
    """Replace ``old`` once; return the 1-based line where the new text starts."""
    text = path.read_text()
    assert old in text, old
    start = text.index(old)
    path.write_text(text.replace(old, new, 1))
    return text.count("\n", 0, start) + 1


MODES = [
    ("s3-sync", "CeleryExecutor"),
    ("s3-sync", "KubernetesExecutor"),
    ("git-sync", "CeleryExecutor"),
    ("efs", "KubernetesExecutor"),
    ("s3-bundle", "CeleryExecutor"),
]


@pytest.mark.parametrize("source,executor", MODES)
def test_a_correct_repo_has_no_findings(tmp_path, source, executor):
    assert findings(build(tmp_path, source, executor)) == []


def test_this_repository_is_valid():
    result = subprocess.run(
        [sys.executable, "-m", "airflow_gitops", "validate"],
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^validate: 0 findings in \d+ files$", result.stdout, re.MULTILINE)


# --- the loader: positions, duplicates, JSON, YAML 1.1 booleans -------------------------------


def test_every_key_and_value_has_its_line_and_column():
    parsed = parse_text("x.yaml", "a: 1\nb:\n  c: [x, {d: 2}]\n  e: |\n    text\n")
    doc = parsed.documents[0]
    assert doc.data == {"a": 1, "b": {"c": ["x", {"d": 2}], "e": "text\n"}}
    assert doc.pos(("a",)) == (1, 4)
    assert doc.key_pos(("b", "c")) == (3, 3)
    assert doc.pos(("b", "c", 1, "d")) == (3, 14)
    assert doc.pos(("b", "e")) == (4, 6)
    assert doc.pos(("b", "missing", 3)) == doc.pos(("b",))  # nearest known parent


def test_duplicate_keys_are_findings_not_exceptions():
    parsed = parse_text("x.yaml", "a: 1\nb: 2\na: 3\n")
    assert [(f.line, f.col, f.rule) for f in parsed.findings] == [(3, 1, "duplicate-key")]
    assert "first at line 1" in parsed.findings[0].message
    assert parsed.documents[0].data == {"a": 3, "b": 2}


def test_json_gets_positions_and_json_rules():
    parsed = parse_text("p.json", '{\n  "Version": "2012-10-17",\n\t"Version": "x"\n}\n')
    assert [(f.line, f.rule) for f in parsed.findings] == [(3, "duplicate-key")]
    broken = parse_text("p.json", '{\n  "a": 1,\n}\n')  # fine for YAML, not for JSON or AWS
    assert broken.broken and [(f.line, f.rule) for f in broken.findings] == [(3, "syntax")]


def test_scalars_are_typed_as_yaml_1_2_and_yaml_1_1_booleans_are_flagged():
    parsed = parse_text(
        "v.yaml",
        'a: 010\nb: 1.5\nc: ~\nd: "3"\ne: true\nf: yes\ng: !!int "7"\nh: 0x1f\n',
        yaml11_checks=True,
    )
    assert parsed.documents[0].data == {
        "a": 10,
        "b": 1.5,
        "c": None,
        "d": "3",
        "e": True,
        "f": "yes",
        "g": 7,
        "h": 31,
    }
    assert [(f.line, f.rule) for f in parsed.findings] == [(6, "yaml-ambiguous-bool")]


def test_anchors_aliases_and_merge_keys():
    parsed = parse_text("v.yaml", "x: &a {k: 1}\ny: *a\nz:\n  <<: *a\n  m: 2\n")
    assert parsed.documents[0].data == {"x": {"k": 1}, "y": {"k": 1}, "z": {"k": 1, "m": 2}}


@pytest.mark.parametrize(
    "text",
    [
        "a: [1, 2\n",
        "a: 'x\n",
        "- a\nb: 1\n",
        "a:\n\t- 1\n",
        "\x00\x01",
        "{{ x }}: 1\n",
        "a: *missing\n",
    ],
)
def test_malformed_yaml_is_a_finding_with_a_position(text):
    parsed = parse_text("v.yaml", text)
    assert parsed.findings and all(f.rule in ("syntax",) for f in parsed.findings), parsed.findings
    assert all(f.line >= 1 and f.col >= 1 for f in parsed.findings)


def test_random_damage_never_raises(tmp_path):
    """Delete or duplicate random characters of values.yaml: always findings, never a traceback."""
    root = build(tmp_path / "repo")
    values_file = root / "helm" / "values.yaml"
    original = values_file.read_text()
    rng = random.Random(7)
    for _ in range(60):
        text = list(original)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text))
            if rng.random() < 0.5:
                del text[i]
            else:
                text.insert(i, rng.choice([":", " ", "-", "\n", '"', "[", "{", "&", "*", "\t"]))
        values_file.write_text("".join(text))
        for finding in findings(root):
            assert finding.path and finding.line >= 1 and finding.rule


# --- schemas ----------------------------------------------------------------------------------


def test_unknown_helm_key_says_did_you_mean(tmp_path):
    root = build(tmp_path)
    line = edit(root / "helm" / "values.yaml", "extraVolumeMounts:", "extraVolumeMount:")
    found = [f for f in findings(root) if f.rule == "unknown-key"]
    assert (
        found and found[0].line == line and "did you mean 'extraVolumeMounts'" in found[0].message
    )


def test_a_legitimate_chart_key_we_do_not_emit_is_accepted(tmp_path):
    root = build(tmp_path)
    values_file = root / "helm" / "values.yaml"
    values_file.write_text(
        values_file.read_text() + "webserver:\n  replicas: 2\nscheduler:\n  replicas: 2\n"
    )
    assert findings(root) == []


def test_wrong_type_and_missing_key_point_at_the_place(tmp_path):
    root = build(tmp_path)
    edit(root / "stack.yaml", "  deploy_role: team-deploy\n", "")
    line = edit(root / "stack.yaml", "sync_interval_seconds: 30", "sync_interval_seconds: 30s")
    found = {(f.rule, f.path, f.line) for f in findings(root)}
    assert ("wrong-type", "stack.yaml", line) in found
    assert any(rule == "missing-key" and path == "stack.yaml" for rule, path, _ in found)


def test_a_value_ending_in_a_newline_does_not_meet_its_pattern(tmp_path):
    """`$` in a schema pattern is the end of the text (ECMA-262), not also the place before a
    final newline (Python's re): "af\\n" is no namespace."""
    root = build(tmp_path)
    line = edit(root / "stack.yaml", "  namespace: af\n", '  namespace: "af\\n"\n')
    found = [(f.rule, f.line) for f in findings(root) if f.path == "stack.yaml"]
    assert ("invalid-value", line) in found


# --- rules --------------------------------------------------------------------------------


def test_service_account_create_false_without_name(tmp_path):
    root = build(tmp_path, "s3-bundle")
    line = edit(root / "helm" / "values.yaml", "    name: af-dag-reader\n", "")
    found = [f for f in findings(root) if f.rule == "sa-unnamed"]
    assert [f.line for f in found] == [line - 1]


def test_claim_in_values_must_exist(tmp_path):
    root = build(tmp_path, "efs")
    line = edit(root / "helm" / "values.yaml", "claimName: af-dags", "claimName: airflow-dags")
    assert ("pvc-missing", line) in {(f.rule, f.line) for f in findings(root)}


def test_irsa_role_must_be_trusted_for_the_service_account(tmp_path):
    root = build(tmp_path)
    line = edit(root / "iam" / "dag-reader-trust.json", "af:af-dag-reader", "af:af-worker")
    found = {(f.rule, f.path, f.line) for f in findings(root)}
    assert ("irsa-mismatch", "iam/dag-reader-trust.json", line) in found


def test_chart_created_service_account_with_irsa_is_checked_too(tmp_path):
    root = build(tmp_path, "s3-bundle")
    arn = f"arn:aws:iam::{ACCOUNT}:role/team-dag-reader"
    line = edit(
        root / "helm" / "values.yaml",
        "triggerer:\n  serviceAccount:\n    create: false\n    name: af-dag-reader\n",
        f"triggerer:\n  serviceAccount:\n    annotations:\n      eks.amazonaws.com/role-arn: {arn}\n    name: af-triggerer\n",
    )
    found = {(f.rule, f.line) for f in findings(root)}
    assert ("irsa-mismatch", line + 3) in found  # the trust admits af-dag-reader, not this one
    assert "s3-reader-irsa" not in {rule for rule, _ in found}


def test_trust_without_aud_and_wildcard_sub(tmp_path):
    root = build(tmp_path)
    path = root / "iam" / "dag-reader-trust.json"
    document = json.loads(path.read_text())
    equals = document["Statement"][0]["Condition"]["StringEquals"]
    del equals["EKS_OIDC_ISSUER:aud"]
    equals["EKS_OIDC_ISSUER:sub"] = "system:serviceaccount:af:*"
    path.write_text(json.dumps(document, indent=2))
    messages = [f.message for f in findings(root) if f.rule == "trust-unpinned"]
    assert any("aud" in m for m in messages) and any("exact" in m for m in messages)


def test_resource_star_only_for_actions_without_resource_level_permissions(tmp_path):
    root = build(tmp_path)
    path = root / "iam" / "dag-read-policy.json"
    document = json.loads(path.read_text())
    document["Statement"].append(
        {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}
    )
    path.write_text(json.dumps(document, indent=2))
    assert "iam-wildcard" not in rules(root)
    document["Statement"].append({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"})
    path.write_text(json.dumps(document, indent=2))
    assert "iam-wildcard" in rules(root)


def test_sync_missing_on_a_reader_and_sidecar_on_task_pods(tmp_path):
    root = build(tmp_path, "s3-sync", "KubernetesExecutor")
    data = yaml.safe_load((root / "helm" / "values.yaml").read_text())
    del data["triggerer"]["extraContainers"]
    data["workers"]["kubernetes"]["extraContainers"] = data["dagProcessor"]["extraContainers"]
    (root / "helm" / "values.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    found = {(f.rule, f.message.split(":")[0]) for f in findings(root)}
    assert ("dags-not-delivered", "triggerer") in found
    assert any(rule == "dags-task-pod-sidecar" for rule, _ in found)


@pytest.mark.parametrize(
    "image,ok",
    [
        ("apache/airflow:3.2.2", True),
        ("registry:5000/team/img:1.0", True),
        ("img@sha256:" + "a" * 64, True),
        ("apache/airflow", False),
        ("apache/airflow:latest", False),
        ("registry:5000/team/img", False),
        ("repo/s3-sync:src-0123456789abcdef", True),
        ("img:", False),
    ],
)
def test_image_pinning(image, ok):
    assert (image_problem(image) is None) == ok


def test_committed_secrets_are_found_in_any_file(tmp_path):
    root = build(tmp_path)
    stack_file = root / "stack.yaml"
    stack_file.write_text(
        stack_file.read_text() + "# AKIA" + "IOSFODNN7EXAMPLE\n"
    )  # split: no key-like text in this repo
    found = [f for f in findings(root) if f.rule == "secret-committed"]
    assert [(f.path, f.col) for f in found] == [("stack.yaml", 3)]


def test_git_sync_over_ssh_needs_known_hosts(tmp_path):
    root = build(tmp_path, "git-sync")
    line = edit(
        root / "helm" / "values.yaml", "knownHosts: github.com ssh-ed25519 AAAA", "knownHosts: ''"
    )
    assert ("gitsync-known-hosts", line) in {(f.rule, f.line) for f in findings(root)}


def test_every_rule_id_is_documented():
    from airflow_gitops.validate.findings import RULE_IDS

    documented = set(
        re.findall(
            r"^\| `([a-z0-9-]+)` \|",
            (REPO_ROOT / "docs" / "validation.md").read_text(),
            re.MULTILINE,
        )
    )
    assert documented == set(RULE_IDS)


# --- the command line ------------------------------------------------------------------------


def run_cli(root: Path, *args: str, env: dict | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "airflow_gitops", "validate", "--root", str(root), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


def test_cli_exit_codes_output_format_and_tally(tmp_path):
    root = build(tmp_path / "repo")
    clean = run_cli(root)
    assert clean.returncode == 0 and clean.stdout == "validate: 0 findings in 5 files\n"
    edit(root / "helm" / "values.yaml", "runAsUser: 50000", "runAsUser: 0")
    dirty = run_cli(root)
    assert dirty.returncode == 1 and dirty.stderr == ""
    *lines, tally = dirty.stdout.splitlines()
    assert lines and all(FINDING.match(line) for line in lines), dirty.stdout
    assert tally == f"validate: {len(lines)} finding{'s' if len(lines) > 1 else ''} in 5 files"
    assert "::error" not in dirty.stdout


def test_github_annotations(tmp_path):
    root = build(tmp_path / "repo")
    line = edit(root / "helm" / "values.yaml", "runAsUser: 50000", "runAsUser: 0")
    result = run_cli(root, env={"GITHUB_ACTIONS": "true"})
    assert f"::error file=helm/values.yaml,line={line},col=" in result.stdout
    assert "title=container-root::" in result.stdout


def test_usage_errors_exit_2_without_traceback(tmp_path):
    missing = run_cli(tmp_path / "nowhere")
    assert (
        missing.returncode == 2
        and missing.stderr.startswith("ERROR [UsageError]")
        and "Traceback" not in missing.stderr
    )
    (tmp_path / "empty").mkdir()
    no_schemas = run_cli(tmp_path / "empty")
    assert no_schemas.returncode == 2 and "schemas" in no_schemas.stderr


# --- hostile files: each one finding, never a hang, a crash or a traceback --------------------
# (their time and memory are measured by the template's benchmarks/validate.py, not here)

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)
HOSTILE = {
    "billion-laughs": ("helm/values.yaml", BILLION_LAUGHS, "yaml-alias-budget"),
    "deep-flow-yaml": (
        "helm/values.yaml",
        "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "yaml-too-deep",
    ),
    "deep-block-yaml": (
        "k8s/deep.yaml",
        "".join(" " * i + "a:\n" for i in range(300)),
        "yaml-too-deep",
    ),
    "deep-sequence-yaml": ("k8s/deep.yaml", "- " * 50_000 + "x\n", "yaml-too-deep"),
    "deep-json": ("iam/deep-policy.json", "[" * 100_000 + "]" * 100_000, "yaml-too-deep"),
    "large-values": ("helm/values.yaml", "# padding\n" * 300_000, "file-too-large"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_is_one_finding_and_exit_1(tmp_path, name):
    root = build(tmp_path / "repo")
    path, text, rule = HOSTILE[name]
    (root / path).write_text(text)
    result = run_cli(root)
    assert result.returncode == 1 and result.stderr == "", result.stderr
    hits = [m for m in map(FINDING.match, result.stdout.splitlines()) if m and m["path"] == path]
    assert [m["rule"] for m in hits] == [rule], result.stdout


def test_symlinks_out_of_the_repository_are_refused(tmp_path):
    secret = tmp_path / "credentials"
    secret.write_text("[default]\naws_secret_access_key = abc\n")
    root = build(tmp_path / "repo")
    (root / "k8s" / "linked.yaml").symlink_to(secret)
    (root / "dags" / "linked.py").symlink_to(secret)
    (root / "k8s" / "inside.yaml").symlink_to(root / "k8s" / "all.yaml")  # inside: fine, read
    found = [(f.path, f.rule) for f in findings(root)]
    assert ("k8s/linked.yaml", "symlink-outside-repo") in found
    assert ("dags/linked.py", "symlink-outside-repo") in found
    assert all(rule != "secret-committed" for _, rule in found), found  # never read
    assert ("k8s/inside.yaml", "symlink-outside-repo") not in found


def test_one_rule_broken_on_every_line_is_capped(tmp_path):
    root = build(tmp_path / "repo")
    (root / "k8s" / "dupes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n" + "  a: b\n" * 500
    )
    dupes = [f for f in findings(root) if f.path == "k8s/dupes.yaml" and f.rule == "duplicate-key"]
    assert len(dupes) == 21 and "and 479 more" in dupes[-1].message


def test_an_internal_error_is_one_line_and_exit_2(tmp_path):
    """A bug in a rule must not look like findings (1) or a crash (traceback): one line, exit 2."""
    root = build(tmp_path / "repo")
    code = (
        "import sys; from airflow_gitops.validate import rules\n"
        "def broken(repo):\n    raise KeyError('boom')\n"
        "rules.SINGLE_FILE = (broken,)\n"
        "from airflow_gitops.cli import main; sys.exit(main(['validate', '--root', sys.argv[1]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ERROR [ValidateCrashed]")
    assert "KeyError" in result.stderr and "Traceback" not in result.stderr


# --- facts derived from stack.yaml (rules/facts.py DERIVED) -----------------------------------


def _with_derived_files(root: Path) -> Path:
    (root / "docs").mkdir()
    (root / "docs" / "setup.md").write_text(
        f"```\naws eks update-kubeconfig --name platform --region {REGION}\naws s3 ls s3://{BUCKET}/dags/\n```\n"
    )
    (root / "iam" / "deploy-role-policy.json").write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ReadCluster",
                        "Effect": "Allow",
                        "Action": "eks:DescribeCluster",
                        "Resource": f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/platform",
                    },
                    {
                        "Sid": "PushDags",
                        "Effect": "Allow",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{BUCKET}/dags/*",
                    },
                ],
            },
            indent=2,
        )
    )
    return root


CLUSTER_ARN = f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/platform"


@pytest.mark.parametrize(
    "fact,old,new,expect",
    [
        (
            "region",
            f"region: {REGION}",
            "region: eu-central-1",
            [
                ("docs/setup.md", "--region", "stack-mismatch"),
                ("iam/deploy-role-policy.json", CLUSTER_ARN, "stack-mismatch"),
            ],
        ),
        (
            "cluster",
            "cluster_name: platform",
            "cluster_name: analytics",
            [
                ("docs/setup.md", "--name", "stack-mismatch"),
                ("iam/deploy-role-policy.json", CLUSTER_ARN, "stack-mismatch"),
            ],
        ),
        (
            "account",
            f"account_id: '{ACCOUNT}'",
            "account_id: '111122223333'",
            [
                ("iam/deploy-role-policy.json", CLUSTER_ARN, "stack-mismatch"),
                ("helm/values.yaml", SYNC_IMAGE, "stack-mismatch"),
            ],
        ),
        (
            "bucket",
            f"bucket: {BUCKET}",
            "bucket: other-dags-bucket",
            [
                ("docs/setup.md", "s3://", "bucket-mismatch"),
                ("iam/deploy-role-policy.json", "arn:aws:s3:::", "bucket-mismatch"),
                ("iam/dag-read-policy.json", "arn:aws:s3:::", "bucket-mismatch"),
            ],
        ),
    ],
)
def test_a_fact_changed_only_in_stack_yaml_is_found_where_it_is_derived(
    tmp_path, fact, old, new, expect
):
    root = _with_derived_files(build(tmp_path / "repo"))
    assert findings(root) == []
    edit(root / "stack.yaml", old, new)
    found = {(f.path, f.line, f.rule) for f in findings(root)}
    for path, needle, rule in expect:
        text = (root / path).read_text()
        line = text.count("\n", 0, text.index(needle)) + 1
        assert (path, line, rule) in found, (path, line, rule, found)


def test_a_typo_in_a_derived_arn_is_found_at_its_line(tmp_path):
    root = _with_derived_files(build(tmp_path / "repo"))
    line = edit(root / "iam" / "deploy-role-policy.json", "cluster/platform", "cluster/platfrom")
    found = [f for f in findings(root) if f.rule == "stack-mismatch"]
    assert [(f.path, f.line) for f in found] == [("iam/deploy-role-policy.json", line)], found
    assert "'platfrom' is not stack.yaml's eks.cluster_name 'platform'" in found[0].message


def test_stack_schema_takes_its_rules_from_the_answers_schema(tmp_path):
    """One copy of each rule: the answers' limits (5-3600 s, S3 names without dots) hold in stack.yaml."""
    root = build(tmp_path / "repo")
    edit(root / "stack.yaml", "sync_interval_seconds: 30", "sync_interval_seconds: 86400")
    edit(root / "stack.yaml", f"bucket: {BUCKET}", "bucket: dags.example.com")
    found = {(f.rule, f.message.split(":")[0]) for f in findings(root) if f.path == "stack.yaml"}
    assert ("invalid-value", "dags.sync_interval_seconds") in found and (
        "invalid-value",
        "dags.bucket",
    ) in found
    stack_schema = json.loads((SCHEMAS / "stack.schema.json").read_text())
    assert stack_schema["properties"]["dags"]["properties"]["bucket"] == {
        "$ref": "answers.schema.json#/$defs/s3BucketName"
    }


# --- IAM as AWS checks it (AWS's Service Authorization Reference, via parliament) -------------


def _policy(root: Path, *statements: dict, name: str = "extra-policy.json") -> Path:
    path = root / "iam" / name
    path.write_text(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, indent=2))
    return path


@pytest.mark.parametrize(
    "statement,rule,needle",
    [
        (
            {
                "Sid": "A",
                "Effect": "Allow",
                "Action": "s3:GetObjects",
                "Resource": f"arn:aws:s3:::{BUCKET}/dags/*",
            },
            "iam-unknown-action",
            "s3:GetObjects",
        ),
        (
            {
                "Sid": "A",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:{REGION}:{ACCOUNT}:{BUCKET}/dags/*",
            },
            "iam-s3-arn",
            f"arn:aws:s3:{REGION}",
        ),
        (
            {
                "Sid": "A",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{BUCKET}/dags/*",
            },
            "iam-resource-format",
            f"arn:aws:s3:::{BUCKET}/dags/*",
        ),
        (
            {
                "Sid": "A",
                "Effect": "Allow",
                "Action": "elasticfilesystem:CreateFileSystem",
                "Resource": f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:file-system/*",
            },
            "iam-resource-format",
            "file-system/*",
        ),
        (
            {"Sid": "A", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
            "iam-wildcard",
            '"*"',
        ),
    ],
)
def test_iam_that_aws_rejects_or_that_grants_nothing(tmp_path, statement, rule, needle):
    root = build(tmp_path / "repo")
    path = _policy(root, statement)
    text = path.read_text()
    line = text.count("\n", 0, text.index(needle)) + 1
    found = [(f.path, f.line, f.rule) for f in findings(root)]
    assert ("iam/extra-policy.json", line, rule) in found, found


def test_iam_duplicate_sid_and_valid_statements(tmp_path):
    root = build(tmp_path / "repo")
    _policy(
        root,
        {"Sid": "Same", "Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"},
        {
            "Sid": "Same",
            "Effect": "Allow",
            "Action": ["eks:DescribeAddon", "eks:CreateAddon"],
            "Resource": [
                f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/platform",
                f"arn:aws:eks:{REGION}:{ACCOUNT}:addon/platform/aws-efs-csi-driver/*",
            ],
        },
        {
            "Sid": "Create",
            "Effect": "Allow",
            "Action": "elasticfilesystem:CreateFileSystem",
            "Resource": "*",
            "Condition": {"Bool": {"elasticfilesystem:Encrypted": "true"}},
        },
    )
    assert [(f.rule, f.line) for f in findings(root)] == [("iam-duplicate-sid", 11)]


def test_parliament_medium_findings_are_reported_unless_accepted_with_a_reason(tmp_path):
    root = build(tmp_path / "repo")
    _policy(
        root,
        {
            "Sid": "BucketPolicy",
            "Effect": "Allow",
            "Action": ["s3:PutBucketPolicy"],
            "Resource": f"arn:aws:s3:::{BUCKET}",
        },
    )
    assert {f.rule for f in findings(root)} == {"iam-parliament"}
    accepted = root / "iam" / "parliament-accepted.yaml"
    accepted.write_text(
        "accepted:\n  - file: iam/extra-policy.json\n    issue: RESOURCE_POLICY_PRIVILEGE_ESCALATION\n"
        "    reason: reviewed\n"
    )
    assert findings(root) == []
    accepted.write_text(
        "accepted:\n  - file: iam/dag-read-policy.json\n    issue: RESOURCE_POLICY_PRIVILEGE_ESCALATION\n"
        "    reason: stale\n  - file: iam/extra-policy.json\n    issue: X\n"
    )
    found = sorted((f.path, f.line, f.rule) for f in findings(root))
    assert (
        "iam/parliament-accepted.yaml",
        2,
        "iam-parliament",
    ) in found  # matches nothing any more
    assert ("iam/parliament-accepted.yaml", 5, "missing-key") in found  # no reason
    assert ("iam/extra-policy.json", 1, "iam-parliament") in found


# --- the GitHub OIDC chain, with the subject bootstrap computes --------------------------------


def _github_trust(subject: str) -> dict:
    provider = "token.actions.githubusercontent.com"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{provider}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{provider}:aud": "sts.amazonaws.com",
                        f"{provider}:sub": subject,
                    }
                },
            }
        ],
    }


@pytest.mark.parametrize(
    "form,repo",
    [("classic", "org/team"), ("immutable", "org@11/team@22")],
)
def test_deploy_trust_pins_the_subject_bootstrap_computes(tmp_path, form, repo):
    from airflow_gitops.aws.github import subject as github_subject

    root = build(tmp_path / "repo")
    data = yaml.safe_load((root / "stack.yaml").read_text())
    data["github"].update(
        {
            "oidc_subject": form,
            **({"owner_id": "11", "repository_id": "22"} if form == "immutable" else {}),
        }
    )
    (root / "stack.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    workflow = "org/team/.github/workflows/deploy.yml@refs/heads/main"
    subject = f"repo:{repo}:environment:production:job_workflow_ref:{workflow}"
    assert github_subject(data, "deploy.yml", True) == subject
    trust = root / "iam" / "deploy-role-trust.json"
    trust.write_text(json.dumps(_github_trust(subject), indent=2))
    assert findings(root) == []
    for wrong in (
        subject.replace("team", "other"),  # another repository
        subject.replace("production", "staging"),  # another environment
        subject.replace("deploy.yml", "sync-dags.yml"),  # another workflow's token
        subject.replace("refs/heads/main", "refs/heads/feature"),  # another branch
        subject.split(":job_workflow_ref:")[0],  # any workflow of the repository
    ):
        trust.write_text(json.dumps(_github_trust(wrong), indent=2))
        assert [f.rule for f in findings(root)] == ["oidc-subject"], wrong


def test_a_file_of_many_documents_stops_at_the_limit(tmp_path):
    root = build(tmp_path / "repo")
    one = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: af}\n"
    (root / "k8s" / "many.yaml").write_text(one * 1_500)
    found = [(f.path, f.line, f.rule) for f in findings(root)]
    assert found == [("k8s/many.yaml", 4 * 1_000 + 2, "file-too-large")], found


def test_a_fifo_is_never_read(tmp_path):
    """Reading a named pipe blocks forever; validate must pass it by."""
    root = build(tmp_path / "repo")
    os.mkfifo(root / "dags" / "pipe.py")
    os.mkfifo(root / "k8s" / "pipe.yaml")
    assert findings(root) == []


def test_every_claim_names_a_storage_class_of_the_repo(tmp_path):
    root = build(tmp_path / "repo")
    data = yaml.safe_load((root / "helm" / "values.yaml").read_text())
    data["redis"] = {"persistence": {"storageClassName": "af-gp3"}}
    (root / "helm" / "values.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert [f.rule for f in findings(root)] == ["storageclass-missing"]
    (root / "k8s" / "gp3.yaml").write_text(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: af-gp3\nprovisioner: ebs.csi.aws.com\n"
    )
    assert findings(root) == []

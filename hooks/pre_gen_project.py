"""Check every answer before anything is generated.

Answers are read as data (the context as JSON), never pasted into this file as source. Each
problem is printed as one line naming the question, the value given and what is allowed; all
problems at once, then exit 1 (cookiecutter then removes the half-made project folder).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

KNOWN_HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
# S3's naming rules beyond the character set (AWS docs: "General purpose bucket naming rules").
BUCKET_FORBIDDEN_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_FORBIDDEN_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def show(value: object) -> str:
    """The value as one line: JSON quoting keeps newlines and quotes visible and harmless."""
    return json.dumps(value, ensure_ascii=False)


def problem(field: str, value: object, allowed: str) -> str:
    return f"{field} = {show(value)}: {allowed}"


def template_dir() -> Path:
    """The template's folder. Hooks run inside the new project folder, so a relative
    `_repo_dir` (`cookiecutter .`) is resolved against the caller's working directory."""
    repo = Path(ANSWERS["_repo_dir"])
    return repo if repo.is_absolute() else Path(os.environ.get("PWD", ".")) / repo


def load_schema() -> dict:
    path = template_dir() / "schemas" / "answers.schema.json"
    return json.loads(path.read_text(encoding="utf-8"))


def schema_problems(answers: dict, schema: dict) -> list[str]:
    """Problems the JSON Schema finds, worded with each property's `x-allowed`."""
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        return ["jsonschema is not installed: the template needs it to check answers "
                "(pip install jsonschema)"]
    validator = Draft202012Validator(schema)
    found, reported = [], set()
    for error in sorted(validator.iter_errors(answers), key=lambda e: list(e.path)):
        field = error.path[0] if error.path else (error.params or {}).get("property", "answers")
        if field in reported:
            continue  # one line per question, however many rules it breaks
        reported.add(field)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            found.append(f"{missing}: missing; the template's cookiecutter.json must define it")
            continue
        prop = schema["properties"].get(field, {})
        if "$ref" in prop:
            prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
        found.append(problem(field, answers.get(field), prop.get("x-allowed", error.message)))
    return found


def bucket_problems(answers: dict) -> list[str]:
    if answers["dag_source"] not in ("s3-sync", "s3-bundle"):
        return []
    name = answers["dag_bucket"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
        return []  # the schema already said what is wrong
    reasons = []
    if ".." in name or ".-" in name or "-." in name:
        reasons.append("no two adjacent dots, and no dot next to a hyphen")
    try:
        ipaddress.IPv4Address(name)
        reasons.append("not formatted as an IP address")
    except ValueError:
        pass
    if name.startswith(BUCKET_FORBIDDEN_PREFIXES):
        reasons.append("not starting with " + ", ".join(BUCKET_FORBIDDEN_PREFIXES))
    if name.endswith(BUCKET_FORBIDDEN_SUFFIXES):
        reasons.append("not ending with " + ", ".join(BUCKET_FORBIDDEN_SUFFIXES))
    if "." in name:
        reasons.append("no dots (virtual-hosted TLS requests fail on dotted names)")
    return [problem("dag_bucket", name, "an S3 bucket name with " + "; ".join(reasons))] if reasons else []


def interval_problems(answers: dict) -> list[str]:
    value = answers["sync_interval_seconds"]
    if isinstance(value, str) and value.isdigit() and not 5 <= int(value) <= 3600:
        return [problem("sync_interval_seconds", value, "whole seconds from 5 to 3600")]
    return []


def known_hosts_problems(answers: dict) -> list[str]:
    """Git over SSH must pin the host key; otherwise a spoofed host gets the DAGs."""
    url = answers["git_repo_url"]
    git_modes = ("git-sync", "git-bundle")
    if answers["dag_source"] not in git_modes or not str(url).startswith(("git@", "ssh://")):
        return []
    lines = [line for line in str(answers["git_known_hosts"]).splitlines() if line.strip()]
    if not lines:
        return [problem("git_known_hosts", answers["git_known_hosts"],
                        "required for git over SSH: the host's known_hosts line(s), "
                        "e.g. from ssh-keyscan checked against the host's published keys")]
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or parts[1] not in KNOWN_HOST_KEY_TYPES or not re.fullmatch(r"[A-Za-z0-9+/]+=*", parts[2]):
            return [problem("git_known_hosts", line,
                            "known_hosts lines 'host keytype base64key' with keytype one of "
                            + ", ".join(KNOWN_HOST_KEY_TYPES))]
    return []


def oidc_subject_problems(answers: dict) -> list[str]:
    if answers["github_oidc_subject"] != "immutable":
        return []
    return [
        problem(field, answers[field], "required with the immutable subject format: the numeric id from the GitHub API")
        for field in ("github_owner_id", "github_repository_id")
        if not str(answers[field]).isdigit()
    ]


def name_length_problems(answers: dict) -> list[str]:
    """Derived Kubernetes names must stay DNS-1123 labels (63 characters)."""
    release = answers["airflow_release"]
    if isinstance(release, str) and len(release) + len("-api-secret-key") > 63:
        return [problem("airflow_release", release, "at most 48 characters (names such as <release>-api-secret-key must fit 63)")]
    return []


def alb_certificate_problems(answers: dict) -> list[str]:
    """An ALB can only use an ACM certificate of its own region, and we deploy to one account."""
    if answers["ui_access"] != "alb":
        return []
    arn = answers["alb_certificate_arn"]
    allowed = (f"required with ui_access alb: an ACM certificate ARN in {answers['aws_region']} and account "
               f"{answers['aws_account_id']}, arn:aws:acm:{answers['aws_region']}:{answers['aws_account_id']}:certificate/UUID")
    if not arn:
        return [problem("alb_certificate_arn", arn, allowed)]
    shape = re.fullmatch(r"arn:aws:acm:([a-z0-9-]+):([0-9]{12}):certificate/.+", str(arn))
    if shape and shape.groups() != (answers["aws_region"], answers["aws_account_id"]):
        return [problem("alb_certificate_arn", arn, allowed)]
    return []


def worker_count_problems(answers: dict) -> list[str]:
    low, high = answers["workers_min"], answers["workers_max"]
    if not (str(low).isdigit() and str(high).isdigit()):
        return []  # the schema already said what is wrong
    if int(high) < 1:
        return [problem("workers_max", high, "a whole number of workers from 1 to 999, at least workers_min")]
    if int(low) > int(high):
        return [problem("workers_min", low, f"a whole number of workers from 0 to 999, at most workers_max ({high})")]
    return []


RULES = (bucket_problems, interval_problems, known_hosts_problems, oidc_subject_problems, name_length_problems,
         alb_certificate_problems, worker_count_problems)


def main() -> int:
    answers = {key: value for key, value in ANSWERS.items() if not key.startswith("_")}
    found = schema_problems(answers, load_schema())
    bad_fields = {line.split(" ", 1)[0] for line in found}
    for rule in RULES:
        try:
            found += [p for p in rule(answers) if p.split(" ", 1)[0] not in bad_fields]
        except (KeyError, TypeError, AttributeError):
            continue  # the schema already reported the missing or mistyped answer
    for line in found:
        print(f"ERROR: {line}", file=sys.stderr)
    if found:
        print(f"ERROR: {len(found)} answer(s) rejected; nothing was generated.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Check every answer before anything is generated, then carry the schemas into the new repo.

Answers are read as data (the context as JSON), never pasted into this file as source. Each
problem is printed as one line naming the question, the value given and what is allowed; all
problems at once, then exit 1 (cookiecutter then removes the half-made project folder).
"""

import gc
import os
import sys

# cookiecutter runs a hook from a rendered copy in the system's temp folder, and Python puts a
# script's folder first on sys.path: every import would then search the temp folder (a listing
# of all its files, which grows by two with every bake, as cookiecutter leaves its copies
# there), and a module anyone left there would win over the standard library. Before any import.
if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]
# A hook lives for a fraction of a second: collecting garbage while it imports only costs time.
gc.disable()

import json
import re
import shutil
from functools import lru_cache
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
SCHEMA = Path("schemas") / "answers.schema.json"


def show(value: object) -> str:
    """The value as one line: JSON quoting keeps newlines and quotes visible and harmless."""
    return json.dumps(value, ensure_ascii=False)


def problem(field: str, value: object, allowed: str) -> str:
    return f"{field} = {show(value)}: {allowed}"


def parent_cwd() -> Path | None:
    """The working directory of the process that runs this hook, where the OS tells it."""
    try:
        return Path(os.readlink(f"/proc/{os.getppid()}/cwd"))  # Linux
    except OSError:
        pass
    import subprocess  # here: Linux never needs it, and each import slows every bake

    try:  # macOS and the BSDs: lsof is part of the base system
        listing = subprocess.run(
            ["lsof", "-a", "-p", str(os.getppid()), "-d", "cwd", "-Fn"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((Path(line[1:]) for line in listing.splitlines() if line.startswith("n/")), None)


@lru_cache(maxsize=1)
def template_dir() -> Path | None:
    """The template checkout being rendered, or None.

    cookiecutter and cruft run a hook as a rendered temporary copy (so ``__file__`` is not in
    the template) with the new project as its working directory, while they themselves sit in
    the template checkout (``work_in(repo_dir)``). Under cruft that checkout is a temporary
    clone at the recorded commit, which no context key names (cruft sets only ``_template``
    and ``_commit``), so the parent's working directory comes first. ``_repo_dir`` (cookiecutter
    only, relative to the caller's directory when the template path was) is the fallback."""
    candidates = [parent_cwd()]
    for key in ("_repo_dir", "_template"):
        value = ANSWERS.get(key)
        if isinstance(value, str) and value and "://" not in value and not value.startswith("git@"):
            path = Path(value).expanduser()
            candidates.append(
                path if path.is_absolute() else Path(os.environ.get("PWD", ".")) / path
            )
    for candidate in candidates:
        if (
            candidate
            and (candidate / "cookiecutter.json").is_file()
            and (candidate / SCHEMA).is_file()
        ):
            return candidate
    return None


@lru_cache(maxsize=1)
def schema_patterns() -> dict:
    """The toolkit's airflow_gitops/validate/patterns.py, run from the template's copy: the one
    definition of what a schema `pattern` means (ECMA-262's `$`, not Python's), which
    `validate` uses too. The hook runs before the new repo has a toolkit."""
    toolkit = next(template_dir().glob("*cookiecutter.project*"))  # the folder cookiecutter renders
    path = toolkit / "airflow_gitops" / "validate" / "patterns.py"
    namespace: dict = {"__name__": "schema_patterns"}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    return namespace


def load_schema() -> dict | None:
    folder = template_dir()
    return json.loads((folder / SCHEMA).read_text(encoding="utf-8")) if folder else None


# JSON Schema keywords that describe and never reject.
ANNOTATIONS = {"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default"}
DEFS = "#/$defs/"


def json_type_is(value: object, name: str) -> bool:
    if name == "integer":  # bool is an int to Python, not to JSON Schema
        return type(value) is int
    if name == "number":
        return type(value) in (int, float)
    names = {"string": str, "object": dict, "array": list, "boolean": bool, "null": type(None)}
    return type(value) is names.get(name)


def same_scalar(value: object, expected: object) -> bool:
    """JSON equality where Python's differs (True == 1); lists and objects are left to jsonschema."""
    scalar = type(expected) in (str, int, float, bool, type(None))
    return scalar and type(value) is type(expected) and value == expected


# keyword -> (value, the keyword's argument, the root schema) -> met for sure. Each one reads as
# jsonschema's Draft 2020-12 keyword does (`pattern` as the toolkit's patterns.py reads it,
# the schema's ECMA-262 meaning; lengths count code points);
# where it could differ (1 against 1.0, a remote $ref) it answers False, never a guess.
SURE_CHECKS = {
    "type": lambda v, t, root: any(json_type_is(v, n) for n in ([t] if isinstance(t, str) else t)),
    "enum": lambda v, options, root: any(same_scalar(v, o) for o in options),
    "const": lambda v, c, root: same_scalar(v, c),
    "pattern": lambda v, p, root: not isinstance(v, str) or schema_patterns()["search"](p, v),
    "minLength": lambda v, n, root: not isinstance(v, str) or len(v) >= n,
    "maxLength": lambda v, n, root: not isinstance(v, str) or len(v) <= n,
    "minimum": lambda v, n, root: type(v) not in (int, float) or v >= n,
    "maximum": lambda v, n, root: type(v) not in (int, float) or v <= n,
    "anyOf": lambda v, schemas, root: any(surely_valid(v, s, root) for s in schemas),
    "$ref": lambda v, ref, root: (
        ref.startswith(DEFS) and surely_valid(v, root.get("$defs", {}).get(ref[len(DEFS) :]), root)
    ),
    "required": lambda v, names, root: not isinstance(v, dict) or all(n in v for n in names),
    "properties": lambda v, schemas, root: (
        not isinstance(v, dict)
        or all(surely_valid(v[k], s, root) for k, s in schemas.items() if k in v)
    ),
}


def surely_valid(value: object, schema: object, root: dict) -> bool:
    """True only when `value` meets `schema` for sure; False when it does not or when the
    schema uses a keyword not in SURE_CHECKS (then jsonschema decides)."""
    if schema is True:
        return True
    if not isinstance(schema, dict):
        return False
    return all(
        keyword in ANNOTATIONS
        or keyword.startswith("x-")
        or (keyword in SURE_CHECKS and SURE_CHECKS[keyword](value, rule, root))
        for keyword, rule in schema.items()
    )


def schema_problems(answers: dict, schema: dict) -> list[tuple[str, str]]:
    """(question, problem line) for what the JSON Schema finds, worded with each property's
    `x-allowed`; one line per question, however many rules it breaks. Answers that surely meet
    the schema skip jsonschema: importing it was most of the hook's time (0.06 s of 0.1 s CPU);
    every other answer still goes through it, so it alone decides what is wrong and words it."""
    try:
        if surely_valid(answers, schema, schema):
            return []
    except (re.error, TypeError, AttributeError, RecursionError):
        pass  # a schema shape the quick check does not know: jsonschema decides
    try:
        validator_class = schema_patterns()["validator_class"]()
    except ImportError:
        return [
            (
                "jsonschema",
                "jsonschema is not installed: the template needs it to check "
                "answers (pip install jsonschema)",
            )
        ]
    found: dict[str, str] = {}
    errors = validator_class(schema).iter_errors(answers)
    for error in sorted(errors, key=lambda e: [str(p) for p in e.path]):
        for field, line in describe(error, answers, schema):
            found.setdefault(field, line)
    return sorted(found.items())


def describe(error, answers: dict, schema: dict) -> list[tuple[str, str]]:
    """Every shape of jsonschema error as (question, one line). Errors about one answer have a
    `path`; errors about the answers as a whole (`required`, `additionalProperties`, a wrong
    top-level type) have none and name the questions through the rule instead."""
    if error.path:
        field = str(error.path[0])
        prop = schema.get("properties", {}).get(field, {})
        if "$ref" in prop:
            prop = schema.get("$defs", {}).get(prop["$ref"].rsplit("/", 1)[1], {})
        allowed = prop.get("x-allowed") or one_line(error.message)
        return [(field, problem(field, answers.get(field), allowed))]
    if error.validator == "required" and isinstance(error.instance, dict):
        return [
            (name, f"{name}: missing; cookiecutter.json (or the replay file) must define it")
            for name in error.validator_value
            if name not in error.instance
        ]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extra = [
            name
            for name in error.instance
            if name not in known and not any(re.search(pattern, name) for pattern in patterns)
        ]
        return [
            (name, problem(name, error.instance[name], "not a question of this template"))
            for name in extra
        ] or [("answers", one_line(error.message))]
    return [("answers", f"answers: {one_line(error.message)}")]


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def bucket_problems(answers: dict) -> list[str]:
    if answers["dag_source"] not in ("s3-sync", "s3-bundle"):
        return []
    name = answers["dag_bucket"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
        return []  # the schema already said what is wrong
    reasons = []
    if ".." in name or ".-" in name or "-." in name:
        reasons.append("no two adjacent dots, and no dot next to a hyphen")
    import ipaddress  # here: only S3 modes check a bucket name

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
    return (
        [problem("dag_bucket", name, "an S3 bucket name with " + "; ".join(reasons))]
        if reasons
        else []
    )


def interval_problems(answers: dict) -> list[str]:
    value = answers["sync_interval_seconds"]
    if isinstance(value, str) and value.isdigit() and not 5 <= int(value) <= 3600:
        return [problem("sync_interval_seconds", value, "whole seconds from 5 to 3600")]
    return []


def retention_problems(answers: dict) -> list[str]:
    value = answers["log_retention_days"]
    if isinstance(value, str) and value.isdigit() and not 1 <= int(value) <= 3650:
        return [problem("log_retention_days", value, "whole days from 1 to 3650")]
    return []


def known_hosts_problems(answers: dict) -> list[str]:
    """Git over SSH must pin the host key; otherwise a spoofed host gets the DAGs."""
    url = answers["git_repo_url"]
    git_modes = ("git-sync", "git-bundle")
    if answers["dag_source"] not in git_modes or not str(url).startswith(("git@", "ssh://")):
        return []
    lines = [line for line in str(answers["git_known_hosts"]).splitlines() if line.strip()]
    if not lines:
        return [
            problem(
                "git_known_hosts",
                answers["git_known_hosts"],
                "required for git over SSH: the host's known_hosts line(s), "
                "e.g. from ssh-keyscan checked against the host's published keys",
            )
        ]
    for line in lines:
        parts = line.split()
        if (
            len(parts) < 3
            or parts[1] not in KNOWN_HOST_KEY_TYPES
            or not re.fullmatch(r"[A-Za-z0-9+/]+=*", parts[2])
        ):
            return [
                problem(
                    "git_known_hosts",
                    line,
                    "known_hosts lines 'host keytype base64key' with keytype one of "
                    + ", ".join(KNOWN_HOST_KEY_TYPES),
                )
            ]
    return []


def oidc_subject_problems(answers: dict) -> list[str]:
    if answers["github_oidc_subject"] != "immutable":
        return []
    return [
        problem(
            field,
            answers[field],
            "required with the immutable subject format: the numeric id from the GitHub API",
        )
        for field in ("github_owner_id", "github_repository_id")
        if not str(answers[field]).isdigit()
    ]


def name_length_problems(answers: dict) -> list[str]:
    """Derived Kubernetes names must stay DNS-1123 labels (63 characters)."""
    release = answers["airflow_release"]
    if isinstance(release, str) and len(release) + len("-api-secret-key") > 63:
        return [
            problem(
                "airflow_release",
                release,
                "at most 48 characters (names such as <release>-api-secret-key must fit 63)",
            )
        ]
    return []


def environment_problems(answers: dict, schema: dict) -> list[str]:
    """Each environment once; a later one's names (project, namespace and DAG bucket with
    "-<name>" added, as names.jinja derives them) within the limits the schema sets."""
    names = answers["environments"].split(",")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        return [
            problem(
                "environments",
                answers["environments"],
                f"each name once ({', '.join(twice)} repeated)",
            )
        ]
    limits = [("project", "projectName"), ("namespace", "dns1123Label")]
    if answers["dag_source"] in ("s3-sync", "s3-bundle"):
        limits.append(("dag_bucket", "s3BucketName"))
    found = []
    longest = max(names[1:], key=len, default="")
    for field, rule in limits:
        limit = schema["$defs"][rule]["maxLength"]
        if longest and len(answers[field]) + 1 + len(longest) > limit:
            found.append(
                problem(
                    "environments",
                    answers["environments"],
                    f"names short enough that {field} + '-{longest}' stays within {limit} "
                    f"characters ({answers[field]!r} is {len(answers[field])})",
                )
            )
    return found


def alb_certificate_problems(answers: dict) -> list[str]:
    """An ALB can only use an ACM certificate of its own region, and we deploy to one account."""
    if answers["ui_access"] != "alb":
        return []
    arn = answers["alb_certificate_arn"]
    allowed = (
        f"required with ui_access alb: an ACM certificate ARN in {answers['aws_region']} and account "
        f"{answers['aws_account_id']}, arn:aws:acm:{answers['aws_region']}:{answers['aws_account_id']}:certificate/UUID"
    )
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
        return [
            problem(
                "workers_max", high, "a whole number of workers from 1 to 999, at least workers_min"
            )
        ]
    if int(low) > int(high):
        return [
            problem(
                "workers_min",
                low,
                f"a whole number of workers from 0 to 999, at most workers_max ({high})",
            )
        ]
    return []


RULES = (
    bucket_problems,
    interval_problems,
    retention_problems,
    known_hosts_problems,
    oidc_subject_problems,
    name_length_problems,
    alb_certificate_problems,
    worker_count_problems,
)


def main() -> int:
    answers = {key: value for key, value in ANSWERS.items() if not key.startswith("_")}
    schema = load_schema()
    if schema is None:
        print(
            f"ERROR: cannot find the template's {SCHEMA.as_posix()} (looked in the folder "
            "cookiecutter or cruft runs this hook from, and in _repo_dir); please report "
            "it with the command you ran.",
            file=sys.stderr,
        )
        return 1
    found = schema_problems(answers, schema)
    bad_fields = {field for field, _ in found}
    lines = [line for _, line in found]
    for rule in (*RULES, lambda answers: environment_problems(answers, schema)):
        try:
            lines += [p for p in rule(answers) if p.split(" ", 1)[0] not in bad_fields]
        except (KeyError, TypeError, AttributeError, ValueError):
            continue  # the schema already reported the missing or mistyped answer
    for line in lines:
        print(f"ERROR: {line}", file=sys.stderr)
    if lines:
        print(f"ERROR: {len(lines)} answer(s) rejected; nothing was generated.", file=sys.stderr)
        return 1
    carry_schemas(template_dir())
    return 0


def carry_schemas(template: Path) -> None:
    """schemas/ has one copy, in the template; each generated repo carries it for `validate`.
    Copied here, where the template checkout is known, into the new (still empty) project
    folder that is this hook's working directory; post_gen then never needs the template."""
    shutil.copytree(template / "schemas", Path.cwd() / "schemas", dirs_exist_ok=True)


if __name__ == "__main__":
    status = main()
    gc.freeze()  # nothing to collect at exit: the teardown skips its walk over every object
    raise SystemExit(status)

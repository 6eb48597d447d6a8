"""Security defaults: pinned images, nobody as root, hardened sidecars, no committed secrets."""

from __future__ import annotations

import re
from collections.abc import Iterator

from airflow_gitops.validate.findings import Finding
from airflow_gitops.validate.rules.common import as_dict, as_list, as_str, is_ssh_url, walk

# Values keys that hold a secret; set in a committed file, the secret is public.
SECRET_VALUES = {
    ("fernetKey",): "fernetKeySecretName",
    ("webserverSecretKey",): "webserverSecretKeySecretName",
    ("apiSecretKey",): "apiSecretKeySecretName",
    ("jwtSecret",): "jwtSecretName",
    ("data", "metadataConnection", "pass"): "data.metadataSecretName",
    ("data", "resultBackendConnection", "pass"): "data.resultBackendSecretName",
    ("postgresql", "auth", "postgresPassword"): "an external database and data.metadataSecretName",
    ("postgresql", "auth", "password"): "an external database and data.metadataSecretName",
    ("redis", "password"): "redis.passwordSecretName",
    ("dags", "gitSync", "sshKey"): "dags.gitSync.sshKeySecret",
    ("pgbouncer", "auth", "password"): "pgbouncer.auth secrets",
    ("elasticsearch", "connection", "pass"): "elasticsearch.secretName",
    ("opensearch", "connection", "pass"): "opensearch.secretName",
    ("config", "core", "fernet_key"): "fernetKeySecretName",
    ("config", "webserver", "secret_key"): "webserverSecretKeySecretName",
    ("config", "api", "secret_key"): "apiSecretKeySecretName",
    ("config", "api_auth", "jwt_secret"): "jwtSecretName",
    ("config", "database", "sql_alchemy_conn"): "data.metadataSecretName",
}
SECRETISH_ENV = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|ACCESS_KEY|API_KEY|FERNET_KEY|"
    r"SQL_ALCHEMY_CONN|BROKER_URL|RESULT_BACKEND|^AIRFLOW_CONN_)",
    re.IGNORECASE,
)
# Settings whose names look secret but that hold none: which secrets backend to use and its
# options (names and prefixes of secrets, a role ARN), and references to Secrets by name.
NOT_SECRET_ENV = re.compile(
    r"^(AIRFLOW__SECRETS__(BACKEND|BACKEND_KWARGS|USE_CACHE|CACHE_TTL_SECONDS)|AIRFLOW__WORKERS__SECRETS_BACKEND(_KWARGS)?"
    r"|.*_SECRET_(NAME|ARN|ID|KEY_NAME|PATH))$",
    re.IGNORECASE,
)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")

# Scanned in the raw text of every file of the repository (DAGs, actions, docs included), with
# the patterns secret scanners use (gitleaks' aws-access-token, private-key, generic URL
# credentials); each hit is a secret that must be rotated, not just removed.
TEXT_SECRETS = (
    (re.compile(r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"), "a private key"),
    (
        re.compile(
            r"aws_secret_access_key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
            re.IGNORECASE,
        ),
        "an AWS secret access key",
    ),
    # A Fernet key (32 bytes, URL-safe base64) written next to its name.
    (
        re.compile(
            r"fernet_?key[\"']?\s*(?:[:=]|\n\s*value:)\s*[\"']?(?P<secret>[A-Za-z0-9_-]{43}=)",
            re.IGNORECASE,
        ),
        "a Fernet key",
    ),
    # scheme://USER:PASSWORD@HOST with a literal password (placeholders are not secrets).
    (
        re.compile(
            r"\b[a-z][a-z0-9+.-]{1,30}://[^/\s:@\"'`]+:(?P<password>[^/\s@\"'`]+)@[^\s\"'`]+"
        ),
        "a connection URI with a password",
    ),
)
# Values that stand for a secret rather than being one: <password>, $VAR, ${VAR}, {{ var }}.
_PLACEHOLDER = re.compile(r"^(<[^>]*>|\$\{?[A-Za-z_]\w*\}?|\{\{.*\}\})$")
# ... and, in a URI shown as an example, PASSWORD, DB_PASS, ***, xxx or ...
_URI_PLACEHOLDER = re.compile(
    r"^(<[^>]*>|\$\{?[A-Za-z_]\w*\}?|\{\{.*\}\}|\*+|x+|\.\.\.|[A-Z][A-Z0-9_]*)$"
)


def check(repo) -> Iterator[Finding]:
    yield from _text_secrets(repo)
    documents = ([repo.values] if repo.values else []) + list(repo.manifests)
    for doc in documents:
        yield from _privileges(doc)
        yield from _containers(doc)
    for doc in repo.by_kind("Secret"):
        for key in ("data", "stringData"):
            if as_dict(doc.data.get(key)):
                yield doc.finding(
                    (key,),
                    f"Secret {doc.get('metadata', 'name')!r} has {key} in a committed file; "
                    "create it in the cluster instead (README: Secrets)",
                    "secret-committed",
                )
    if repo.values:
        yield from _values_secrets(repo.values)
        yield from _values_images(repo.values)
        yield from _git_sync(repo.values)


def _text_secrets(repo) -> Iterator[Finding]:
    for path, text in {**repo.texts, **repo.other_texts}.items():
        for pattern, what in TEXT_SECRETS:
            for match in pattern.finditer(text):
                if "password" in pattern.groupindex and _URI_PLACEHOLDER.match(
                    match.group("password")
                ):
                    continue
                start = match.start("secret") if "secret" in pattern.groupindex else match.start()
                line = text.count("\n", 0, start) + 1
                col = start - (text.rfind("\n", 0, start) + 1) + 1
                yield Finding(
                    path,
                    line,
                    col,
                    f"{what} is committed here; remove it and rotate it",
                    "secret-committed",
                )


def _privileges(doc) -> Iterator[Finding]:
    """Anywhere in the document: uid 0, privileged, privilege escalation, added capabilities."""
    for path, value in walk(doc.data):
        if not path:
            continue
        key = path[-1]
        if (
            key in ("runAsUser", "uid")
            and value == 0
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            yield doc.finding(
                path,
                f"{_dotted(path)}: 0 runs as root; use the image's user (Airflow: 50000)",
                "container-root",
            )
        elif key == "privileged" and value is True:
            yield doc.finding(
                path,
                f"{_dotted(path)}: privileged containers may not run here",
                "container-privileged",
            )
        elif key == "allowPrivilegeEscalation" and value is True:
            yield doc.finding(
                path,
                f"{_dotted(path)}: set allowPrivilegeEscalation: false",
                "privilege-escalation",
            )
        elif key == "add" and len(path) > 1 and path[-2] == "capabilities" and as_list(value):
            yield doc.finding(
                path,
                f"{_dotted(path)}: adds Linux capabilities {value}; drop ALL instead",
                "privilege-escalation",
            )
        elif key == "runAsNonRoot" and value is False:
            yield doc.finding(
                path,
                f"{_dotted(path)}: runAsNonRoot: false lets the image run as root",
                "container-root",
            )


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


CONTAINER_LISTS = {"extraContainers", "extraInitContainers", "containers", "initContainers"}
SIDECAR_LISTS = {"extraContainers", "extraInitContainers"}


def _containers(doc) -> Iterator[Finding]:
    for path, value in walk(doc.data):
        if not path or path[-1] not in CONTAINER_LISTS or not isinstance(value, list):
            continue
        for index, container in enumerate(value):
            if not isinstance(container, dict):
                continue
            cpath = path + (index,)
            name = as_str(container.get("name")) or f"#{index}"
            image = container.get("image")
            if isinstance(image, str):
                problem = image_problem(image)
                if problem:
                    yield doc.finding(
                        cpath + ("image",),
                        f"container {name!r}: image {image!r} {problem}",
                        "image-unpinned",
                    )
            elif "image" not in container and path[-1] in SIDECAR_LISTS:
                yield doc.finding(cpath, f"container {name!r} has no image", "image-unpinned")
            if path[-1] in SIDECAR_LISTS:
                yield from _sidecar_hardening(doc, cpath, name, container)


def _sidecar_hardening(doc, cpath, name, container) -> Iterator[Finding]:
    context = container.get("securityContext")
    if not isinstance(context, dict):
        yield doc.finding(
            cpath,
            f"sidecar {name!r} has no securityContext: set readOnlyRootFilesystem: true, "
            "allowPrivilegeEscalation: false and capabilities.drop: [ALL]",
            "sidecar-hardening",
            at_key=True,
        )
        return
    spath = cpath + ("securityContext",)
    if context.get("readOnlyRootFilesystem") is not True:
        yield doc.finding(
            spath,
            f"sidecar {name!r}: set readOnlyRootFilesystem: true",
            "sidecar-hardening",
            at_key=True,
        )
    drop = as_list(as_dict(context.get("capabilities")).get("drop"))
    if "ALL" not in drop:
        yield doc.finding(
            spath,
            f"sidecar {name!r}: set capabilities.drop: [ALL]",
            "sidecar-hardening",
            at_key=True,
        )
    if context.get("allowPrivilegeEscalation") is not False:
        yield doc.finding(
            spath,
            f"sidecar {name!r}: set allowPrivilegeEscalation: false",
            "sidecar-hardening",
            at_key=True,
        )


def image_problem(image: str) -> str | None:
    """Why ``image`` is not pinned to a version, or None when it is."""
    name, _, digest = image.partition("@")
    if digest:
        return None if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else "has a malformed digest"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag; pin a version (e.g. name:1.2.3)"
    tag = last.rsplit(":", 1)[1]
    if tag.lower() in ("latest", "stable", "main", "master", "edge", "nightly", ""):
        return f"uses the moving tag {tag!r}; pin a version"
    return None


def _values_secrets(values) -> Iterator[Finding]:
    for path, instead in SECRET_VALUES.items():
        value = values.get(*path)
        if isinstance(value, str) and value.strip():
            yield values.finding(
                path,
                f"{_dotted(path)} puts a secret in a committed file; use {instead} (a Secret created in the cluster)",
                "secret-committed",
            )
    broker = values.get("data", "brokerUrl")
    if isinstance(broker, str) and URL_WITH_PASSWORD.search(broker):
        yield values.finding(
            ("data", "brokerUrl"),
            "data.brokerUrl has a password; use data.brokerUrlSecretName",
            "secret-committed",
        )
    for path, value in walk(values.data):
        if path and path[-1] in ("env",) and isinstance(value, list):
            in_container = any(part in CONTAINER_LISTS for part in path if isinstance(part, str))
            for index, item in enumerate(value):
                item = as_dict(item)
                name = as_str(item.get("name"))
                if not SECRETISH_ENV.search(name) or NOT_SECRET_ENV.match(name):
                    continue
                if not as_str(item.get("value")).strip() or _PLACEHOLDER.match(
                    as_str(item.get("value"))
                ):
                    continue
                # The chart's own env lists take only name/value; a container's env takes valueFrom.
                instead = (
                    "valueFrom.secretKeyRef (a Secret created in the cluster)"
                    if in_container
                    else f"a `secret:` entry (envName: {name}, secretName, secretKey) naming a Secret created in the cluster"
                )
                yield values.finding(
                    path + (index, "value"),
                    f"env {name} has a literal secret; use {instead}",
                    "secret-committed",
                )
    extra = values.get("extraSecrets")
    if isinstance(extra, dict):
        for name, spec in extra.items():
            if isinstance(spec, dict) and (spec.get("data") or spec.get("stringData")):
                yield values.finding(
                    ("extraSecrets", name),
                    f"extraSecrets.{name} commits secret data; create the Secret in the cluster",
                    "secret-committed",
                    at_key=True,
                )
    # Defaults the chart would fall back to: its bundled PostgreSQL with password "postgres",
    # and a metadata connection built from data.metadataConnection (same default password).
    if values.get("postgresql", "enabled") is not False:
        yield values.finding(
            ("postgresql",) if values.get("postgresql") is not None else (),
            "the chart's bundled PostgreSQL (on unless postgresql.enabled: false) uses the default "
            "password 'postgres'; use an external database via data.metadataSecretName",
            "default-password",
        )
    if not values.get("data", "metadataSecretName"):
        yield values.finding(
            ("data",) if values.get("data") is not None else (),
            "data.metadataSecretName is not set: the chart builds the database connection from "
            "data.metadataConnection, whose default password is 'postgres'",
            "default-password",
        )


def _values_images(values) -> Iterator[Finding]:
    tag = values.get("defaultAirflowTag")
    if isinstance(tag, str) and image_problem(f"airflow:{tag}"):
        yield values.finding(
            ("defaultAirflowTag",),
            f"defaultAirflowTag {tag!r} is a moving tag; pin a version",
            "image-unpinned",
        )
    for name, image in as_dict(values.get("images")).items():
        image = as_dict(image)
        tag = image.get("tag")
        if isinstance(tag, str) and image_problem(f"x:{tag}") and not image.get("digest"):
            yield values.finding(
                ("images", name, "tag"),
                f"images.{name}.tag {tag!r} is a moving tag; pin a version",
                "image-unpinned",
            )
        elif (
            name == "gitSync"
            and image.get("repository")
            and tag in (None, "")
            and values.get("dags", "gitSync", "enabled") is True
        ):
            yield values.finding(
                ("images", name),
                "images.gitSync has a repository but no tag",
                "image-unpinned",
                at_key=True,
            )


def _git_sync(values) -> Iterator[Finding]:
    git = as_dict(values.get("dags", "gitSync"))
    if git.get("enabled") is not True:
        return
    repo = as_str(git.get("repo"))
    if is_ssh_url(repo):
        if not as_str(git.get("knownHosts")).strip():
            yield values.finding(
                ("dags", "gitSync", "knownHosts") if "knownHosts" in git else ("dags", "gitSync"),
                "git-sync over SSH without knownHosts accepts any host key (a spoofed host could "
                "serve DAGs); set dags.gitSync.knownHosts (ssh-keyscan, then verify)",
                "gitsync-known-hosts",
                at_key="knownHosts" not in git,
            )
        if not git.get("sshKeySecret") and not git.get("sshKey"):
            yield values.finding(
                ("dags", "gitSync"),
                "git-sync over SSH needs dags.gitSync.sshKeySecret (the deploy key Secret)",
                "gitsync-ssh-key",
                at_key=True,
            )
    context = (
        git.get("securityContexts", {}).get("container")
        if isinstance(git.get("securityContexts"), dict)
        else None
    )
    context = (
        as_dict(context)
        or as_dict(git.get("securityContext"))
        or as_dict(values.get("securityContexts", "containers"))
    )
    where = (
        ("dags", "gitSync", "securityContexts")
        if isinstance(git.get("securityContexts"), dict)
        else ("dags", "gitSync")
    )
    if context.get("readOnlyRootFilesystem") is not True:
        yield values.finding(
            where,
            "git-sync sidecar: set securityContexts.container.readOnlyRootFilesystem: true",
            "sidecar-hardening",
            at_key=True,
        )
    if "ALL" not in as_list(as_dict(context.get("capabilities")).get("drop")):
        yield values.finding(
            where,
            "git-sync sidecar: set securityContexts.container.capabilities.drop: [ALL]",
            "sidecar-hardening",
            at_key=True,
        )

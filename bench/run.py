"""Benchmark of the product's proxy against nginx, django-revproxy and a direct call, all on loopback.

    .venv/bin/python bench/run.py [--duration S] [--rounds N] [--connections C] [--quick]
    .venv/bin/python bench/run.py --websocket [--ws-sockets N] [--duration S]   (bench/ws_bench.py)

Starts a fast upstream (nginx `return 200` with a 200-byte JSON body), nginx `proxy_pass` to it, the
product's proxy and django-revproxy (each under granian, WSGI), measures each and a direct call with
wrk in interleaved rounds, then the latency added at one connection and the memory of the Django
proxies' workers while a 100 MiB answer streams through them. bench/README.md explains each row.
Every process it starts is ended at exit, on Ctrl-C and on failure too.
"""

import argparse
import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
ORIGIN = "http://bench.example"
TENANT, UPSTREAM_SLUG = "bench", "bench-upstream"
# The upstream's answer: 200 bytes of JSON (no quote, backslash or $ that nginx would read).
BODY = ('{"jsonrpc":"2.0","id":1,"result":"0x' + "0" * 162 + '"}').encode()
assert len(BODY) == 200
BIG_MIB = 100
INSTALL_HINT = (
    "install them with: apt-get update && apt-get install -y wrk nginx-light  "
    "(or run `make bench`, which does that and installs bench/requirements.txt)"
)


class BenchError(Exception):
    """A setup step failed; the message says which and what to do."""


# --- processes -------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # In the child before exec: should this script be killed outright, the child still gets SIGTERM.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Every process the bench starts, each in a process group of its own so that stopping it ends its
    workers too. stop_all() ends them all: SIGTERM to the group, then SIGKILL to whatever is left."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], *, env=None, cwd=None, capture=False) -> subprocess.Popen:
        log = None if capture else open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else log,
                stderr=subprocess.PIPE if capture else subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no other thread runs while processes start
            )
        finally:
            if log is not None:
                log.close()
        self.running.append(proc)
        return proc

    def log_of(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, proc: subprocess.Popen) -> None:
        if proc in self.running:
            self.running.remove(proc)
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10.0)
        deadline = time.monotonic() + 3.0
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(text: str, lines: int = 15) -> str:
    return textwrap.indent("\n".join(text.strip().splitlines()[-lines:]), "    ")


def fetch(url: str, headers=None, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wait_until_serving(procs: Processes, name: str, proc, url: str, timeout: float = 60.0) -> None:
    """Until `url` answers 200 with a matching Origin (a refusal means the setup is wrong: say so)."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited ({proc.returncode}) while starting:\n{tail(procs.log_of(name))}")
        try:
            status, _, body = fetch(url, {"Origin": ORIGIN}, timeout=2.0)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"{status} {body[:300]!r}"
            if status < 500:
                break
        time.sleep(0.1)
    raise BenchError(f"{name}: {url} did not answer 200 (last: {last}):\n{tail(procs.log_of(name))}")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                # The ppid follows the command name, which is in parentheses and may hold spaces.
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return sorted(found)


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def connections_per_worker(port: int, workers: list[int]) -> list[int]:
    """How many established connections to `port` each worker process holds (from /proc/net/tcp)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 01: ESTABLISHED
                    inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in workers:
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    held += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
        counts.append(held)
    return counts


# --- the servers -----------------------------------------------------------------------------------


def nginx_conf(tmp: Path, name: str, port: int, workers: int, server: str, http_extra: str = "") -> Path:
    temp = tmp / f"nginx-{name}"
    temp.mkdir(exist_ok=True)
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes {workers};
pid {temp}/nginx.pid;
error_log {tmp}/logs/nginx-{name}.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    sendfile on;
    {http_extra}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        {server}
    }}
}}
"""
    )
    return conf


def start_nginx(procs: Processes, nginx: str, tmp: Path, name: str, conf: Path, port: int) -> int:
    """Start nginx; returns its master's pid (its workers are the master's children)."""
    argv = [nginx, "-p", str(tmp), "-e", str(tmp / "logs" / f"nginx-{name}.log"), "-c", str(conf)]
    proc = procs.start(name, argv)
    wait_until_serving(procs, name, proc, f"http://127.0.0.1:{port}/bench", 15.0)
    return proc.pid


def product_env(args, database_url: str | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": "bench",
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE": "0",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url or args.database_url,
        "REDIS_URL": args.redis_url,
    }


def revproxy_env(upstream_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "revproxy_site.settings",
        "DJANGO_SECRET_KEY": "bench",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(BENCH),
        "BENCH_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}/",
    }


def granian_argv(granian: str, app: str, port: int, workers: int, threads: int) -> list[str]:
    options = f"--interface wsgi --workers {workers} --blocking-threads {threads} --host 127.0.0.1"
    return [granian, *options.split(), "--port", str(port), "--log-level", "warning", app]


@dataclass
class Server:
    """One of the two Django proxies under granian, at one blocking-thread count."""

    kind: str  # "product" or "revproxy"
    threads: int
    port: int
    proc: subprocess.Popen
    name: str
    key_id: str

    def url(self, path: str = "bench") -> str:
        if self.kind == "product":
            return f"http://127.0.0.1:{self.port}/proxy/{UPSTREAM_SLUG}/{self.key_id}/{path}"
        return f"http://127.0.0.1:{self.port}/{path}"


class Servers:
    def __init__(self, procs: Processes, args, tools: dict[str, str], upstream_port: int, key_id: str):
        self.procs, self.args, self.tools = procs, args, tools
        self.upstream_port, self.key_id = upstream_port, key_id
        self.started = 0
        self.readiness_answers = 0  # 200s the product served to wait_until_serving

    def start(self, kind: str, threads: int, baseline: "Baseline | None" = None) -> Server:
        """`kind` "product" (the working tree's, or `baseline`'s) or "revproxy", at `threads`."""
        port = free_port()
        self.started += 1
        name = f"granian-{kind}-{threads}threads-{self.started}{'-baseline' if baseline else ''}"
        key_id = baseline.key_id if baseline else self.key_id
        if kind == "product":
            # The production entry point, as users start it (granian underneath, same options).
            root = baseline.root if baseline else ROOT
            argv, cwd = [str(root / "bin" / "serve")], root
            env = {
                **product_env(self.args, baseline.database_url if baseline else None),
                "PY": sys.executable,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "WEB_WORKERS": str(self.args.workers),
                "WEB_THREADS": str(threads),
                "GRANIAN_LOG_LEVEL": "warning",
            }
        else:
            app, env, cwd = "revproxy_site.wsgi:application", revproxy_env(self.upstream_port), BENCH
            argv = granian_argv(self.tools["granian"], app, port, self.args.workers, threads)
        proc = self.procs.start(name, argv, env=env, cwd=cwd)
        server = Server(kind, threads, port, proc, name, key_id)
        wait_until_serving(self.procs, name, proc, server.url())
        self.readiness_answers += kind == "product" and baseline is None
        return server


# --- the product's data ----------------------------------------------------------------------------

RESET_DATABASE = """
import sys, psycopg
from psycopg import sql
url, name = sys.argv[1], sys.argv[2]
with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
"""

# Empties the bench's Redis database.
REDIS_FLUSH = """
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3).flushdb()
"""

# The product's usage records (each process writes its counts there every second), by outcome.
USAGE = """
import json
from django.db.models import Sum
from keys.models import UsageRecord
counts = {}
for row in UsageRecord.objects.values("outcome", "code").annotate(n=Sum("count")):
    label = row["outcome"] + (":" + row["code"] if row["code"] else "")
    counts[label] = counts.get(label, 0) + row["n"]
print("USAGE " + json.dumps(counts))
"""

CREATE_KEY = f"""
import json
from keys import services
from keys.models import Tenant, Upstream
key, _ = services.api_key_create(
    tenant=Tenant.objects.get(slug={TENANT!r}),
    name="bench",
    upstreams=[Upstream.objects.get(slug={UPSTREAM_SLUG!r})],
    allowed_origins=[{ORIGIN!r}],
    rate_limit="100000000/m",
    actor="bench",
)
print(json.dumps({{"key_id": key.key_id}}))
"""


def run_python(tools, *argv: str, env=None, what: str, timeout: float = 300, cwd=ROOT) -> str:
    done = subprocess.run(
        [tools["python"], *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise BenchError(f"{what} failed:\n{tail(done.stderr or done.stdout, 4)}")
    return done.stdout


def redis_flush(tools, args) -> None:
    hint = f"Redis at {args.redis_url} (flush) — is it running (redis-cli ping)?"
    run_python(tools, "-c", REDIS_FLUSH, args.redis_url, what=hint, timeout=30)


def usage_counts(tools, args) -> dict[str, int]:
    """What the working tree's product recorded, by outcome (and code)."""
    env = product_env(args)
    output = run_python(tools, "manage.py", "shell", "--no-imports", "-c", USAGE, env=env, what="usage")
    for line in reversed(output.splitlines()):
        if line.startswith("USAGE "):
            return json.loads(line.removeprefix("USAGE "))
    raise BenchError(f"reading the usage records printed nothing:\n{tail(output)}")


def prepare_data(tools, args, upstream_port: int, root: Path = ROOT, database_url: str = "") -> str:
    """A fresh database with the tenant, the upstream and the bench's key, made by the product in
    `root`; returns the key id."""
    parts = urlsplit(database_url or args.database_url)
    database, admin_url = parts.path.lstrip("/"), parts._replace(path="/postgres").geturl()
    hint = f"(re)creating database {database!r} at {admin_url} — is PostgreSQL running (pg_isready)?"
    run_python(tools, "-c", RESET_DATABASE, admin_url, database, what=hint, timeout=60)
    env = product_env(args, database_url or None)

    def manage(*argv: str) -> str:
        what = f"manage.py {' '.join(argv[:2])}"
        return run_python(tools, "manage.py", *argv, env=env, what=what, cwd=root)

    manage("migrate", "--no-input", "-v", "0")
    manage("create_tenant", TENANT, "--owner", "bench@bench.example")
    manage("create_upstream", UPSTREAM_SLUG, f"http://127.0.0.1:{upstream_port}", "--allow-private-network")
    output = manage("shell", "--no-imports", "-c", CREATE_KEY)
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)["key_id"]
    raise BenchError(f"creating the key printed no JSON:\n{tail(output)}")


@dataclass
class Baseline:
    """The product at another git revision, in a worktree of its own with a database of its own."""

    revision: str
    root: Path
    database_url: str
    key_id: str = ""


def prepare_baseline(tools, args, tmp: Path, upstream_port: int, cleanups: list) -> Baseline:
    parts = urlsplit(args.database_url)
    database_url = parts._replace(path=parts.path + "_baseline").geturl()
    root = tmp / "baseline"
    added = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(root), args.baseline],
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        raise BenchError(f"--baseline {args.baseline}: git worktree add failed:\n{tail(added.stderr)}")
    cleanups.append(
        lambda: subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(root)], capture_output=True
        )
    )
    if not (root / "bin" / "serve").exists():
        raise BenchError(f"--baseline {args.baseline}: that revision has no bin/serve to start")
    (root / ".venv").symlink_to(Path(tools["python"]).parent.parent)  # the same packages
    baseline = Baseline(args.baseline, root, database_url)
    baseline.key_id = prepare_data(tools, args, upstream_port, root, database_url)
    return baseline


# --- wrk -------------------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50: float  # ms
    p99: float  # ms
    requests: int
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    spread: list[int] | None = None  # connections held by each worker of the server, 0.5 s in
    restarts: int = 0  # wrk starts dropped because one worker held most of the connections


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise BenchError(f"unexpected wrk time {text!r}")
    return float(match.group(1)) * UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> Run:
    percentiles = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    if not (rps and total and 50 in percentiles and 99 in percentiles):
        raise BenchError(f"could not read wrk's output:\n{tail(output, 30)}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    names = ("connect", "read", "write", "timeout")
    socket_errors = (
        {n: int(v) for n, v in zip(names, errors.groups(), strict=True) if int(v)} if errors else {}
    )
    return Run(
        rps=float(rps.group(1)),
        p50=percentiles[50],
        p99=percentiles[99],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


# A server whose workers share one listening socket (granian 2.5, nginx) may hand most of wrk's
# connections to one worker, and a Python worker alone then does the work of two. A wrk start where one
# worker holds more than this share of the connections is dropped and started again, up to MAX_STARTS.
MAX_SHARE = 0.75
MAX_STARTS = 6


class Load:
    """wrk against one URL at a time; keeps what went wrong and how many product requests completed."""

    def __init__(self, procs: Processes, wrk: str, threads: int) -> None:
        self.procs, self.wrk, self.threads = procs, wrk, threads
        self.problems: list[str] = []
        self.product_completed = 0  # answers wrk received from the product (it may have served more)
        self.not_counted: set[str] = set()  # URLs of a product whose usage is not checked (a baseline)
        self.restarts = 0

    def _spread(self, server_pid: int | None, port: int, connections: int, wrk) -> list[int] | None:
        workers = children_of(server_pid) if server_pid else []
        if len(workers) < 2 or connections < len(workers):
            return None
        deadline = time.monotonic() + 0.5
        counts = connections_per_worker(port, workers)
        while sum(counts) < connections and time.monotonic() < deadline and wrk.poll() is None:
            time.sleep(0.05)
            counts = connections_per_worker(port, workers)
        return counts

    def run(
        self, label: str, url: str, *, connections: int, seconds: float, single=False, server_pid=None
    ) -> Run:
        """One wrk run; `server_pid` (the process whose children are the workers) to even out connections."""
        threads = 1 if single else min(self.threads, connections)
        argv = [self.wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        argv += ["--timeout", "10s", "-H", f"Origin: {ORIGIN}", url]
        product = "/proxy/" in url and url not in self.not_counted
        for attempt in range(MAX_STARTS):
            proc = self.procs.start("wrk", argv, capture=True)
            try:
                spread = self._spread(server_pid, urlsplit(url).port or 80, connections, proc)
                if spread and max(spread) > MAX_SHARE * sum(spread) and attempt + 1 < MAX_STARTS:
                    continue  # the finally clause stops this wrk
                out, err = proc.communicate(timeout=seconds + 60)
            finally:
                self.procs.stop(proc)
            break
        self.restarts += attempt
        if proc.returncode != 0:
            raise BenchError(f"wrk failed on {url}:\n{tail(err.decode(errors='replace'))}")
        run = parse_wrk(out.decode(errors="replace"))
        run.spread, run.restarts = spread, attempt
        if product:
            self.product_completed += run.requests
        if run.non_2xx:
            self.problems.append(
                f"{label}: {run.non_2xx} non-2xx answers of {run.requests} (-c{connections})"
            )
        if run.socket_errors:
            self.problems.append(f"{label}: socket errors {run.socket_errors} (-c{connections})")
        return run


# --- measurements ----------------------------------------------------------------------------------


def check_answers(targets: dict[str, str], product: Server) -> tuple[list[str], int]:
    """Each target answers the upstream's body; the product also applies its origin check.
    Returns the problems, and how many 200s the product served to these checks."""
    problems, product_ok = [], 0
    for label, url in targets.items():
        status, headers, body = fetch(url, {"Origin": ORIGIN})
        product_ok += url == product.url() and status == 200
        if status != 200 or body != BODY:
            problems.append(f"{label}: answered {status} with {body[:200]!r} instead of the 200-byte body")
        if url == product.url() and (
            headers.get("access-control-allow-origin") != ORIGIN or "ratelimit-policy" not in headers
        ):
            problems.append(f"{label}: its answer lacks the CORS or rate-limit headers: {headers}")
    status, _, body = fetch(product.url(), {"Origin": "http://other.example"})
    if status != 403:
        problems.append(f"product: a foreign Origin answered {status}, not 403: {body[:200]!r}")
    return problems, product_ok


def sweep(servers: Servers, load: Load, args) -> dict[str, dict[int, Run]]:
    """Each Django proxy at each blocking-thread count, one at a time, each after a 1 s warm-up."""
    results: dict[str, dict[int, Run]] = {"product": {}, "revproxy": {}}
    for threads in args.blocking_threads:
        for kind in results:
            server = servers.start(kind, threads)
            try:
                pid, url = server.proc.pid, server.url()
                load.run(f"{kind} warm-up", url, connections=args.connections, seconds=1, server_pid=pid)
                label = f"{kind}, {threads} blocking threads (sweep)"
                run = load.run(
                    label, url, connections=args.connections, seconds=args.sweep_duration, server_pid=pid
                )
            finally:
                servers.procs.stop(server.proc)
            results[kind][threads] = run
            print(f"  {kind:<8} {threads:>3} blocking threads: {run.rps:>7.0f} req/s", flush=True)
    return results


def rounds(
    load: Load, targets: dict[str, str], pids: dict[str, int], args, *, connections: int, seconds: float
):
    runs: dict[str, list[Run]] = {label: [] for label in targets}
    labels = list(targets)
    for number in range(args.rounds):
        # Rotate the order every round, so that no target always runs first or last as the machine drifts.
        shift = number % len(labels)
        for label in labels[shift:] + labels[:shift]:
            runs[label].append(
                load.run(
                    label,
                    targets[label],
                    connections=connections,
                    seconds=seconds,
                    single=connections == 1,
                    server_pid=pids[label],
                )
            )
        print(f"  round {number + 1}/{args.rounds} done", flush=True)
    return runs


def summarize(runs: list[Run]) -> dict:
    rps = [run.rps for run in runs]
    median = statistics.median(rps)
    return {
        "rps": median,
        "p50": statistics.median(run.p50 for run in runs),
        "p99": statistics.median(run.p99 for run in runs),
        "spread": (max(rps) - min(rps)) / median if median else 0.0,
        "rounds_rps": [round(value) for value in rps],
        "connections_per_worker": [run.spread for run in runs],
    }


@dataclass
class Stream:
    label: str
    seconds: float = 0.0
    received: int = 0
    digest: str = ""
    status: int = 0
    error: str = ""
    peak_rss: dict[int, int] = field(default_factory=dict)
    speeds: list[float] = field(default_factory=list)  # MiB/s of each repeat


def stream_through(port: int, path: str, rate_mib_s: float | None, out: list) -> None:
    """GET a large answer and discard it, at full speed or at a fixed rate; appends a Stream to `out`."""
    result = Stream(label="")
    started = time.monotonic()
    digest = hashlib.md5(usedforsecurity=False)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", path, headers={"Origin": ORIGIN})
        answer = conn.getresponse()
        result.status = answer.status
        block = 1 << 20 if rate_mib_s is None else 64 << 10
        while chunk := answer.read(block):
            result.received += len(chunk)
            digest.update(chunk)
            if rate_mib_s is not None:  # sleep until the bytes read so far are due at that rate
                time.sleep(max(0.0, started + result.received / (rate_mib_s * (1 << 20)) - time.monotonic()))
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - started
    result.digest = digest.hexdigest()
    out.append(result)


@dataclass
class Memory:
    server: Server
    workers: list[int]
    before: dict[int, tuple[int, int]]
    after: dict[int, tuple[int, int]]
    streams: list[Stream]


def measure_memory(server: Server, streams: list[tuple[str, float | None, int]]) -> Memory:
    """The workers' (VmRSS, VmHWM) before and after, and their RSS sampled every 10 ms during each kind of
    stream (label, MiB/s or None for full speed, repeats): the peak over its repeats, the median time."""
    workers = children_of(server.proc.pid)
    if not workers:
        raise BenchError(f"found no worker process under granian (pid {server.proc.pid})")
    before = {pid: memory_kib(pid) for pid in workers}
    done = []
    path = urlsplit(server.url("big.bin")).path
    for label, rate, repeats in streams:
        holder: list[Stream] = []
        peak = dict.fromkeys(workers, 0)
        for _ in range(repeats):
            reader = threading.Thread(target=stream_through, args=(server.port, path, rate, holder))
            reader.start()
            while reader.is_alive():
                for pid in workers:
                    with contextlib.suppress(OSError, KeyError):
                        peak[pid] = max(peak[pid], memory_kib(pid)[0])
                time.sleep(0.01)
            reader.join()
        if len(holder) < repeats:
            holder.append(Stream(label="", error="a reader thread failed"))
        # Report the first failed repeat if any, else the median one.
        failed = [stream for stream in holder if stream.error or stream.status != 200]
        stream = failed[0] if failed else sorted(holder, key=lambda st: st.seconds)[len(holder) // 2]
        stream.label, stream.peak_rss = label, peak
        stream.speeds = [st.received / (1 << 20) / st.seconds for st in holder if st.seconds]
        if any(st.digest != stream.digest for st in holder):
            stream.error = "the repeats received different bytes"
        done.append(stream)
    return Memory(server, workers, before, {pid: memory_kib(pid) for pid in workers}, done)


# --- report ----------------------------------------------------------------------------------------

LOG_LINE = re.compile(r"Traceback|\b(WARNING|ERROR|CRITICAL)\b|\[(warn|error|crit|alert|emerg)\]")


def log_problems(procs: Processes) -> list[str]:
    """Warnings and errors in the servers' logs: each distinct message once, with its count and where."""
    seen: dict[str, dict[str, int]] = {}
    for path in sorted(procs.logs.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if LOG_LINE.search(line):
                message = re.sub(r"^[\d\-/: ,.]+", "", line).strip()[:300]  # without the timestamp
                where = seen.setdefault(message, {})
                where[path.stem] = where.get(path.stem, 0) + 1
    return [
        f"{sum(where.values())} x in the logs ({', '.join(f'{name}: {n}' for name, n in where.items())}): "
        f"{message}"
        for message, where in list(seen.items())[:10]
    ]


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  " + "  ".join(cells).rstrip())


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


# --- main ------------------------------------------------------------------------------------------


def find_tools() -> dict[str, str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    tools = {name: shutil.which(name, path=path) or "" for name in ("wrk", "nginx")}
    missing = [name for name, found in tools.items() if not found]
    if missing:
        raise BenchError(f"{' and '.join(missing)} not found; {INSTALL_HINT}")
    venv = ROOT / ".venv" / "bin" / "python"
    python = venv if venv.exists() else Path(sys.executable)
    granian = python.parent / "granian"
    if not granian.exists():
        raise BenchError(f"granian is not installed beside {python}; run `make bench`")
    check = subprocess.run(
        [str(python), "-c", "import django, revproxy, psycopg, redis"], capture_output=True
    )
    if check.returncode != 0:
        raise BenchError(
            f"{python} lacks the product's or the bench's packages; run `make bench` "
            f"(or {python} -m pip install -r requirements.txt -r bench/requirements.txt)"
        )
    version = subprocess.run([str(granian), "--version"], capture_output=True, text=True, timeout=60)
    return {
        **tools,
        "python": str(python),
        "granian": str(granian),
        "granian_version": version.stdout.strip() or "granian (version unknown)",
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds of each measured wrk run (10; quick: 3)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds, medians reported (3; quick: 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--workers", type=int, default=2, help="granian workers of each Django proxy (2)")
    parser.add_argument(
        "--blocking-threads",
        help="granian --blocking-threads values to try, comma-separated (1,2,4,8; quick: 2,4)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="about a minute: one short round, a smaller sweep"
    )
    parser.add_argument("--slow-rate", type=float, default=25.0, help="MiB/s of the slow reader (25)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/keyportal_bench"),
        help="PostgreSQL database the bench drops and creates afresh (env BENCH_DATABASE_URL)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="Redis database the bench empties before and after (env BENCH_REDIS_URL)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' logs (the path is printed)"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the product at this git revision (a worktree of its own, database "
        "<database>_baseline), in the same rounds, and print the working tree's ratio to it",
    )
    parser.add_argument(
        "--websocket",
        action="store_true",
        help="the WebSocket scenario instead (bench/ws_bench.py): many open sockets, a call a second each",
    )
    parser.add_argument("--ws-sockets", type=int, default=2000, help="open sockets of --websocket (2000)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.sweep_duration = max(2.0, round(args.duration / 3))
    args.latency_duration = max(2.0, round(args.duration / 2))
    args.blocking_threads = [
        int(n) for n in (args.blocking_threads or ("2,4" if args.quick else "1,2,4,8")).split(",")
    ]
    if min(args.blocking_threads + [args.rounds, args.connections, args.threads, args.workers]) < 1:
        parser.error("every count must be at least 1")
    return args


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="keyportal-bench-"))
    tmp.chmod(0o755)  # nginx's workers (nobody, when started as root) read the big file from here
    (tmp / "logs").mkdir()
    procs = Processes(tmp / "logs")
    tools: dict[str, str] = {}
    cleanups: list = []  # what to undo at the end besides the processes (a baseline's worktree)
    try:
        tools = find_tools()
        if args.websocket:
            from ws_bench import websocket_benchmark  # bench/ is this script's folder

            return websocket_benchmark(args, tools, procs)
        return benchmark(args, tools, procs, tmp, cleanups)
    except BenchError as exc:
        print(f"\nbench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    except SystemExit as exc:
        print(f"\nbench: stopped by a signal ({exc.code}); stopping everything it started", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        for cleanup in cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        if tools:
            with contextlib.suppress(Exception):
                redis_flush(tools, args)
        if args.keep_logs:
            kept = Path(tempfile.mkdtemp(prefix="keyportal-bench-logs-"))
            shutil.copytree(tmp / "logs", kept, dirs_exist_ok=True)
            print(f"logs kept in {kept}")
        shutil.rmtree(tmp, ignore_errors=True)


def benchmark(args, tools: dict[str, str], procs: Processes, tmp: Path, cleanups: list) -> int:
    cores = os.cpu_count() or 0
    print("keyportal proxy benchmark: everything on loopback (127.0.0.1)")
    print(
        f"The whole box has {cores} CPU cores: wrk, nginx, granian, Redis "
        "and PostgreSQL all share them, so the figures\ncompare the servers with each other on this box; "
        "they are not the capacity of any of them."
    )
    expected = len(args.blocking_threads) * 2 * (args.sweep_duration + 3) + args.rounds * 4 * (
        args.duration + args.latency_duration + 0.2
    )
    print(f"Expected run time: about {(expected + 30) / 60:.1f} min\n", flush=True)

    # 1. The upstream (and a 100 MiB file for the memory test); 2. nginx proxy_pass to it.
    www = tmp / "www"
    www.mkdir()
    block, digest = os.urandom(1 << 20), hashlib.md5(usedforsecurity=False)
    with open(www / "big.bin", "wb") as big:
        for _ in range(BIG_MIB):
            big.write(block)
            digest.update(block)
    upstream_port, nginx_port = free_port(), free_port()
    upstream_conf = nginx_conf(
        tmp,
        "upstream",
        upstream_port,
        1,
        f"location = /big.bin {{ root {www}; }}\n"
        f"        location / {{ default_type application/json; return 200 '{BODY.decode()}'; }}",
    )
    start_nginx(procs, tools["nginx"], tmp, "upstream", upstream_conf, upstream_port)
    proxy_conf = nginx_conf(  # upstream connections kept alive, as the Django proxies' pools keep them
        tmp,
        "proxy",
        nginx_port,
        args.workers,
        'location / { proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection ""; }',
        http_extra=f"upstream bench {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}",
    )
    nginx_pid = start_nginx(procs, tools["nginx"], tmp, "proxy", proxy_conf, nginx_port)

    # 3. The product's data: a fresh database, a tenant, the upstream and the key.
    print("Seeding the product's database ...", flush=True)
    redis_flush(tools, args)
    key_id = prepare_data(tools, args, upstream_port)
    baseline = None
    if args.baseline:
        print(f"Seeding the database of the product at {args.baseline} ...", flush=True)
        baseline = prepare_baseline(tools, args, tmp, upstream_port, cleanups)
    servers = Servers(procs, args, tools, upstream_port, key_id)
    load = Load(procs, tools["wrk"], args.threads)

    # 4. granian's blocking threads: both Django proxies at each count; each keeps its fastest.
    print(f"Sweeping granian --blocking-threads ({args.sweep_duration:g} s each) ...", flush=True)
    swept = sweep(servers, load, args)
    best = {kind: max(runs, key=lambda n, runs=runs: runs[n].rps) for kind, runs in swept.items()}
    # The sweep's servers are gone: whatever usage they had counted but not flushed is lost by now.
    sweep_served = load.product_completed + servers.readiness_answers
    time.sleep(1.5)  # what a flush of the stopped servers' last second may still be writing
    sweep_counted = usage_counts(tools, args).get("allowed", 0)
    product = servers.start("product", best["product"])
    revproxy = servers.start("revproxy", best["revproxy"])
    names = {
        "direct": "direct to the upstream",
        "nginx": "nginx proxy_pass",
        "revproxy": f"django-revproxy ({best['revproxy']} thr)",
        "product": f"product proxy ({best['product']} thr)",
    }
    targets = {
        names["direct"]: f"http://127.0.0.1:{upstream_port}/bench",
        names["nginx"]: f"http://127.0.0.1:{nginx_port}/bench",
        names["revproxy"]: revproxy.url(),
        names["product"]: product.url(),
    }
    pids = dict(zip(targets, [None, nginx_pid, revproxy.proc.pid, product.proc.pid], strict=True))
    if baseline is not None:
        before = servers.start("product", best["product"], baseline)
        names["baseline"] = f"product at {baseline.revision}"
        targets[names["baseline"]], pids[names["baseline"]] = before.url(), before.proc.pid
        load.not_counted.add(before.url())
    problems, checks_ok = check_answers(targets, product)
    for label, url in targets.items():  # every pool and cache warm before anything counts
        load.run(f"{label} warm-up", url, connections=args.connections, seconds=1, server_pid=pids[label])

    # 5. Throughput, then latency at one connection, each in interleaved rounds.
    print(f"Throughput: {args.rounds} round(s) x 4 targets x {args.duration:g} s ...", flush=True)
    loaded = rounds(load, targets, pids, args, connections=args.connections, seconds=args.duration)
    print(f"Latency at 1 connection: {args.rounds} round(s) x 4 targets x {args.latency_duration:g} s ...")
    single = rounds(load, targets, pids, args, connections=1, seconds=args.latency_duration)

    # 6. Memory: 100 MiB through each Django proxy, read at full speed and by a slow client.
    print(f"Memory: streaming {BIG_MIB} MiB through each Django proxy ...", flush=True)
    plan = [("full speed", None, 3), (f"{args.slow_rate:g} MiB/s client", args.slow_rate, 1)]
    memory = [measure_memory(product, plan), measure_memory(revproxy, plan)]
    more_problems, more_ok = check_answers(targets, product)
    problems += more_problems
    time.sleep(2.5)  # two usage flushes of the running product
    usage = usage_counts(tools, args)

    # --- the report ---
    throughput = {label: summarize(runs) for label, runs in loaded.items()}
    latency = {label: summarize(runs) for label, runs in single.items()}
    base = {name: throughput[names[name]]["rps"] for name in ("direct", "nginx", "revproxy")}
    print("\n" + "=" * 110)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}  {cores} CPU cores in the whole box, shared by wrk and every "
        f"server (loopback). Upstream: nginx `return 200`, {len(BODY)}-byte JSON."
    )
    print(
        f"django-revproxy: granian --interface wsgi --workers {args.workers} --blocking-threads N "
        f"({tools['granian_version']}). Product: bin/serve (granian's ASGI interface, the async gateway; "
        f"WEB_WORKERS={args.workers}, WEB_THREADS=N for the site's views),\n"
        "PostgreSQL + Redis, origin allowlist (matching Origin sent), rate limit 100000000/m, "
        "usage counting."
    )
    print(f"\ngranian --blocking-threads sweep (req/s, wrk -t{args.threads} -c{args.connections}, "
          f"{args.sweep_duration:g} s each, after a 1 s warm-up):")  # fmt: skip
    print_table(
        ["server", *[f"{n} threads" for n in args.blocking_threads], "fastest"],
        [
            [kind, *[f"{runs[n].rps:.0f}" for n in args.blocking_threads], str(best[kind])]
            for kind, runs in swept.items()
        ],
    )
    print(
        f"\nThroughput: wrk -t{args.threads} -c{args.connections}, median of {args.rounds} interleaved "
        f"round(s) x {args.duration:g} s (spread: (max-min)/median of the rounds' req/s)"
    )
    print_table(
        [
            "target",
            "req/s",
            "spread",
            "p50 ms",
            "p99 ms",
            "vs nginx",
            "vs revproxy",
            "vs direct",
            "conns/worker",
        ],
        [
            [
                label,
                f"{s['rps']:.0f}",
                f"{s['spread'] * 100:.0f}%",
                f"{s['p50']:.2f}",
                f"{s['p99']:.2f}",
                ratio(s["rps"], base["nginx"]),
                ratio(s["rps"], base["revproxy"]),
                ratio(s["rps"], base["direct"]),
                " ".join("/".join(map(str, c)) for c in s["connections_per_worker"] if c) or "-",
            ]
            for label, s in throughput.items()
        ],
    )
    print(
        "  conns/worker: wrk's connections held by each worker, per round. wrk was started again "
        f"{load.restarts} time(s) in this whole run\n  because one worker held over {MAX_SHARE:.0%} of them "
        "(see bench/README.md)."
    )
    direct = latency[names["direct"]]
    print(
        f"\nLatency at 1 connection: wrk -t1 -c1 --latency, median of {args.rounds} interleaved round(s) x "
        f"{args.latency_duration:g} s"
    )
    print_table(
        ["target", "p50 ms", "p99 ms", "req/s", "p50 added vs direct"],
        [
            [
                label,
                f"{s['p50']:.3f}",
                f"{s['p99']:.3f}",
                f"{s['rps']:.0f}",
                "-" if s is direct else f"+{(s['p50'] - direct['p50']) * 1000:.0f} us",
            ]
            for label, s in latency.items()
        ],
    )
    if baseline is not None:
        now, before = throughput[names["product"]], throughput[names["baseline"]]
        now_1, before_1 = latency[names["product"]], latency[names["baseline"]]
        print(
            f"\nThe working tree's product against the product at {baseline.revision}, same rounds: "
            f"{now['rps']:.0f} / {before['rps']:.0f} req/s = {now['rps'] / before['rps']:.3f}x "
            f"({(now['rps'] / before['rps'] - 1) * 100:+.1f} %); p50 at 1 connection "
            f"{now_1['p50'] * 1000:.0f} us against {before_1['p50'] * 1000:.0f} us"
        )
    print(
        f"\nMemory: {BIG_MIB} MiB answer streamed through each Django proxy (one request at a time); granian "
        "workers' RSS in MiB\n(RSS = VmRSS now, peak = VmHWM since the worker started, during = highest RSS "
        "sampled every 10 ms)"
    )
    rows = []
    for m in memory:
        for pid in m.workers:
            (rss0, hwm0), (rss1, hwm1) = m.before[pid], m.after[pid]
            during = [mib(stream.peak_rss.get(pid, 0)) for stream in m.streams]
            rows.append(
                [f"{m.server.kind} worker {pid}", mib(rss0), mib(hwm0), *during, mib(rss1), mib(hwm1)]
            )
    during_heads = [f"during {stream.label}" for stream in memory[0].streams]
    print_table(["worker", "before RSS", "before peak", *during_heads, "after RSS", "after peak"], rows)
    expected_digest = digest.hexdigest()
    for m in memory:
        for stream in m.streams:
            intact = stream.status == 200 and stream.digest == expected_digest and not stream.error
            verdict = "200, bytes match the file" if intact else "FAILED"
            times = f"{len(stream.speeds)} times, median " if len(stream.speeds) > 1 else ""
            speeds = "/".join(f"{speed:.0f}" for speed in stream.speeds)
            print(
                f"  {m.server.kind}, {stream.label}: {stream.received / (1 << 20):.0f} MiB {times}in "
                f"{stream.seconds:.2f} s ({speeds} MiB/s), {verdict}"
            )
            if not intact:
                problems.append(
                    f"{m.server.kind}, {stream.label}: status {stream.status}, {stream.received} bytes "
                    f"of {BIG_MIB << 20}{', ' + stream.error if stream.error else ''}"
                )
        growth = max(m.after[pid][1] - m.before[pid][1] for pid in m.workers) / 1024
        print(
            f"  {m.server.kind}: largest growth of a worker's peak RSS over these streams: {growth:.1f} MiB"
        )
        if growth > BIG_MIB / 4:
            problems.append(
                f"{m.server.kind}: a worker's peak RSS grew {growth:.0f} MiB while {BIG_MIB} MiB streamed "
                "through it (see the memory table: the slow client's answer is held in memory)"
            )

    # Usage counting, in two parts: the sweep's servers (stopped by now) and the running product.
    running_served = load.product_completed + servers.readiness_answers + checks_ok + more_ok - sweep_served
    running_served += sum(len(s.speeds) for s in memory[0].streams if s.status == 200)
    running_counted = usage.get("allowed", 0) - sweep_counted
    print(
        f"\nUsage counting (the usage records, by outcome): {json.dumps(usage, sort_keys=True)}\n"
        f"  running product: counted {running_counted} allowed of {running_served} served "
        "(a few hundred more is normal: the\n  requests wrk sent but did not wait for as it stopped or was "
        "restarted)\n  sweep's servers, stopped with SIGTERM before this count: counted "
        f"{sweep_counted} of {sweep_served} served"
    )
    if running_counted < running_served:
        problems.append(f"product: usage counted {running_counted} of {running_served} requests it served")
    if sweep_counted < sweep_served:
        problems.append(
            f"product: {sweep_served - sweep_counted} of {sweep_served} requests served by workers that were "
            "then stopped gracefully were never counted (the last flush at exit did not run)"
        )
    problems += load.problems + log_problems(procs)
    print()
    if problems:
        print("Problems seen:")
        for problem in problems:
            print(textwrap.fill(problem, 110, initial_indent="  - ", subsequent_indent="    "))
    else:
        print("Problems seen: none (every answer 2xx, no socket errors, nothing in the servers' logs)")
    save(args, swept, best, throughput, latency, memory, usage, problems)
    return 0


def save(args, swept, best, throughput, latency, memory, usage, problems) -> None:
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("bench-%Y%m%d-%H%M%S.json")
    payload = {
        "cpu_cores": os.cpu_count(),
        "args": vars(args),
        "sweep_rps": {kind: {n: run.rps for n, run in runs.items()} for kind, runs in swept.items()},
        "blocking_threads": best,
        "throughput": throughput,
        "latency_1_connection": latency,
        "memory_kib": [
            {
                "server": m.server.kind,
                "worker": pid,
                "before_rss_hwm": m.before[pid],
                "during_max_rss": {s.label: s.peak_rss.get(pid) for s in m.streams},
                "after_rss_hwm": m.after[pid],
            }
            for m in memory
            for pid in m.workers
        ],
        "usage": usage,
        "problems": problems,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"Results saved to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the product's proxy against nginx, django-revproxy and a direct call, all on loopback.

    .venv/bin/python bench/run.py [--duration S] [--rounds N] [--connections C] [--quick]

Starts a fast upstream (nginx `return 200` with a 200-byte JSON body), nginx `proxy_pass` to it, the
product's proxy and django-revproxy (each under granian, WSGI, 2 workers), measures each and a direct
call with wrk in interleaved rounds, then the latency added at one connection and the memory of the
product's workers while a 100 MiB answer streams through them. bench/README.md explains each row.
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
BODY = ('{"jsonrpc":"2.0","id":1,"result":"0x' + "0" * 158 + '"}').encode()
assert len(BODY) == 200
BIG_MIB = 100
INSTALL_HINT = (
    "install them with: apt-get update && apt-get install -y wrk nginx-light  (or run `make bench`, "
    "which does that and installs bench/requirements.txt)"
)


class BenchError(Exception):
    """A setup step failed; the message says which and what to do."""


# --- processes -------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Run in the child before exec: if this script is killed outright, the child gets SIGTERM.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Every process the bench starts, each in a process group of its own, so that stopping one ends
    its workers too. stop_all() ends them all: SIGTERM, then SIGKILL for what is left."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], *, env=None, cwd=None, log=True) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out if log else subprocess.PIPE,
                stderr=subprocess.STDOUT if log else subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run while processes start
            )
        finally:
            if log:
                out.close()
        self.running.append((name, proc))
        return proc

    def log_of(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        self.running = [(n, p) for n, p in self.running if p is not proc]
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 3.0
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.running)):
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


def wait_until_serving(procs: Processes, name: str, proc, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited ({proc.returncode}) while starting:\n{tail(procs.log_of(name))}")
        with contextlib.suppress(OSError):
            status, _, _ = fetch(url, timeout=2.0)
            if status < 500:
                return
        time.sleep(0.1)
    raise BenchError(f"{name} did not answer {url} within {timeout:g} s:\n{tail(procs.log_of(name))}")


def tail(text: str, lines: int = 15) -> str:
    return textwrap.indent("\n".join(text.strip().splitlines()[-lines:]), "    ")


def fetch(url: str, headers=None, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback URLs we built
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) comes after the command name, which is in parentheses and may hold spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
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


# --- the servers -----------------------------------------------------------------------------------


def nginx_conf(tmp: Path, name: str, port: int, workers: int, server_block: str, http_extra: str = "") -> Path:
    temp = tmp / f"nginx-{name}"
    temp.mkdir(exist_ok=True)
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes {workers};
pid {temp}/nginx.pid;
error_log {tmp}/logs/nginx-{name}.error.log warn;
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
        {server_block}
    }}
}}
"""
    )
    return conf


def start_nginx(procs: Processes, nginx: str, tmp: Path, name: str, conf: Path, port: int) -> None:
    proc = procs.start(name, [nginx, "-p", str(tmp), "-e", str(tmp / "logs" / f"{name}.log"), "-c", str(conf)])
    wait_until_serving(procs, name, proc, f"http://127.0.0.1:{port}/bench", timeout=15.0)


def product_env(args) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DJANGO_SECRET_KEY": "bench",
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE": "0",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": args.database_url,
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
    return [
        granian,
        "--interface",
        "wsgi",
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        app,
    ]


@dataclass
class Server:
    """A granian server of one of the two Django proxies, at one blocking-thread count."""

    kind: str  # "product" or "revproxy"
    threads: int
    port: int
    proc: subprocess.Popen
    name: str

    def url(self, key_id: str, path: str = "bench") -> str:
        if self.kind == "product":
            return f"http://127.0.0.1:{self.port}/proxy/{UPSTREAM_SLUG}/{key_id}/{path}"
        return f"http://127.0.0.1:{self.port}/{path}"


class Servers:
    def __init__(self, procs: Processes, args, tools: dict[str, str], upstream_port: int) -> None:
        self.procs, self.args, self.tools, self.upstream_port = procs, args, tools, upstream_port
        self.started = 0

    def start(self, kind: str, threads: int, key_id: str) -> Server:
        port = free_port()
        self.started += 1
        name = f"granian-{kind}-{threads}t-{self.started}"
        if kind == "product":
            app, env, cwd = "portal.wsgi:application", product_env(self.args), ROOT
        else:
            app, env, cwd = "revproxy_site.wsgi:application", revproxy_env(self.upstream_port), BENCH
        argv = granian_argv(self.tools["granian"], app, port, self.args.workers, threads)
        proc = self.procs.start(name, argv, env=env, cwd=cwd)
        server = Server(kind, threads, port, proc, name)
        wait_until_serving(self.procs, name, proc, server.url(key_id), timeout=60.0)
        return server

    def stop(self, server: Server) -> None:
        self.procs.stop(server.proc)


# --- data ------------------------------------------------------------------------------------------


def venv_python(tools, code: str, env: dict[str, str], what: str) -> str:
    done = subprocess.run(
        [tools["python"], "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise BenchError(f"{what} failed:\n{tail(done.stderr or done.stdout)}")
    return done.stdout


def manage(tools, env, *argv: str) -> str:
    done = subprocess.run(
        [tools["python"], "manage.py", *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(argv)} failed:\n{tail(done.stderr or done.stdout)}")
    return done.stdout


def last_json(output: str) -> dict:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"expected a JSON line in:\n{tail(output)}")


RESET_DATABASE = """
import sys, psycopg
from psycopg import sql
url, name = sys.argv[1], sys.argv[2]
with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
"""

REDIS = """
import json, sys, redis
client = redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3)
if sys.argv[2] == "flush":
    client.flushdb()
    print("{}")
else:
    counts = {}
    for name in client.scan_iter("usage:*"):
        for field, value in client.hgetall(name).items():
            key_id, outcome, code = field.decode().split("|")
            label = outcome + (":" + code if code else "")
            counts[label] = counts.get(label, 0) + int(value)
    print(json.dumps(counts))
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


def prepare_data(tools, args, upstream_port: int) -> str:
    """A fresh database with a tenant, the upstream and the bench key; returns the key id."""
    parts = urlsplit(args.database_url)
    database = parts.path.lstrip("/")
    admin_url = parts._replace(path="/postgres").geturl()
    env = product_env(args)
    try:
        venv_python(tools, RESET_DATABASE + "\n", env, "PostgreSQL").strip()
    except BenchError:
        pass  # reported below with the real arguments
    done = subprocess.run(
        [tools["python"], "-c", RESET_DATABASE, admin_url, database],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise BenchError(
            f"cannot (re)create database {database!r} at {admin_url} — is PostgreSQL running "
            f"(pg_isready -h 127.0.0.1)?\n{tail(done.stderr)}"
        )
    done = subprocess.run(
        [tools["python"], "-c", REDIS, args.redis_url, "flush"], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise BenchError(f"cannot reach Redis at {args.redis_url} (redis-cli ping?):\n{tail(done.stderr)}")
    manage(tools, env, "migrate", "--no-input", "-v", "0")
    manage(tools, env, "create_tenant", TENANT, "--owner", "bench@bench.example")
    manage(
        tools,
        env,
        "create_upstream",
        UPSTREAM_SLUG,
        f"http://127.0.0.1:{upstream_port}",
        "--allow-private-network",
    )
    return last_json(manage(tools, env, "shell", "--no-imports", "-c", CREATE_KEY))["key_id"]


def usage_counts(tools, args) -> dict[str, int]:
    done = subprocess.run(
        [tools["python"], "-c", REDIS, args.redis_url, "usage"], capture_output=True, text=True, timeout=30
    )
    return json.loads(done.stdout) if done.returncode == 0 else {}


def flush_redis(tools, args) -> None:
    with contextlib.suppress(Exception):
        subprocess.run(
            [tools["python"], "-c", REDIS, args.redis_url, "flush"], capture_output=True, timeout=30
        )


# --- wrk -------------------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50: float  # ms
    p99: float  # ms
    requests: int
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> Run:
    percentiles = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    if not (rps and total and 50 in percentiles and 99 in percentiles):
        raise BenchError(f"could not read wrk's output:\n{tail(output, 30)}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = {}
    if errors:
        socket_errors = {
            name: int(value)
            for name, value in zip(("connect", "read", "write", "timeout"), errors.groups(), strict=True)
            if int(value)
        }
    return Run(
        rps=float(rps.group(1)),
        p50=percentiles[50],
        p99=percentiles[99],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


class Load:
    """wrk against one URL; remembers what each target's runs saw go wrong."""

    def __init__(self, procs: Processes, wrk: str) -> None:
        self.procs, self.wrk = procs, wrk
        self.problems: list[str] = []
        self.completed: dict[str, int] = {}
        self.connections_used: dict[str, int] = {}

    def run(self, label: str, url: str, *, threads: int, connections: int, seconds: float) -> Run:
        argv = [
            self.wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            "10s",
            "-H",
            f"Origin: {ORIGIN}",
            url,
        ]
        proc = self.procs.start("wrk", argv, log=False)
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        finally:
            self.procs.stop(proc)
        if proc.returncode != 0:
            raise BenchError(f"wrk failed on {url}:\n{tail(err.decode(errors='replace'))}")
        run = parse_wrk(out.decode(errors="replace"))
        self.completed[label] = self.completed.get(label, 0) + run.requests
        self.connections_used[label] = self.connections_used.get(label, 0) + connections
        if run.non_2xx:
            self.problems.append(f"{label}: {run.non_2xx} non-2xx answers of {run.requests} (wrk -c{connections})")
        if run.socket_errors:
            self.problems.append(f"{label}: socket errors {run.socket_errors} (wrk -c{connections})")
        return run


# --- measurements ----------------------------------------------------------------------------------


def check_answers(targets: dict[str, str], product_url: str) -> list[str]:
    """Each target answers the upstream's body; the product also applies its origin check."""
    problems = []
    for label, url in targets.items():
        status, headers, body = fetch(url, {"Origin": ORIGIN})
        if status != 200 or body != BODY:
            problems.append(f"{label}: answered {status} with {body[:200]!r} instead of the 200-byte body")
    status, headers, _ = fetch(product_url, {"Origin": ORIGIN})
    lower = {name.lower(): value for name, value in headers.items()}
    if lower.get("access-control-allow-origin") != ORIGIN or "ratelimit-policy" not in lower:
        problems.append(f"product: answer lacks the CORS or rate-limit headers: {headers}")
    status, _, body = fetch(product_url, {"Origin": "http://other.example"})
    if status != 403:
        problems.append(f"product: a foreign Origin answered {status}, not 403: {body[:200]!r}")
    return problems


def sweep(servers: Servers, load: Load, args, key_id: str) -> dict[str, dict[int, Run]]:
    results: dict[str, dict[int, Run]] = {"product": {}, "revproxy": {}}
    for threads in args.blocking_threads:
        for kind in ("product", "revproxy"):
            server = servers.start(kind, threads, key_id)
            try:
                url = server.url(key_id)
                load.run(f"{kind} (warm-up)", url, threads=args.threads, connections=args.connections, seconds=1)
                results[kind][threads] = load.run(
                    f"{kind} ({threads} threads, sweep)",
                    url,
                    threads=args.threads,
                    connections=args.connections,
                    seconds=args.sweep_duration,
                )
            finally:
                servers.stop(server)
            print(
                f"  sweep: {kind:<8} {threads:>3} blocking threads: {results[kind][threads].rps:>8.0f} req/s",
                flush=True,
            )
    return results


def rounds(load: Load, targets: dict[str, str], args, *, connections: int, threads: int, seconds: float):
    runs: dict[str, list[Run]] = {label: [] for label in targets}
    labels = list(targets)
    for number in range(args.rounds):
        # Rotate the order every round, so no target always runs first or last as the machine drifts.
        shift = number % len(labels)
        for label in labels[shift:] + labels[:shift]:
            runs[label].append(
                load.run(label, targets[label], threads=threads, connections=connections, seconds=seconds)
            )
        print(f"  round {number + 1}/{args.rounds} done (-c{connections})", flush=True)
    return runs


def median_run(runs: list[Run]) -> dict[str, float]:
    rps = [run.rps for run in runs]
    median = statistics.median(rps)
    return {
        "rps": median,
        "p50": statistics.median(run.p50 for run in runs),
        "p99": statistics.median(run.p99 for run in runs),
        "spread": (max(rps) - min(rps)) / median if median else 0.0,
        "rounds": [round(value) for value in rps],
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


def stream_through(port: int, path: str, rate_mib_s: float | None) -> Stream:
    """GET a large answer and discard it, at full speed or at a fixed rate; returns what arrived."""
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
            if rate_mib_s is not None:
                # Sleep until the bytes so far are due at the chosen rate.
                due = started + result.received / (rate_mib_s * (1 << 20))
                time.sleep(max(0.0, due - time.monotonic()))
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - started
    result.digest = digest.hexdigest()
    return result


def measure_memory(server: Server, key_id: str, expected_digest: str, rates) -> tuple[list, dict, list]:
    """Workers' (VmRSS, VmHWM) before and after, and the peak RSS sampled during each stream."""
    workers = children_of(server.proc.pid)
    if not workers:
        raise BenchError(f"found no worker processes under granian (pid {server.proc.pid})")
    before = {pid: memory_kib(pid) for pid in workers}
    streams = []
    path = f"/proxy/{UPSTREAM_SLUG}/{key_id}/big.bin"
    for label, rate in rates:
        holder: list[Stream] = []
        reader = threading.Thread(target=lambda r=rate: holder.append(stream_through(server.port, path, r)))
        peak = {pid: 0 for pid in workers}
        reader.start()
        while reader.is_alive():
            for pid in workers:
                with contextlib.suppress(OSError, KeyError):
                    peak[pid] = max(peak[pid], memory_kib(pid)[0])
            time.sleep(0.01)
        reader.join()
        stream = holder[0] if holder else Stream(label=label, error="the reader thread died")
        stream.label, stream.peak_rss = label, peak
        streams.append(stream)
    after = {pid: memory_kib(pid) for pid in workers}
    problems = []
    for stream in streams:
        if stream.error or stream.status != 200 or stream.received != BIG_MIB << 20:
            problems.append(
                f"product, {stream.label}: status {stream.status}, {stream.received} of {BIG_MIB << 20} "
                f"bytes{', ' + stream.error if stream.error else ''}"
            )
        elif stream.digest != expected_digest:
            problems.append(f"product, {stream.label}: the streamed bytes differ from the file")
    return [(pid, before[pid], after[pid]) for pid in workers], {"streams": streams}, problems


# --- report ----------------------------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def server_log_problems(procs: Processes) -> list[str]:
    problems = []
    for path in sorted(procs.logs.glob("*.log")):
        text = path.read_text(errors="replace")
        bad = [
            line
            for line in text.splitlines()
            if re.search(r"Traceback|\bERROR\b|\bCRITICAL\b|\[(error|crit|alert|emerg)\]", line)
        ]
        if bad:
            sample = "\n".join(bad[:5])
            problems.append(f"{path.stem}: {len(bad)} error lines in its log, e.g.\n{textwrap.indent(sample, '    ')}")
    return problems


def print_table(headers: list[str], rows: list[list[str]], align: str) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells):
        return "  " + "  ".join(
            str(cell).ljust(width) if a == "l" else str(cell).rjust(width)
            for cell, width, a in zip(cells, widths, align, strict=True)
        )

    print(line(headers))
    for row in rows:
        print(line(row))


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


# --- main ------------------------------------------------------------------------------------------


def find_tools() -> dict[str, str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    tools = {name: shutil.which(name, path=path) for name in ("wrk", "nginx")}
    missing = [name for name, found in tools.items() if not found]
    if missing:
        raise BenchError(f"{' and '.join(missing)} not found; {INSTALL_HINT}")
    venv = ROOT / ".venv" / "bin"
    python = venv / "python" if (venv / "python").exists() else Path(sys.executable)
    granian = python.parent / "granian"
    if not granian.exists():
        raise BenchError(f"granian not found beside {python}; run `make bench` (or pip install -r requirements.txt)")
    check = subprocess.run([str(python), "-c", "import django, revproxy"], capture_output=True, timeout=60)
    if check.returncode != 0:
        raise BenchError(
            f"django-revproxy is not installed in {python.parent.parent}; "
            f"run `{python} -m pip install -r bench/requirements.txt` (or `make bench`)"
        )
    return {**tools, "python": str(python), "granian": str(granian)}  # type: ignore[dict-item]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds per measured wrk run (default 10, quick 3)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds; medians are reported (default 3, quick 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="granian workers per server (default 2)")
    parser.add_argument(
        "--blocking-threads",
        help="granian --blocking-threads values to sweep, comma-separated (default 1,2,4,8; quick 2,8)",
    )
    parser.add_argument("--quick", action="store_true", help="about a minute: 1 short round, a smaller sweep")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/keyportal_bench"),
        help="PostgreSQL database the bench drops and creates afresh (env BENCH_DATABASE_URL)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="Redis database the bench flushes before and after (env BENCH_REDIS_URL)",
    )
    parser.add_argument("--slow-rate", type=float, default=25.0, help="MiB/s of the slow reader (default 25)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (path printed)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.sweep_duration = max(2.0, args.duration / 3)
    args.latency_duration = max(2.0, args.duration / 2)
    default_threads = "2,8" if args.quick else "1,2,4,8"
    args.blocking_threads = [int(n) for n in (args.blocking_threads or default_threads).split(",")]
    if min(args.blocking_threads) < 1 or args.rounds < 1 or args.connections < 1 or args.threads < 1:
        parser.error("counts must be at least 1")
    args.threads = min(args.threads, args.connections)
    return args


def raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_exit)
    signal.signal(signal.SIGHUP, raise_exit)
    tmp = Path(tempfile.mkdtemp(prefix="keyportal-bench-"))
    tmp.chmod(0o755)  # nginx workers (nobody, when started as root) read the big file from here
    (tmp / "logs").mkdir()
    procs = Processes(tmp / "logs")
    tools: dict[str, str] = {}
    try:
        tools = find_tools()
        return benchmark(args, tools, procs, tmp)
    except BenchError as exc:
        print(f"\nbench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if tools:
            flush_redis(tools, args)
        if args.keep_logs:
            print(f"logs kept in {tmp / 'logs'}")
            for path in tmp.iterdir():
                if path.name != "logs":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def benchmark(args, tools: dict[str, str], procs: Processes, tmp: Path) -> int:
    cores = os.cpu_count() or 0
    print("keyportal proxy benchmark (everything on loopback, 127.0.0.1)")
    print(
        f"machine: {cores} CPU cores{' (the whole box has 2)' if cores == 2 else ''}; wrk, nginx, granian, "
        "Redis and PostgreSQL all share them,\n  so the figures compare the servers with each other on this "
        "box; they are not the capacity of any of them."
    )
    estimate = (
        len(args.blocking_threads) * 2 * (args.sweep_duration + 3.5)
        + args.rounds * 4 * (args.duration + args.latency_duration + 0.3)
        + 25
    )
    print(f"expected run time: about {estimate / 60:.1f} min\n", flush=True)

    # 1. The upstream, and a 100 MiB file for the memory test.
    www = tmp / "www"
    www.mkdir()
    block, digest = os.urandom(1 << 20), hashlib.md5(usedforsecurity=False)
    with open(www / "big.bin", "wb") as big:
        for _ in range(BIG_MIB):
            big.write(block)
            digest.update(block)
    upstream_port, nginx_port = free_port(), free_port()
    body = BODY.decode()
    upstream_conf = nginx_conf(
        tmp,
        "upstream",
        upstream_port,
        1,
        f"location = /big.bin {{ root {www}; }}\n"
        f"        location / {{ default_type application/json; return 200 '{body}'; }}",
    )
    start_nginx(procs, tools["nginx"], tmp, "nginx-upstream", upstream_conf, upstream_port)
    # 2. nginx proxy_pass to it, with kept-alive upstream connections as the Django proxies have.
    proxy_conf = nginx_conf(
        tmp,
        "proxy",
        nginx_port,
        args.workers,
        "location / { proxy_pass http://bench_upstream; proxy_http_version 1.1; "
        'proxy_set_header Connection ""; }',
        http_extra=f"upstream bench_upstream {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}",
    )
    start_nginx(procs, tools["nginx"], tmp, "nginx-proxy", proxy_conf, nginx_port)

    # 3. The product's data: a fresh database, a tenant, the upstream and the key.
    print("seeding the product's database and Redis ...", flush=True)
    key_id = prepare_data(tools, args, upstream_port)
    servers = Servers(procs, args, tools, upstream_port)
    load = Load(procs, tools["wrk"])

    # 4. granian's blocking threads: each Django proxy at each count, the fastest kept.
    print(
        f"granian blocking-thread sweep ({', '.join(map(str, args.blocking_threads))}; wrk -t{args.threads} "
        f"-c{args.connections}, {args.sweep_duration:g} s each) ...",
        flush=True,
    )
    swept = sweep(servers, load, args, key_id)
    best = {kind: max(runs, key=lambda n, r=runs: r[n].rps) for kind, runs in swept.items()}
    product = servers.start("product", best["product"], key_id)
    revproxy = servers.start("revproxy", best["revproxy"], key_id)

    labels = {
        "direct": f"direct to the upstream (nginx return 200)",
        "nginx": "nginx proxy_pass",
        "revproxy": f"django-revproxy (granian, {best['revproxy']} threads)",
        "product": f"product proxy (granian, {best['product']} threads)",
    }
    targets = {
        labels["direct"]: f"http://127.0.0.1:{upstream_port}/bench",
        labels["nginx"]: f"http://127.0.0.1:{nginx_port}/bench",
        labels["revproxy"]: revproxy.url(key_id),
        labels["product"]: product.url(key_id),
    }
    problems = check_answers(targets, product.url(key_id))
    for label, url in targets.items():  # warm every pool and cache before anything counts
        load.run(f"{label} (warm-up)", url, threads=args.threads, connections=args.connections, seconds=1)

    # 5. Throughput at -c32, then latency at one connection, in interleaved rounds.
    print(
        f"throughput: {args.rounds} round(s) x {len(targets)} targets x {args.duration:g} s "
        f"(wrk -t{args.threads} -c{args.connections}) ...",
        flush=True,
    )
    loaded = rounds(
        load, targets, args, connections=args.connections, threads=args.threads, seconds=args.duration
    )
    print(
        f"latency: {args.rounds} round(s) x {len(targets)} targets x {args.latency_duration:g} s (wrk -t1 -c1) ...",
        flush=True,
    )
    single = rounds(load, targets, args, connections=1, threads=1, seconds=args.latency_duration)

    # 6. Memory: 100 MiB through the product, read at full speed and by a slow client.
    print("memory: streaming 100 MiB through the product proxy ...", flush=True)
    memory, detail, stream_problems = measure_memory(
        product,
        key_id,
        digest.hexdigest(),
        [("full speed", None), (f"slow client, {args.slow_rate:g} MiB/s", args.slow_rate)],
    )
    problems += stream_problems
    time.sleep(2.5)  # two usage flushes
    usage = usage_counts(tools, args)
    problems += check_answers(targets, product.url(key_id))

    # --- report ---
    summary = {label: median_run(runs) for label, runs in loaded.items()}
    base = {name: summary[labels[name]]["rps"] for name in ("direct", "nginx", "revproxy")}
    print()
    print("=" * 100)
    print(
        f"Machine: {cores} CPU cores, shared by wrk and every server below (loopback); "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(
        f"Upstream: nginx `return 200` with a {len(BODY)}-byte JSON body. Django proxies: granian --interface "
        f"wsgi --workers {args.workers} --blocking-threads N"
    )
    print(
        "Product: PostgreSQL + Redis, key with an origin allowlist (matching Origin sent), rate limit "
        "100000000/m, usage counting on"
    )
    print()
    print(f"granian --blocking-threads sweep (req/s, wrk -t{args.threads} -c{args.connections}, {args.sweep_duration:g} s each):")
    print_table(
        ["server", *[f"{n} thr" for n in args.blocking_threads], "picked"],
        [
            [kind, *[f"{swept[kind][n].rps:.0f}" for n in args.blocking_threads], f"{best[kind]} threads"]
            for kind in ("product", "revproxy")
        ],
        "l" + "r" * len(args.blocking_threads) + "r",
    )
    print()
    print(
        f"Throughput (wrk -t{args.threads} -c{args.connections}, median of {args.rounds} interleaved "
        f"round(s) x {args.duration:g} s; spread = (max-min)/median of the rounds' req/s):"
    )
    rows = []
    for label in targets:
        s = summary[label]
        rows.append(
            [
                label,
                f"{s['rps']:.0f}",
                f"{s['spread'] * 100:.0f}%",
                f"{s['p50']:.2f}",
                f"{s['p99']:.2f}",
                ratio(s["rps"], base["nginx"]),
                ratio(s["rps"], base["revproxy"]),
                ratio(s["rps"], base["direct"]),
            ]
        )
    print_table(
        ["target", "req/s", "spread", "p50 ms", "p99 ms", "vs nginx", "vs revproxy", "vs direct"],
        rows,
        "lrrrrrrr",
    )
    print()
    latency = {label: median_run(runs) for label, runs in single.items()}
    direct_p50 = latency[labels["direct"]]["p50"]
    print(f"Latency at 1 connection (wrk -t1 -c1 --latency, median of {args.rounds} round(s) x {args.latency_duration:g} s):")
    print_table(
        ["target", "p50 ms", "p99 ms", "req/s", "p50 added vs direct"],
        [
            [
                label,
                f"{s['p50']:.3f}",
                f"{s['p99']:.3f}",
                f"{s['rps']:.0f}",
                "-" if label == labels["direct"] else f"+{(s['p50'] - direct_p50) * 1000:.0f} us",
            ]
            for label, s in latency.items()
        ],
        "lrrrr",
    )
    print()
    print(
        f"Memory of the product's granian workers (MiB; RSS = VmRSS, peak = VmHWM since start) while "
        f"{BIG_MIB} MiB stream through it:"
    )
    streams = detail["streams"]
    mem_rows = []
    for pid, (rss_before, hwm_before), (rss_after, hwm_after) in memory:
        mem_rows.append(
            [
                str(pid),
                mib(rss_before),
                mib(hwm_before),
                *[mib(stream.peak_rss.get(pid, 0)) for stream in streams],
                mib(rss_after),
                mib(hwm_after),
            ]
        )
    print_table(
        [
            "worker pid",
            "before RSS",
            "before peak",
            *[f"during ({s.label}) max RSS" for s in streams],
            "after RSS",
            "after peak",
        ],
        mem_rows,
        "l" + "r" * (4 + len(streams)),
    )
    for stream in streams:
        speed = stream.received / (1 << 20) / stream.seconds if stream.seconds else 0
        print(
            f"  {stream.label}: {stream.received / (1 << 20):.0f} MiB in {stream.seconds:.2f} s "
            f"({speed:.0f} MiB/s), status {stream.status}, "
            f"{'bytes match the file' if stream.digest == digest.hexdigest() else 'BYTES DIFFER'}"
        )
    growth = max(hwm_after - hwm_before for _, (_, hwm_before), (_, hwm_after) in memory)
    print(f"  largest growth of a worker's peak RSS across the streams: {growth / 1024:.1f} MiB")

    # Usage counting: what the product counted against what wrk and the checks saw complete.
    product_labels = [label for label in load.completed if label.startswith(("product", labels["product"]))]
    completed = sum(load.completed[label] for label in product_labels)
    in_flight = sum(load.connections_used[label] for label in product_labels)
    allowed = usage.get("allowed", 0)
    print()
    print(
        f"Usage counted by the product in Redis: {json.dumps(usage, sort_keys=True)}; wrk completed "
        f"{completed} product requests (plus up to {in_flight} cut off in flight, and a few checks)"
    )
    if allowed < completed:
        problems.append(f"product: usage counted {allowed} allowed requests, fewer than the {completed} served")

    problems += load.problems + server_log_problems(procs)
    print()
    if problems:
        print("Problems seen:")
        for problem in problems:
            print(f"  - {problem}")
    else:
        print("Problems seen: none (every answer 2xx, no socket errors, no error lines in the servers' logs)")
    save_results(args, summary, latency, swept, best, memory, streams, usage, problems)
    return 1 if problems else 0


def save_results(args, summary, latency, swept, best, memory, streams, usage, problems) -> None:
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("bench-%Y%m%d-%H%M%S.json")
    payload = {
        "cores": os.cpu_count(),
        "args": {k: v for k, v in vars(args).items()},
        "throughput": summary,
        "latency_1_connection": latency,
        "sweep": {kind: {n: run.rps for n, run in runs.items()} for kind, runs in swept.items()},
        "picked_blocking_threads": best,
        "memory_kib": [
            {"pid": pid, "before": before, "after": after, "during_peak_rss": [s.peak_rss.get(pid) for s in streams]}
            for pid, before, after in memory
        ],
        "streams": [
            {"label": s.label, "seconds": s.seconds, "bytes": s.received, "status": s.status} for s in streams
        ],
        "usage": usage,
        "problems": problems,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"results saved to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())

"""Slow peers against the product's gateway, on loopback: what many calls in flight and slow clients
cost, and what everyone else sees meanwhile.

    .venv/bin/python bench/concurrency.py [--connections 1000] [--duration 10] [--slow 1000]

1. **1,000 connections to an upstream that answers after 1 s**: wrk through nginx `proxy_pass` and
   through the product (bin/serve, every check on), the same upstream; req/s, p50, p99. While wrk
   runs against the product, a probe calls `/healthz` and a second, fast upstream through the
   product every 20 ms: their p99. The product's workers' memory before and at the most.
2. **1,000 slow-body and 1,000 slow-reading clients at once** (bench/slow_clients.py) against the
   product's upstreams with a 5 s deadline: how and when each ended (408, or the stream cut), the
   probe's p99 meanwhile, and the workers' memory.

bench/README.md explains each figure; the run saves them in bench/results/concurrency-*.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/run.py's helpers, from any folder
import run as bench  # noqa: E402

UPSTREAM_DELAY = 1.0
DEADLINE = 5  # seconds: the timeout of the upstreams the slow clients use


@dataclass(kw_only=True)
class Background:
    """`_run` on a thread of its own for the length of a `with` block (it ends when `_stop` is set)."""

    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(15)


@dataclass
class Probe(Background):
    """Calls each URL in turn every 20 ms on kept-alive connections; latencies in ms by URL."""

    port: int
    paths: dict[str, str]
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def _run(self) -> None:
        connections = {label: HTTPConnection("127.0.0.1", self.port, timeout=10) for label in self.paths}
        while not self._stop.is_set():
            for label, path in self.paths.items():
                started = time.perf_counter()
                try:
                    connections[label].request("GET", path, headers={"Origin": bench.ORIGIN})
                    answer = connections[label].getresponse()
                    answer.read()
                    ok = answer.status == 200
                except OSError:
                    ok = False
                    connections[label].close()
                    connections[label] = HTTPConnection("127.0.0.1", self.port, timeout=10)
                if ok:
                    self.latencies.setdefault(label, []).append((time.perf_counter() - started) * 1000)
                else:
                    self.failures[label] = self.failures.get(label, 0) + 1
            time.sleep(0.02)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            label: {
                "calls": len(values),
                "failed": self.failures.get(label, 0),
                "p50_ms": statistics.median(values) if values else 0.0,
                "p99_ms": percentile(values, 0.99),
                "max_ms": max(values, default=0.0),
            }
            for label, values in self.latencies.items()
        }


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class MemorySampler(Background):
    """The sum of the server's workers' RSS (KiB), every 100 ms: the first sample and the highest."""

    pid: int
    first: int = 0
    highest: int = 0

    def total(self) -> int:
        return sum(bench.memory_kib(worker)[0] for worker in bench.children_of(self.pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.highest = max(self.highest, self.total())
            time.sleep(0.1)

    def __enter__(self) -> Self:
        self.first = self.highest = self.total()
        return super().__enter__()

    @property
    def added_mib(self) -> float:
        return (self.highest - self.first) / 1024


ADD_UPSTREAMS = """
from keys.models import ApiKey, Upstream
key = ApiKey.objects.get(key_id={key_id!r})
key.upstreams.add(*Upstream.objects.filter(slug__in={slugs!r}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000, help="wrk connections (1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run (10)")
    parser.add_argument(
        "--slow", type=int, default=1000, help="slow-body and slow-reading clients, each (1000)"
    )
    parser.add_argument("--workers", type=int, default=2, help="the product's and nginx's workers (2)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/keyportal_bench"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="keyportal-concurrency-"))
    tmp.chmod(0o755)
    (tmp / "logs").mkdir()
    procs = bench.Processes(tmp / "logs")
    try:
        return measure(args, bench.find_tools(), procs, tmp)
    except bench.BenchError as exc:
        print(f"\nbench: {exc}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()


def measure(args: argparse.Namespace, tools: dict[str, str], procs: bench.Processes, tmp: Path) -> int:
    print(f"keyportal gateway under slow peers, on loopback ({os.cpu_count()} cores shared by everything)")
    # Upstreams: nginx answering at once (and a 100 MiB file), the slow one, and nginx proxy_pass to it.
    www = tmp / "www"
    www.mkdir()
    with open(www / "big.bin", "wb") as big:
        for _ in range(bench.BIG_MIB):
            big.write(os.urandom(1 << 20))
    fast_port, slow_port, nginx_port = bench.free_port(), bench.free_port(), bench.free_port()
    fast_conf = bench.nginx_conf(
        tmp,
        "fast",
        fast_port,
        1,
        f"location = /big.bin {{ root {www}; }}\n"
        f"        location / {{ default_type application/json; return 200 '{bench.BODY.decode()}'; }}",
    )
    bench.start_nginx(procs, tools["nginx"], tmp, "fast", fast_conf, fast_port)
    slow = procs.start(
        "slow-upstream",
        [tools["python"], str(bench.BENCH / "slow_upstream.py"), str(slow_port), str(UPSTREAM_DELAY)],
    )
    bench.wait_until_serving(procs, "slow-upstream", slow, f"http://127.0.0.1:{slow_port}/")
    proxy_conf = bench.nginx_conf(
        tmp,
        "proxy",
        nginx_port,
        args.workers,
        'location / { proxy_pass http://slow; proxy_http_version 1.1; proxy_set_header Connection ""; }',
        http_extra=f"upstream slow {{ server 127.0.0.1:{slow_port}; keepalive 1024; }}",
    )
    nginx_pid = bench.start_nginx(procs, tools["nginx"], tmp, "proxy", proxy_conf, nginx_port)

    print("Seeding the product's database ...", flush=True)
    bench.redis_flush(tools, args)
    key_id = bench.prepare_data(tools, args, fast_port)
    env = bench.product_env(args)
    upstreams = {
        "slow": (f"http://127.0.0.1:{slow_port}", 30),
        "slowbody": (f"http://127.0.0.1:{slow_port}", DEADLINE),  # reads the body whole first
        "slowread": (f"http://127.0.0.1:{fast_port}", DEADLINE),  # has the 100 MiB file
    }
    for slug, (url, timeout) in upstreams.items():
        bench.run_python(
            tools,
            "manage.py",
            "create_upstream",
            slug,
            url,
            "--allow-private-network",
            "--timeout",
            str(timeout),
            env=env,
            what=f"create_upstream {slug}",
        )
    script = ADD_UPSTREAMS.format(key_id=key_id, slugs=list(upstreams))
    bench.run_python(tools, "manage.py", "shell", "--no-imports", "-c", script, env=env, what="key upstreams")
    servers = bench.Servers(procs, args, tools, fast_port, key_id)
    product = servers.start("product", 8)
    port = product.port

    def proxied(slug: str, path: str) -> str:
        return f"/proxy/{slug}/{key_id}/{path}"

    load = bench.Load(procs, tools["wrk"], 2)
    nginx_url = f"http://127.0.0.1:{nginx_port}/slow"
    product_url = f"http://127.0.0.1:{port}{proxied('slow', 'slow')}"
    for label, url, pid in (("nginx", nginx_url, nginx_pid), ("product", product_url, product.proc.pid)):
        load.run(f"{label} warm-up", url, connections=100, seconds=2, server_pid=pid)

    # 1. Many calls in flight.
    print(
        f"1. {args.connections} connections, upstream answering after {UPSTREAM_DELAY:g} s, "
        f"{args.duration:g} s each ...",
        flush=True,
    )
    nginx_run = load.run(
        "nginx", nginx_url, connections=args.connections, seconds=args.duration, server_pid=nginx_pid
    )
    others = {"healthz": "/healthz", "fast upstream": proxied(bench.UPSTREAM_SLUG, "bench")}
    with MemorySampler(product.proc.pid) as memory, Probe(port, others) as probe:
        product_run = load.run(
            "product",
            product_url,
            connections=args.connections,
            seconds=args.duration,
            server_pid=product.proc.pid,
        )
    in_flight = {"memory": memory, "probe": probe.summary()}

    # 2. Slow clients.
    print(
        f"2. {args.slow} slow-body and {args.slow} slow-reading clients, deadline {DEADLINE} s ...",
        flush=True,
    )
    with MemorySampler(product.proc.pid) as slow_memory, Probe(port, others) as slow_probe:
        done = subprocess.run(
            [
                tools["python"],
                str(bench.BENCH / "slow_clients.py"),
                str(port),
                proxied("slowbody", "fast"),
                str(args.slow),
                proxied("slowread", "big.bin"),
                str(args.slow),
                bench.ORIGIN,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
    if done.returncode != 0:
        raise bench.BenchError(f"the slow clients failed:\n{bench.tail(done.stderr)}")
    slow_clients = json.loads(done.stdout.strip().splitlines()[-1])

    report(args, nginx_run, product_run, in_flight, slow_clients, slow_memory, slow_probe.summary())
    problems = load.problems + bench.log_problems(procs)
    if problems:
        print("\nProblems seen:")
        for problem in problems:
            print(f"  - {problem}")
    save(args, nginx_run, product_run, in_flight, slow_clients, slow_memory, slow_probe.summary(), problems)
    return 0


def report(args, nginx_run, product_run, in_flight, slow_clients, slow_memory, slow_probe) -> None:
    print("\n" + "=" * 100)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}  1. wrk -t2 -c{args.connections} -d{args.duration:g}s, "
        "upstream answering "
        f"after {UPSTREAM_DELAY:g} s (bench/slow_upstream.py)"
    )
    bench.print_table(
        ["target", "req/s", "p50 ms", "p99 ms", "vs nginx", "non-2xx", "socket errors"],
        [
            [
                label,
                f"{run.rps:.0f}",
                f"{run.p50:.0f}",
                f"{run.p99:.0f}",
                bench.ratio(run.rps, nginx_run.rps),
                str(run.non_2xx),
                str(sum(run.socket_errors.values())),
            ]
            for label, run in (("nginx proxy_pass", nginx_run), ("product (bin/serve)", product_run))
        ],
    )
    memory = in_flight["memory"]
    print(
        f"  product workers' RSS: {memory.first / 1024:.0f} MiB before, "
        f"{memory.highest / 1024:.0f} MiB at the most: "
        f"{memory.added_mib:+.1f} MiB for {args.connections} calls in flight"
    )
    print_probe("  meanwhile, through the product", in_flight["probe"])
    print(
        f"\n2. {args.slow} slow-body + {args.slow} slow-reading clients at once, "
        f"upstream timeout {DEADLINE} s"
    )
    bench.print_table(
        ["clients", "how they ended", "first s", "median s", "last s"],
        [
            [
                kind,
                ", ".join(f"{outcome}: {count}" for outcome, count in sorted(figures["outcomes"].items())),
                f"{figures['seconds_min']:.1f}",
                f"{figures['seconds_median']:.1f}",
                f"{figures['seconds_max']:.1f}",
            ]
            for kind, figures in slow_clients.items()
        ],
    )
    print(
        f"  product workers' RSS: {slow_memory.first / 1024:.0f} MiB before, "
        f"{slow_memory.highest / 1024:.0f} MiB at "
        f"the most ({slow_memory.added_mib:+.1f} MiB)"
    )
    print_probe("  meanwhile, through the product", slow_probe)


def print_probe(title: str, summary: dict[str, dict[str, float]]) -> None:
    for label, figures in summary.items():
        print(
            f"{title}: {label} p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, max "
            f"{figures['max_ms']:.0f} ms ({figures['calls']:.0f} calls, {figures['failed']:.0f} failed)"
        )


def save(args, nginx_run, product_run, in_flight, slow_clients, slow_memory, slow_probe, problems) -> None:
    out = bench.BENCH / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("concurrency-%Y%m%d-%H%M%S.json")
    memory = in_flight["memory"]
    payload = {
        "args": vars(args),
        "in_flight": {
            "nginx": vars(nginx_run),
            "product": vars(product_run),
            "memory_kib": {"before": memory.first, "highest": memory.highest},
            "probe": in_flight["probe"],
        },
        "slow_clients": {
            **slow_clients,
            "memory_kib": {"before": slow_memory.first, "highest": slow_memory.highest},
            "probe": slow_probe,
        },
        "problems": problems,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nResults saved to {path.relative_to(bench.ROOT)}")


if __name__ == "__main__":
    sys.exit(main())

"""The proxy as production runs it: granian with two worker processes, PostgreSQL and Redis.

Limits and revocations must hold across processes, so these tests need the shared services; they
are skipped on the embedded default (SQLite, no Redis) and run in CI.
"""

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import urllib3
from django.conf import settings
from django.db import connection
from django.test import override_settings

from keys import services
from keys.models import Upstream

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL or "postgresql" not in settings.DATABASES["default"]["ENGINE"],
        reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL), as CI has",
    ),
]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served(str):
    """The server's base URL, which also knows the server's process."""

    pid: int
    log: "tempfile._TemporaryFileWrapper | None" = None  # what the server wrote to stderr
    process: "subprocess.Popen | None" = None

    def __new__(cls, url: str, pid: int, log=None, process=None) -> "Served":
        served = super().__new__(cls, url)
        served.pid, served.log, served.process = pid, log, process
        return served

    def stopped(self, timeout: float) -> float:
        """Seconds until the server (stopped by the caller) exited; fails the test past `timeout`."""
        assert self.process is not None
        started = time.monotonic()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server was still running {timeout:g} s after it was told to stop")
        return time.monotonic() - started


@pytest.fixture
def granian(db):
    """The product served by granian (2 workers) against this test's database and Redis."""
    with serve() as url:
        yield url


@contextlib.contextmanager
def serve(**env_overrides: str):
    """bin/serve (granian, 2 workers) against this test's database; REDIS_URL=... gives it another Redis."""
    db_settings = connection.settings_dict
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,  # the same derived key decrypts upstream credentials
        "DJANGO_DEBUG": "0",
        "DJANGO_SECURE": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": (
            f"postgres://{db_settings['USER']}@{db_settings['HOST']}:{db_settings['PORT']}/{db_settings['NAME']}"
        ),
        "LOG_LEVEL": "WARNING",
        "PROXY_MAX_BODY_BYTES": "65536",
        **env_overrides,
    }
    log = tempfile.TemporaryFile()
    env.update({"PY": sys.executable, "HOST": "127.0.0.1", "PORT": str(port), "WEB_WORKERS": "2"})
    process = subprocess.Popen(
        [str(ROOT / "bin" / "serve")],  # the production entry point, as users start it
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,  # a file, not a pipe: nobody reads a pipe while the server runs, and a full one blocks it
        start_new_session=True,  # its own process group, so teardown reaches the workers too
    )
    url = f"http://127.0.0.1:{port}"
    http = urllib3.PoolManager(retries=False, timeout=10, maxsize=64)
    for _ in range(300):  # a loaded CI machine may take well over 10 s to import Django in both workers
        try:
            if http.request("GET", f"{url}/healthz").status == 200:
                break
        except urllib3.exceptions.HTTPError:
            time.sleep(0.1)
    else:
        os.killpg(process.pid, signal.SIGKILL)  # the workers too, not only their parent
        process.wait(timeout=10)
        log.seek(0)
        pytest.fail("granian did not start: " + log.read().decode()[-2000:])
    # Every worker started, not only the first to answer: a stop that reaches a worker still importing
    # Django is lost on it (granian 2.8.7), which then holds the server until --workers-kill-timeout.
    for _ in range(300):
        log.seek(0)
        if log.read().count(b"Started worker-") >= int(env["WEB_WORKERS"]):
            break
        time.sleep(0.1)
    try:
        yield Served(url, process.pid, log, process)
    finally:
        if process.poll() is None:  # still running: the test did not stop it itself
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


@pytest.fixture
def key_on_echo(tenant, upstream_server):
    echo = services.upstream_create(
        tenant=None,
        slug="echo",
        base_url=f"{upstream_server.url}/echo",
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
    )

    def make(**fields):
        return services.api_key_create(tenant=tenant, name="app", upstreams=[echo], actor="test", **fields)

    return make


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f":{secret}".encode()).decode()}


def test_rate_limit_holds_across_processes_under_200_parallel_requests(granian, key_on_echo):
    key, secret = key_on_echo(rate_limit="100/d")
    http = urllib3.PoolManager(retries=False, timeout=20, maxsize=50)
    url = f"{granian}/proxy/echo/{key.key_id}/x"

    def call(_):
        return http.request("GET", url, headers=_auth(secret)).status

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(call, range(200)))
    allowed = statuses.count(200)
    assert statuses.count(200) + statuses.count(429) == 200
    assert 95 <= allowed <= 100, allowed


def test_revocation_reaches_every_process_within_a_second(granian, key_on_echo):
    key, secret = key_on_echo()
    http = urllib3.PoolManager(retries=False, timeout=10, maxsize=8)
    url = f"{granian}/proxy/echo/{key.key_id}/x"
    # Warm both workers' caches (new connections spread over the workers).
    for _ in range(20):
        assert http.request("GET", url, headers={**_auth(secret), "Connection": "close"}).status == 200
    services.api_key_revoke(api_key=key, actor="test")
    revoked_at = time.monotonic()
    consecutive = 0
    while consecutive < 20:
        status = http.request("GET", url, headers={**_auth(secret), "Connection": "close"}).status
        consecutive = consecutive + 1 if status == 401 else 0
        assert time.monotonic() - revoked_at < 1.0, "a process still accepted the revoked key after 1 s"


def test_a_chunked_request_body_is_relayed_whole(granian, key_on_echo, upstream_server):
    key, secret = key_on_echo()
    http = urllib3.PoolManager(retries=False, timeout=10)
    parts = [b"a" * 1000, b"b" * 3000, b"c" * 5]
    response = http.request(
        "POST",
        f"{granian}/proxy/echo/{key.key_id}/upload",
        headers=_auth(secret),
        body=iter(parts),
        chunked=True,
    )
    assert response.status == 200
    assert upstream_server.requests[-1].body == b"".join(parts)


def test_a_chunked_request_body_over_the_limit_is_413_before_any_upstream_byte(
    granian, key_on_echo, upstream_server
):
    key, secret = key_on_echo()
    http = urllib3.PoolManager(retries=False, timeout=10)
    before = len(upstream_server.requests)
    response = http.request(
        "POST",
        f"{granian}/proxy/echo/{key.key_id}/upload",
        headers=_auth(secret),
        body=iter([b"x" * 40000, b"y" * 40000]),
        chunked=True,
    )
    assert response.status == 413
    assert len(upstream_server.requests) == before


class OwnRedis:
    """A redis-server of this test's own, on a free port, that the test may stop or freeze."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._start()

    def restart(self) -> None:
        """Kill it and start an empty one on the same port (it keeps nothing: no RDB, no AOF)."""
        self.stop()
        self._start()

    def _start(self) -> None:
        port = self.port
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        for _ in range(100):
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.05)
        self.stop()
        pytest.fail("redis-server did not start")

    def freeze(self) -> None:
        """Redis hangs: connections stay open, nothing answers (as on a partition or a stalled host)."""
        self.process.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    server = OwnRedis()
    yield server
    server.stop()


def _cache_at(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_changes_made_while_redis_is_down_are_refused_by_every_process_within_a_second(
    own_redis, key_on_echo, other_tenant, outage
):
    revoked_key, revoked_secret = key_on_echo()
    token_key, _ = key_on_echo()
    token_row, token = services.access_token_issue(api_key=token_key)
    echo = Upstream.objects.get(slug="echo")
    suspended_key, suspended_secret = services.api_key_create(
        tenant=other_tenant, name="app", upstreams=[echo], actor="test"
    )
    calls = {
        "key_revoked": (revoked_key.key_id, _auth(revoked_secret)),
        "invalid_token": (token_key.key_id, {"Authorization": f"Bearer {token}"}),
        "tenant_suspended": (suspended_key.key_id, _auth(suspended_secret)),
    }
    with serve(REDIS_URL=own_redis.url) as url:
        http = urllib3.PoolManager(retries=False, timeout=5)

        def call(key_id: str, headers: dict) -> tuple[int, str]:
            # A new connection each time, so the requests spread over both workers.
            answer = http.request(
                "GET", f"{url}/proxy/echo/{key_id}/x", headers={**headers, "Connection": "close"}
            )
            return answer.status, answer.json()["error"]["code"] if answer.status >= 400 else ""

        # The first round starts each worker's listener; the second, a second later, loads policies the
        # live channel vouches for: before the fix they were then trusted for 300 s, outage or not.
        for round_ in range(2):
            time.sleep(1.1 * round_)
            for _ in range(20):
                assert all(call(*credentials) == (200, "") for credentials in calls.values())

        own_redis.stop() if outage == "stopped" else own_redis.freeze()
        changes = {
            "key_revoked": lambda: services.api_key_revoke(api_key=revoked_key, actor="test"),
            "invalid_token": lambda: services.access_token_revoke(token=token_row, actor="test"),
            "tenant_suspended": lambda: services.tenant_set_active(
                tenant=other_tenant, is_active=False, actor="test"
            ),
        }
        changed_at = {}
        with override_settings(CACHES=_cache_at(own_redis.url)):  # this process's publish fails as well
            for code, change in changes.items():
                changed_at[code] = time.monotonic()
                change()
        refused_late = dict.fromkeys(calls, 0)
        while min(refused_late.values()) < 20:
            for code, credentials in calls.items():
                status, answered = call(*credentials)
                elapsed = time.monotonic() - changed_at[code]
                assert elapsed < 10, f"too few requests in 10 s: {refused_late}"
                if elapsed > 1.0:
                    assert answered == code, (
                        f"{code}: still {status} {answered!r} {elapsed:.2f} s after the change"
                    )
                    refused_late[code] += 1


def test_a_hostile_user_agent_pattern_does_not_hold_a_worker(granian, key_on_echo):
    nested = "*a*a*a*a*a*a*a*b"  # the most wildcards a pattern may have; a regex backtracked for minutes
    key, secret = key_on_echo(allowed_user_agents=[nested, "MyApp/*"])
    http = urllib3.PoolManager(retries=False, timeout=5)
    url = f"{granian}/proxy/echo/{key.key_id}/x"
    started = time.monotonic()
    refused = http.request("GET", url, headers={**_auth(secret), "User-Agent": "a" * 8192})
    took = time.monotonic() - started
    assert refused.status == 403 and refused.json()["error"]["code"] == "user_agent_not_allowed"
    assert took < 0.5, f"{took:.2f} s"
    assert http.request("GET", url, headers={**_auth(secret), "User-Agent": "MyApp/2"}).status == 200


def test_a_nul_in_the_key_id_is_401_invalid_key_not_503(granian, key_on_echo):
    key_on_echo()  # the upstream exists, so the key id is what is judged
    http = urllib3.PoolManager(retries=False, timeout=5)
    for target in ("pk_%00abc/x", "pk_%00abc", "pk_" + "a" * 27 + "%00"):
        answer = http.request("GET", f"{granian}/proxy/echo/{target}")
        assert (answer.status, answer.json()["error"]["code"]) == (401, "invalid_key"), target
    answer = http.request("GET", f"{granian}/proxy/nope/pk_%00abc/x")
    assert (answer.status, answer.json()["error"]["code"]) == (404, "unknown_upstream")


def _workers(server_pid: int) -> set[int]:
    """The pids of the server's worker processes (its children)."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children")
    return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(granian, key_on_echo):
    key, secret = key_on_echo()
    http = urllib3.PoolManager(retries=False, timeout=10)
    url = f"{granian}/proxy/echo/{key.key_id}/x"
    server = granian.pid
    before = _workers(server)
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = _workers(server)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the killed worker {victim} was not replaced: workers now {_workers(server)}")
    statuses = [
        http.request("GET", url, headers={**_auth(secret), "Connection": "close"}).status for _ in range(20)
    ]
    assert statuses == [200] * 20


def _requests_counted(exposition: str, upstream: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "proxy_requests_total" and sample.labels["upstream"] == upstream
    )


def test_one_scrape_of_metrics_sums_the_calls_of_both_workers(key_on_echo, tmp_path):
    from prometheus_client.mmap_dict import MmapedDict

    key, secret = key_on_echo()
    sent = 60
    with serve(METRICS_DIR=str(tmp_path / "metrics")) as url:
        http = urllib3.PoolManager(retries=False, timeout=10)
        for _ in range(sent):  # a fresh connection each: granian spreads them over its workers
            answer = http.request(
                "GET", f"{url}/proxy/echo/{key.key_id}/x", headers={**_auth(secret), "Connection": "close"}
            )
            assert answer.status == 200
        # Each worker adds its calls to the shared files within a second (proxy.metrics.BATCH_SECONDS).
        for _ in range(40):
            text = http.request("GET", f"{url}/metrics", headers={"Connection": "close"}).data.decode()
            if _requests_counted(text, "echo") >= sent:
                break
            time.sleep(0.1)
        counted_by_pid = {}
        for path in (tmp_path / "metrics").glob("counter_*.db"):
            values = MmapedDict.read_all_values_from_file(str(path))
            counted_by_pid[path.stem] = sum(
                value for entry, value, *_ in values if json.loads(entry)[1] == "proxy_requests_total"
            )
    assert key.key_id not in text
    assert _requests_counted(text, "echo") == sent
    assert sum(1 for count in counted_by_pid.values() if count > 0) == 2, counted_by_pid


def test_every_line_the_production_server_writes_is_json_granians_own_included(key_on_echo):
    key, secret = key_on_echo()
    with serve(LOG_LEVEL="INFO") as url:
        http = urllib3.PoolManager(retries=False, timeout=5)
        assert http.request("GET", f"{url}/proxy/echo/{key.key_id}/x", headers=_auth(secret)).status == 200
        log = url.log
        os.killpg(url.pid, signal.SIGTERM)
        time.sleep(1)
        log.seek(0)
        lines = [line for line in log.read().decode().splitlines() if line.strip()]
    loggers = {json.loads(line)["logger"] for line in lines}  # raises on a line that is not JSON
    assert "_granian" in loggers and "proxy.access" in loggers, loggers

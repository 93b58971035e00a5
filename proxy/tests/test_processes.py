"""The proxy as production runs it: granian with two worker processes, PostgreSQL and Redis.

Limits and revocations must hold across processes, so these tests need the shared services; they
are skipped on the embedded default (SQLite, no Redis) and run in CI.
"""

import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import urllib3
from django.conf import settings
from django.db import connection

from keys import services

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


@pytest.fixture
def granian(db):
    """The product served by granian (2 workers) against this test's database and Redis."""
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
    }
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "wsgi",
            "--workers",
            "2",
            "--blocking-threads",
            "8",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers-kill-timeout",
            "3",
            "config.wsgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,  # a file, not a pipe: nobody reads a pipe while the server runs, and a full one blocks it
        start_new_session=True,  # its own process group, so teardown reaches the workers too
    )
    url = f"http://127.0.0.1:{port}"
    http = urllib3.PoolManager(retries=False, timeout=10, maxsize=64)
    for _ in range(100):
        try:
            if http.request("GET", f"{url}/healthz").status == 200:
                break
        except urllib3.exceptions.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        log.seek(0)
        pytest.fail("granian did not start: " + log.read().decode()[-2000:])
    yield url
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

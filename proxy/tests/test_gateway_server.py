"""The async gateway as production runs it (bin/serve: granian's ASGI interface, two workers): every
deadline is total, slow peers hold nothing but their own connection, and an answer cut short upstream
reaches the client cut short."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import urllib3

from keys import services
from proxy.tests.raw_upstream import RawUpstream
from proxy.tests.relay_helpers import basic
from proxy.tests.test_processes import pytestmark as processes_marks
from proxy.tests.test_processes import serve

pytestmark = processes_marks


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """One bin/serve for the module, against the test database (each test commits its own rows)."""
    with django_db_blocker.unblock(), serve() as url:
        yield url


@pytest.fixture
def echo_key(tenant, upstream_server):
    """echo_key(**upstream fields) -> (slug, key, secret) on the real upstream, which reads whole bodies."""

    def make(**fields):
        slug = f"echo-{len(upstream_server.requests)}-{time.monotonic_ns() % 10**6}"
        upstream = services.upstream_create(
            tenant=None,
            slug=slug,
            base_url=f"{upstream_server.url}/echo",
            allow_private_network=True,
            actor="test",
            actor_is_staff=True,
            **{"timeout_seconds": 1, **fields},
        )
        key, secret = services.api_key_create(tenant=tenant, name="app", upstreams=[upstream], actor="test")
        return slug, key, secret

    return make


@pytest.fixture
def raw_key(tenant):
    """raw_key(answer, **fields) -> (slug, key, secret): an upstream of its own on a RawUpstream."""
    servers: list[RawUpstream] = []

    def make(answer: bytes, *, drip_from: int | None = None, drip_every: float = 0.25, **fields):
        raw = RawUpstream(answer, drip_from=drip_from, drip_every=drip_every).__enter__()
        servers.append(raw)
        slug = f"raw-{raw.port}"
        upstream = services.upstream_create(
            tenant=None,
            slug=slug,
            base_url=raw.url,
            allow_private_network=True,
            actor="test",
            actor_is_staff=True,
            **{"timeout_seconds": 1, **fields},
        )
        key, secret = services.api_key_create(tenant=tenant, name="app", upstreams=[upstream], actor="test")
        return slug, key, secret

    yield make
    for raw in servers:
        raw.__exit__(None, None, None)


def _exchange(url: str, request: bytes, *, pace: float = 0.0, split_at: int | None = None) -> bytes:
    """Send `request` (the part from `split_at` on one byte every `pace` seconds) and read until closed."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as connection:
        if split_at is None:
            connection.sendall(request)
        else:
            connection.sendall(request[:split_at])
            for index in range(split_at, len(request)):
                time.sleep(pace)
                try:
                    connection.sendall(request[index : index + 1])
                except OSError:
                    break  # the server gave up on us: what it answered is below
        answer = b""
        try:
            while part := connection.recv(65536):
                answer += part
        except OSError:
            pass
    return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _healthz_p99(url: str, count: int = 20) -> float:
    http = urllib3.PoolManager(retries=False, timeout=5)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert http.request("GET", f"{url}/healthz").status == 200
        times.append(time.perf_counter() - started)
    return sorted(times)[int(count * 0.99) - 1]


def test_a_client_sending_its_body_too_slowly_gets_408_at_the_deadline(server, echo_key):
    slug, key, secret = echo_key()
    head = (
        f"POST /proxy/{slug}/{key.key_id}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {basic(secret)}\r\n"
        "Content-Length: 20\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _exchange(server, head + b"y" * 20, pace=0.3, split_at=len(head))
    assert _status(answer) == 408 and b'"request_timeout"' in answer, answer[:300]
    assert time.monotonic() - started < 3  # the deadline is 1 s; the whole body would take 6 s


def test_slow_uploads_hold_no_worker_the_server_answers_others_meanwhile(server, echo_key):
    slug, key, secret = echo_key(timeout_seconds=3)
    head = (
        f"POST /proxy/{slug}/{key.key_id}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {basic(secret)}\r\n"
        "Content-Length: 10\r\nConnection: close\r\n\r\n"
    ).encode()
    # 40 slow clients: more than the old server's 2 workers × 8 threads, which they used to exhaust.
    with ThreadPoolExecutor(40) as pool:
        slow = [
            pool.submit(_exchange, server, head + b"z" * 10, pace=0.5, split_at=len(head)) for _ in range(40)
        ]
        time.sleep(0.5)
        assert _healthz_p99(server) < 0.5
        assert {_status(future.result()) for future in slow} == {408}


def test_an_upstream_dripping_its_headers_is_504_at_the_deadline(server, raw_key):
    slug, key, secret = raw_key(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", drip_from=3)
    http = urllib3.PoolManager(retries=False, timeout=10)
    started = time.monotonic()
    response = http.request(
        "GET", f"{server}/proxy/{slug}/{key.key_id}/x", headers={"Authorization": basic(secret)}
    )
    assert response.status == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 2.5


def test_a_large_answer_dripped_past_the_deadline_reaches_the_client_cut_not_complete(server, raw_key):
    length = 100_000  # over the in-memory limit: streamed
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()
    slug, key, secret = raw_key(head + b"x" * length, drip_from=len(head) + 70_000, drip_every=0.1)
    request = (
        f"GET /proxy/{slug}/{key.key_id}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {basic(secret)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _exchange(server, request)
    assert _status(answer) == 200
    head_end = answer.index(b"\r\n\r\n") + 4
    assert len(answer) - head_end < length  # cut: the client can tell it is incomplete
    assert time.monotonic() - started < 3


def test_a_chunked_answer_the_upstream_cuts_off_is_cut_for_the_client_too(server, raw_key):
    body = b"".join(b"%x\r\n%s\r\n" % (1000, b"x" * 1000) for _ in range(5))  # no last chunk: cut
    slug, key, secret = raw_key(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    http = urllib3.PoolManager(retries=False, timeout=10)
    response = http.request(
        "GET",
        f"{server}/proxy/{slug}/{key.key_id}/x",
        headers={"Authorization": basic(secret)},
        preload_content=False,
    )
    assert response.status == 200
    with pytest.raises(urllib3.exceptions.ProtocolError):
        while response.read(65536):
            pass


def test_an_encoded_slash_in_the_path_is_400_invalid_path_and_never_sent(server, raw_key):
    slug, key, secret = raw_key(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    for tail in ("a%2fb", "a%2Fb", "a%5cb"):
        request = (
            f"GET /proxy/{slug}/{key.key_id}/{tail} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {basic(secret)}\r\nConnection: close\r\n\r\n"
        ).encode()
        answer = _exchange(server, request)
        assert _status(answer) == 400 and b'"invalid_path"' in answer, tail


def test_many_calls_wait_on_a_slow_upstream_at_once(server, raw_key):
    """200 calls to an upstream that answers after 0.5 s finish together, not 16 at a time."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    slug, key, secret = raw_key(answer, drip_from=0, drip_every=0.5 / len(answer), timeout_seconds=5)
    http = urllib3.PoolManager(retries=False, timeout=10, maxsize=200)
    url = f"{server}/proxy/{slug}/{key.key_id}/x"
    barrier = threading.Barrier(200)

    def call() -> int:
        barrier.wait()
        return http.request("GET", url, headers={"Authorization": basic(secret)}).status

    started = time.monotonic()
    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(lambda _: call(), range(200)))
    assert statuses == [200] * 200
    # Threads would take 200 / 16 × (0.5 s + the drip) ≈ 13 s; coroutines take about one drip.
    assert time.monotonic() - started < 6

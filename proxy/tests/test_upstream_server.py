"""The loopback upstream the relay tests talk to: it must itself do what they rely on."""

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import urllib3

from proxy.tests.upstream_server import REDIRECT_LOCATION, UpstreamServer, refused_port


def connect(upstream, timeout: float = 5) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=timeout)


def get(upstream, target: str, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
    connection = connect(upstream)
    connection.request(method, target)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def test_url_and_port_name_the_loopback_address(upstream_server):
    assert upstream_server.url == f"http://127.0.0.1:{upstream_server.port}"
    assert upstream_server.port > 0


def test_echo_reports_method_path_query_headers_and_body(upstream_server):
    connection = connect(upstream_server)
    connection.putrequest("POST", "/echo/a/b?x=1&y=%20z", skip_accept_encoding=True)
    connection.putheader("X-Custom", "one")
    connection.putheader("x-custom", "two")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", "16")
    connection.endheaders(b'{"hello": "wo"}\n')
    response = connection.getresponse()
    echoed = json.loads(response.read())
    connection.close()

    assert response.status == 200
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo/a/b"
    assert echoed["query"] == "x=1&y=%20z"
    assert echoed["headers"]["x-custom"] == "one, two"
    assert echoed["headers"]["content-type"] == "application/json"
    assert echoed["body"] == '{"hello": "wo"}\n'

    seen = upstream_server.requests[-1]
    assert (seen.method, seen.path, seen.body) == ("POST", "/echo/a/b?x=1&y=%20z", b'{"hello": "wo"}\n')
    assert [(name, value) for name, value in seen.headers if name.lower() == "x-custom"] == [
        ("X-Custom", "one"),
        ("x-custom", "two"),
    ]


def test_echo_reads_a_chunked_body(upstream_server):
    connection = connect(upstream_server)
    connection.request("PUT", "/echo", body=iter([b"first,", b"", b"second,", b"third"]), encode_chunked=True)
    response = connection.getresponse()
    echoed = json.loads(response.read())
    connection.close()
    assert echoed["body"] == "first,second,third"
    assert echoed["headers"]["transfer-encoding"] == "chunked"
    assert upstream_server.requests[-1].body == b"first,second,third"


def test_echo_reads_a_raw_chunked_body_with_extensions_and_trailers(upstream_server):
    with socket.create_connection(("127.0.0.1", upstream_server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert upstream_server.requests[-1].body == b"hello, world!!!"


def test_malformed_chunked_body_is_400(upstream_server):
    with socket.create_connection(("127.0.0.1", upstream_server.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_echo_answers_with_the_headers_a_proxy_must_drop(upstream_server):
    response, _ = get(upstream_server, "/echo")
    assert response.getheader("X-Upstream") == "echo"
    assert response.getheader("Set-Cookie") == "upstream=1"
    assert response.getheader("Access-Control-Allow-Origin") == "*"
    assert response.getheader("Connection") == "close, X-Hop"
    assert response.getheader("X-Hop") == "hop-value"
    assert response.getheader("Keep-Alive") == "timeout=5"
    assert response.getheader("Content-Type") == "application/json"


def test_any_method_reaches_the_routes(upstream_server):
    response, body = get(upstream_server, "/echo/x", method="PROPFIND")
    assert response.status == 200 and json.loads(body)["method"] == "PROPFIND"


@pytest.mark.parametrize("status", [200, 201, 400, 404, 418, 429, 500, 502, 503, 599])
def test_status_route_answers_that_status_with_json(upstream_server, status):
    response, body = get(upstream_server, f"/status/{status}")
    assert response.status == status
    assert json.loads(body)["status"] == status


@pytest.mark.parametrize("status", [204, 304])
def test_status_without_a_body(upstream_server, status):
    response, body = get(upstream_server, f"/status/{status}")
    assert response.status == status and body == b""


@pytest.mark.parametrize(
    "target", ["/status/abc", "/status/99", "/status/600", "/bytes?n=-1", "/slow?delay=x"]
)
def test_bad_parameters_are_400(upstream_server, target):
    assert get(upstream_server, target)[0].status == 400


def test_unknown_route_is_404(upstream_server):
    assert get(upstream_server, "/nowhere")[0].status == 404


def test_redirect_is_302_to_elsewhere(upstream_server):
    response, _ = get(upstream_server, "/redirect/anything")
    assert response.status == 302
    assert response.getheader("Location") == REDIRECT_LOCATION == "http://example.invalid/elsewhere"


def test_connection_is_kept_alive_between_answers(upstream_server):
    connection = connect(upstream_server)
    sockets = []
    for target in ("/status/200", "/bytes?n=10", "/redirect"):
        connection.request("GET", target)
        connection.getresponse().read()
        sockets.append(connection.sock)  # http.client drops its socket when an answer closes it
    connection.close()
    assert sockets[0] is not None and sockets == [sockets[0]] * 3
    assert len(upstream_server.requests) == 3


def test_stream_arrives_in_chunks_spaced_by_the_delay(upstream_server):
    pool = urllib3.PoolManager(retries=False, timeout=5)
    started = time.monotonic()
    response = pool.request(
        "GET", f"{upstream_server.url}/stream?chunks=4&size=1000&delay=0.2", preload_content=False
    )
    arrivals = []
    for chunk in response.read_chunked():
        arrivals.append((time.monotonic() - started, chunk))
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert [chunk for _, chunk in arrivals] == [letter * 1000 for letter in (b"a", b"b", b"c", b"d")]
    first_at, last_at = arrivals[0][0], arrivals[-1][0]
    assert first_at < 0.15 and last_at >= 0.6


def test_large_stream_chunks_are_written_whole(upstream_server):
    response = urllib3.request("GET", f"{upstream_server.url}/stream?chunks=2&size=200000", timeout=5)
    assert response.data == b"a" * 200000 + b"b" * 200000


@pytest.mark.parametrize("n", [0, 1, 65536, 3 * 65536 + 7])
def test_bytes_has_the_length_asked_for(upstream_server, n):
    response, body = get(upstream_server, f"/bytes?n={n}")
    assert response.getheader("Content-Length") == str(n)
    assert body == bytes(i % 256 for i in range(n))


def test_head_of_bytes_has_the_length_and_no_body(upstream_server):
    connection = connect(upstream_server)
    connection.request("HEAD", "/bytes?n=5000")
    response = connection.getresponse()
    assert response.getheader("Content-Length") == "5000" and response.read() == b""
    connection.request("GET", "/status/200")  # the connection is still in step
    assert connection.getresponse().status == 200
    connection.close()


def test_slow_answers_after_the_delay(upstream_server):
    started = time.monotonic()
    response, _ = get(upstream_server, "/slow?delay=0.3")
    assert response.status == 200 and time.monotonic() - started >= 0.3


def test_drip_is_fast_per_read_but_long_in_total(upstream_server):
    connection = connect(upstream_server, timeout=0.5)  # each read is well within the per-read timeout
    started = time.monotonic()
    connection.request("GET", "/drip?every=0.1&count=8")
    response = connection.getresponse()
    assert response.getheader("Content-Length") == "8"
    body = response.read()
    connection.close()
    assert body == b"." * 8 and time.monotonic() - started >= 0.8


def test_hang_is_cut_short_by_a_client_timeout(upstream_server):
    connection = connect(upstream_server, timeout=0.3)
    started = time.monotonic()
    connection.request("GET", "/hang")
    with pytest.raises(TimeoutError):
        connection.getresponse()
    connection.close()
    assert 0.3 <= time.monotonic() - started < 1.0
    assert upstream_server.requests[-1].path == "/hang"


def server_threads(upstream) -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(f"upstream-server-{upstream.port}")
    ]


def test_stop_is_quick_and_leaves_no_thread_even_with_requests_in_flight():
    upstream = UpstreamServer().start()
    idle = connect(upstream)
    idle.request("GET", "/status/200")
    idle.getresponse().read()  # a kept-alive connection, waiting for its next request
    hanging = connect(upstream, timeout=10)
    hanging.request("GET", "/hang")
    dripping = connect(upstream, timeout=10)
    dripping.request("GET", "/drip?every=5&count=100")
    dripping_response = dripping.getresponse()
    while len(upstream.requests) < 3:
        time.sleep(0.01)
    assert len(server_threads(upstream)) == 4  # the accept loop and three connections

    started = time.monotonic()
    upstream.stop()
    assert time.monotonic() - started < 1.0
    assert server_threads(upstream) == []
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        hanging.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        dripping_response.read()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", upstream.port), timeout=1)
    upstream.stop()  # a second stop is harmless
    for connection in (idle, hanging, dripping):
        connection.close()


def test_context_manager_starts_and_stops():
    with UpstreamServer() as upstream:
        assert get(upstream, "/status/200")[0].status == 200
    assert server_threads(upstream) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", upstream.port), timeout=1)


def test_requests_are_all_recorded_under_concurrency(upstream_server):
    def call(index: int) -> int:
        return get(upstream_server, f"/echo/{index}", method="POST")[0].status

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(call, range(64))) == {200}
    assert sorted(request.path for request in upstream_server.requests) == sorted(
        f"/echo/{index}" for index in range(64)
    )


def test_refused_port_refuses_connections():
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refused_port()), timeout=2)
    assert time.monotonic() - started < 0.5


def test_each_test_starts_with_no_recorded_requests(upstream_server):
    # Earlier tests in this module used the same server; the fixture cleared what they left.
    assert len(upstream_server.requests) == 0

"""proxy/http1.py, the relay's upstream client, against real sockets on loopback: keep-alive reuse and
when a connection must not be reused, TLS with the upstream's name checked while connecting to an
address, backpressure both ways, the pool's limit, and cancellation leaving nothing open.

Each upstream here is a small asyncio server written for the case; the relay through the real server
is in test_relay.py and test_hostile_peers.py."""

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy import http1

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 20))


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int, list[int]]:
    """A loopback server; the list counts the connections it accepted."""
    accepted: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1], accepted


def pool_for(port: int, **options: object) -> http1.Pool:
    settings: dict = {
        "tls": None,
        "server_hostname": None,
        "limit": 10,
        "keepalive_seconds": 30.0,
        "max_field_bytes": 32 * 1024,
    }
    settings.update(options)
    return http1.Pool("127.0.0.1", port, **settings)


def head(method: str = "GET", path: str = "/", **headers: str) -> bytes:
    return http1.encode_head(method, path, {"Host": "upstream.test", **headers})


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head, and its body by Content-Length."""
    request_head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in request_head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return request_head, await reader.readexactly(length)


async def answer_every_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        _, body = await read_request(reader)
        text = b"got %d" % len(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
        await writer.drain()


async def read_all(exchange: http1.Exchange) -> bytes:
    parts = []
    while piece := await exchange.read(64 * 1024):
        parts.append(piece)
    return b"".join(parts)


# --- Keep-alive -----------------------------------------------------------------------------------


def test_an_answer_read_to_its_end_leaves_its_connection_for_the_next_request():
    async def scenario() -> None:
        server, port, accepted = await serve(answer_every_request)
        pool = pool_for(port)
        for _ in range(3):
            exchange = await pool.request(head(), None)
            assert (exchange.status, await read_all(exchange)) == (200, b"got 0")
            exchange.finish()
        assert len(accepted) == 1 and pool.open == 1
        pool.close()
        server.close()

    run(scenario())


def test_an_answer_left_unread_closes_its_connection():
    async def scenario() -> None:
        server, port, accepted = await serve(answer_every_request)
        pool = pool_for(port)
        exchange = await pool.request(head(), None)
        exchange.finish()  # its body not read: the next answer's bytes could not be told from this one's
        exchange = await pool.request(head(), None)
        assert await read_all(exchange) == b"got 0"
        exchange.finish()
        assert len(accepted) == 2 and pool.open == 1
        pool.close()
        server.close()

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        # Bytes after the answer's end, unasked: whatever they are, the connection's framing is lost.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    ],
)
def test_a_connection_the_upstream_may_not_keep_is_never_reused(answer):
    async def upstream(reader, writer) -> None:
        while True:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()

    async def scenario() -> None:
        server, port, accepted = await serve(upstream)
        pool = pool_for(port)
        for _ in range(2):
            exchange = await pool.request(head(), None)
            assert (exchange.status, await read_all(exchange)) == (200, b"ok")
            exchange.finish()
        assert len(accepted) == 2
        pool.close()
        server.close()

    run(scenario())


def test_a_body_that_ends_with_the_connection_is_read_whole_and_not_reused():
    async def upstream(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100_000)
        await writer.drain()

    async def scenario() -> None:
        server, port, _ = await serve(upstream)
        pool = pool_for(port)
        exchange = await pool.request(head(), None)
        assert await read_all(exchange) == b"x" * 100_000
        exchange.finish()
        assert pool.open == 0
        server.close()

    run(scenario())


def test_an_answer_cut_short_is_a_failed_answer_not_a_short_body():
    async def upstream(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nonly")
        await writer.drain()

    async def scenario() -> None:
        server, port, _ = await serve(upstream)
        pool = pool_for(port)
        exchange = await pool.request(head(), None)
        with pytest.raises(http1.AnswerFailed):
            await read_all(exchange)
        exchange.finish()
        assert pool.open == 0
        server.close()

    run(scenario())


def test_interim_answers_are_skipped_and_the_real_one_is_returned():
    async def upstream(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()

    async def scenario() -> None:
        server, port, _ = await serve(upstream)
        pool = pool_for(port)
        exchange = await pool.request(head(), None)
        assert exchange.status == 201 and (b"Link", b"</a>") not in exchange.lines
        assert await read_all(exchange) == b"done"
        exchange.finish()
        pool.close()
        server.close()

    run(scenario())


# --- TLS: the upstream's name, checked while connecting to its checked address --------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str, bytes]:
    """A self-signed certificate for upstream.test: (its file, its key's file, its PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("upstream.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(folder / "cert.pem"), str(folder / "key.pem"), pem


def tls_contexts(certificate) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert_file, key_file, pem = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


def test_tls_to_an_address_verifies_the_upstreams_name_and_reuses_the_connection(certificate):
    server_tls, client_tls = tls_contexts(certificate)

    async def scenario() -> None:
        server, port, accepted = await serve(answer_every_request, tls=server_tls)
        pool = pool_for(port, tls=client_tls, server_hostname="upstream.test")
        for _ in range(2):
            exchange = await pool.request(head("POST", **{"Content-Length": "3"}), b"abc")
            assert (exchange.status, await read_all(exchange)) == (200, b"got 3")
            exchange.finish()
        assert len(accepted) == 1
        pool.close()
        server.close()

    run(scenario())


@pytest.mark.parametrize("server_hostname", ["other.test", "127.0.0.1"])
def test_tls_to_a_certificate_for_another_name_fails_to_connect(certificate, server_hostname):
    server_tls, client_tls = tls_contexts(certificate)

    async def scenario() -> None:
        server, port, _ = await serve(answer_every_request, tls=server_tls)
        pool = pool_for(port, tls=client_tls, server_hostname=server_hostname)
        with pytest.raises(http1.ConnectFailed) as failure:
            await pool.request(head(), None)
        assert failure.value.tls and pool.open == 0
        server.close()

    run(scenario())


def test_a_refused_connection_fails_to_connect_without_tls_blame():
    async def scenario() -> None:
        server, port, _ = await serve(answer_every_request)
        server.close()
        await server.wait_closed()
        pool = pool_for(port)
        with pytest.raises(http1.ConnectFailed) as failure:
            await pool.request(head(), None)
        assert not failure.value.tls and pool.open == 0

    run(scenario())


# --- Backpressure both ways -----------------------------------------------------------------------


def test_a_streamed_upload_goes_at_the_pace_the_upstream_reads_it():
    piece, pieces = b"u" * 65536, 160  # 10 MiB, far more than the socket buffers hold
    produced: list[int] = []
    upstream_reading = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(pieces):
            produced.append(1)
            yield piece

    async def upstream(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await upstream_reading.wait()
        received = len(await reader.readexactly(len(piece) * pieces))
        text = b"got %d" % received
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
        await writer.drain()

    async def scenario() -> None:
        server, port, _ = await serve(upstream)
        pool = pool_for(port)
        length = str(len(piece) * pieces)
        request = asyncio.ensure_future(pool.request(head("PUT", **{"Content-Length": length}), body()))
        await asyncio.sleep(0.5)
        # The upstream has read nothing yet: the upload waits once the socket buffers are full.
        assert 0 < len(produced) < pieces
        upstream_reading.set()
        exchange = await request
        assert await read_all(exchange) == b"got %d" % (len(piece) * pieces)
        exchange.finish()
        pool.close()
        server.close()

    run(scenario())


def test_a_streamed_answer_stops_being_read_while_the_caller_is_not_reading():
    sent: list[int] = []

    async def upstream(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * 65536))
        for _ in range(64):  # 4 MiB
            writer.write(b"d" * 65536)
            await writer.drain()
            sent.append(1)

    async def scenario() -> None:
        server, port, _ = await serve(upstream)
        pool = pool_for(port)
        exchange = await pool.request(head(), None)
        await asyncio.sleep(0.5)
        connection = exchange.connection
        assert connection.reading_paused and connection.queued <= http1.QUEUE_HIGH_BYTES + 256 * 1024
        assert len(sent) < 64  # the upstream is held back too, by TCP
        assert len(await read_all(exchange)) == 64 * 65536 and len(sent) == 64
        exchange.finish()
        pool.close()
        server.close()

    run(scenario())


# --- The pool's limit and cancellation ------------------------------------------------------------


def test_past_its_limit_a_request_waits_for_a_connection_to_come_back():
    release = asyncio.Event()

    async def upstream(reader, writer) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def scenario() -> None:
        server, port, accepted = await serve(upstream)
        pool = pool_for(port, limit=1)
        first = asyncio.ensure_future(pool.request(head(), None))
        second = asyncio.ensure_future(pool.request(head(), None))
        await asyncio.sleep(0.2)
        assert len(accepted) == 1 and not first.done() and not second.done()
        release.set()
        exchange = await first
        assert await read_all(exchange) == b"ok"
        exchange.finish()
        exchange = await second
        assert await read_all(exchange) == b"ok"
        exchange.finish()
        assert len(accepted) == 1
        pool.close()
        server.close()

    run(scenario())


def test_a_request_cancelled_while_waiting_for_its_answer_leaves_nothing_open():
    async def upstream(reader, writer) -> None:
        await read_request(reader)
        await reader.read()  # answers nothing; returns when the client closes

    async def scenario() -> None:
        server, port, accepted = await serve(upstream)
        pool = pool_for(port, limit=1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.request(head(), None), 0.3)
        assert pool.open == 0 and pool.idle == []
        # The slot came back: a request past the limit does not wait forever.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.request(head(), None), 0.3)
        assert len(accepted) == 2 and pool.open == 0
        server.close()

    run(scenario())


def test_an_idle_connection_past_its_keepalive_is_not_used():
    async def scenario() -> None:
        server, port, accepted = await serve(answer_every_request)
        pool = pool_for(port, keepalive_seconds=0.1)
        for _ in range(2):
            exchange = await pool.request(head(), None)
            await read_all(exchange)
            exchange.finish()
            await asyncio.sleep(0.2)
        assert len(accepted) == 2 and pool.open == 1
        pool.close()
        server.close()

    run(scenario())


# --- The request head -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b"])
def test_a_header_value_that_would_break_a_line_is_refused(value):
    with pytest.raises(ValueError):
        http1.encode_head("GET", "/", {"X-Key": value})


def test_a_head_is_latin1_when_it_can_be_and_utf8_when_it_cannot():
    assert http1.encode_head("GET", "/", {"X": "caf\u00e9"}).endswith(b"X: caf\xe9\r\n\r\n")
    assert http1.encode_head("GET", "/", {"X": "\u20ac"}).endswith(b"X: \xe2\x82\xac\r\n\r\n")

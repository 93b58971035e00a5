"""A real HTTP/1.1 upstream on loopback for end-to-end tests of the proxy (stdlib only).

Routes, matched by path prefix (anything may follow the prefix), for every HTTP method:
- /echo…                             200 JSON {"method", "path", "query", "headers", "body"} of what it
                                     received, with headers the proxy must drop (Set-Cookie, upstream
                                     CORS, hop-by-hop and those named in Connection)
- /status/<code>                     that status (200–599) with a small JSON body
- /redirect                          302 to http://example.invalid/elsewhere
- /stream?chunks=N&size=B&delay=S    chunked answer: N chunks of B bytes, S seconds apart
- /bytes?n=N                         N bytes with a Content-Length, written in 64 KiB pieces
- /slow?delay=S                      200 after S seconds
- /hang                              never answers (until the client leaves or the server stops)
- /drip?every=S&count=N              headers at once, then one byte every S seconds, N times
"""

import json
import math
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PIECE = 64 * 1024
# /bytes writes this block over and over, so byte i of the body is i % 256 (checkable, never built whole).
_PATTERN = bytes(range(256)) * (PIECE // 256)

ECHO_HEADERS = [
    ("X-Upstream", "echo"),
    ("Set-Cookie", "upstream=1"),
    ("Access-Control-Allow-Origin", "*"),
    ("Connection", "close, X-Hop"),
    ("X-Hop", "hop-value"),
    ("Keep-Alive", "timeout=5"),
]
REDIRECT_LOCATION = "http://example.invalid/elsewhere"


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the upstream received it."""

    method: str
    path: str  # the raw request target, query included
    headers: list[tuple[str, str]]  # in order, names as sent, duplicates kept
    body: bytes


class RequestLog(Sequence[ReceivedRequest]):
    """The requests received so far: appended by handler threads, read (and cleared) by tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[ReceivedRequest] = []

    def append(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._items.append(request)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __getitem__(self, index):  # an int or a slice, as on a list
        with self._lock:
            return self._items[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[ReceivedRequest]:
        with self._lock:
            return iter(list(self._items))

    def __repr__(self) -> str:
        return f"RequestLog({list(self)!r})"


class _BadRequest(Exception):
    """A malformed body or parameter: answered 400 before any answer byte was sent."""


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    value = params.get(name, str(default))
    if not value.isdigit():
        raise _BadRequest(f"{name} must be a whole number")
    return int(value)


def _seconds_param(params: dict[str, str], name: str, default: float) -> float:
    try:
        value = float(params.get(name, default))
    except ValueError:
        raise _BadRequest(f"{name} must be a number of seconds") from None
    if not (math.isfinite(value) and value >= 0):
        raise _BadRequest(f"{name} must be a finite number of seconds, not negative")
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "UpstreamServer/1"
    sys_version = ""
    disable_nagle_algorithm = True  # small stream chunks and drip bytes leave at once
    server: "_Server"

    def __getattr__(self, name: str) -> Callable[[], None]:
        # The proxy relays every method, so every method (PROPFIND included) reaches the same routes.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except _BadRequest as error:
            self.close_connection = True
            self._send_json(400, {"error": str(error)})
            return
        received = ReceivedRequest(self.command, self.path, list(self.headers.items()), body)
        self.server.requests.append(received)  # before any answer byte, so a client that has one sees it
        path, _, query = self.path.partition("?")
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        routes = {
            "/echo": self._echo,
            "/status/": self._status,
            "/redirect": self._redirect,
            "/stream": self._stream,
            "/bytes": self._bytes,
            "/slow": self._slow,
            "/hang": self._hang,
            "/drip": self._drip,
        }
        route = next((route for prefix, route in routes.items() if path.startswith(prefix)), None)
        try:
            if route is None:
                self._send_json(404, {"error": "no such route", "path": path})
            else:
                route(path, query, params, body)
        except _BadRequest as error:
            self._send_json(400, {"error": str(error)})
        except OSError:  # the client left (reset, broken pipe) or stop() shut the socket
            self.close_connection = True

    # --- Reading -------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length", "").strip()
        if not length:
            return b""
        if not length.isdigit():
            raise _BadRequest("bad Content-Length")
        return self._read_exactly(int(length))

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = self.rfile.readline(1024).split(b";", 1)[0].strip()
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                raise _BadRequest("bad chunk size")
            if int(size, 16) == 0:
                break
            parts.append(self._read_exactly(int(size, 16)))
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BadRequest("chunk not followed by CRLF")
        while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):  # trailers, ignored
            pass
        return b"".join(parts)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise _BadRequest("body ended early")
        return data

    # --- Writing -------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        no_body = status in (204, 304)
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: object, headers: Sequence[tuple[str, str]] = ()) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, [("Content-Type", "application/json"), *headers])

    def _pause(self, seconds: float) -> bool:
        """Wait; True when the server is stopping, and the caller abandons its answer."""
        stopping = self.server.stopping.wait(seconds) if seconds > 0 else self.server.stopping.is_set()
        if stopping:
            self.close_connection = True
        return stopping

    # --- Routes --------------------------------------------------------------------------------------

    def _echo(self, path: str, query: str, params: dict[str, str], body: bytes) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        echoed = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
        }
        self.close_connection = True  # as the answer's Connection header says
        self._send_json(200, echoed, ECHO_HEADERS)

    def _status(self, path: str, query: str, params: dict[str, str], body: bytes) -> None:
        code = path.removeprefix("/status/").split("/", 1)[0]
        if not code.isdigit() or not 200 <= int(code) <= 599:
            raise _BadRequest("status must be 200-599")
        status = int(code)
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        self._send_json(status, {"status": status, "reason": reason})

    def _redirect(self, path: str, query: str, params: dict[str, str], body: bytes) -> None:
        self._send(302, b"", [("Location", REDIRECT_LOCATION)])

    def _stream(self, path: str, query: str, params: dict[str, str], body: bytes) -> None:
        chunks, size = _int_param(params, "chunks", 3), _int_param(params, "size", 1024)
        delay = _seconds_param(params, "delay", 0.0)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD" or size == 0:
            if self.command != "HEAD":
                self.wfile.write(b"0\r\n\r\n")
            return
        for index in range(chunks):
            if index and self._pause(delay):
                return  # no last chunk: the client sees the answer cut short
            fill = bytes([ord("a") + index % 26]) * min(size, PIECE)  # chunk i is made of letter i
            if size <= PIECE:
                self.wfile.write(b"%x\r\n%b\r\n" % (size, fill))  # one write: the chunk leaves whole
                continue
            self.wfile.write(b"%x\r\n" % size)
            for offset in range(0, size, PIECE):
                self.wfile.write(memoryview(fill)[: min(PIECE, size - offset)])
            self.wfile.write(b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _bytes(self, path: str, query: str, params: dict[str, str], body: bytes) -> None:
        total = _int_param(params, "n", 1024)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(total))
        self.end_headers()
        if self.command == "HEAD":
            return
        for offset in range(0, total, PIECE):
            self.wfile.write(memoryview(_PATTERN)[: min(PIECE, total - offset)])

    def _slow(self, path: str, query: str, params: dict[str, str], body: bytes) -> None:
        delay = _seconds_param(params, "delay", 1.0)
        if not self._pause(delay):
            self._send_json(200, {"slept": delay})

    def _hang(self, path: str, query: str, params: dict[str, str], body: bytes) -> None:
        # Hold the connection without a byte of answer until the client gives up or the server stops.
        self.close_connection = True
        while not self.server.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable and not self.connection.recv(65536):
                return  # the client closed its side

    def _drip(self, path: str, query: str, params: dict[str, str], body: bytes) -> None:
        every, count = _seconds_param(params, "every", 0.1), _int_param(params, "count", 10)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(count))
        self.end_headers()
        if self.command == "HEAD":
            return
        for _ in range(count):
            if self._pause(every):
                return
            self.wfile.write(b".")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog (5) drops bursts of connects, which retry a second later

    def __init__(self) -> None:
        self.requests = RequestLog()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[socket.socket, threading.Thread] = {}
        super().__init__(("127.0.0.1", 0), _Handler)

    # typeshed types BaseServer's request for every server kind (a UDP one's is a (data, socket) pair);
    # a TCP server's is always its connection's socket.
    def process_request(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        # Our own bookkeeping (instead of ThreadingMixIn's) so that stop() can wake and join every handler.
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"upstream-server-{self.server_address[1]}-{client_address[1]}",
            daemon=True,
        )
        with self._lock:
            self._open[request] = thread
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection (waking handlers blocked in a read or a write) and join them."""
        with self._lock:
            open_now = list(self._open.items())
        for connection, _ in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by its handler
                pass
        deadline = time.monotonic() + timeout
        for _, thread in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(  # type: ignore[override]  # a TCP server's request is a socket (process_request)
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        if self.stopping.is_set() or isinstance(sys.exc_info()[1], OSError):
            return  # a client that left, or a connection stop() shut: not a failure of the server
        super().handle_error(request, client_address)


class UpstreamServer:
    """A real HTTP/1.1 server on 127.0.0.1 (a free port), served by background daemon threads.

    `with UpstreamServer() as upstream:` gives a started server; `upstream.url`, `upstream.port`,
    `upstream.requests` (every ReceivedRequest so far, thread-safe) and `upstream.stop()`.
    """

    def __init__(self) -> None:
        self._server = _Server()
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: RequestLog = self._server.requests
        self._thread: threading.Thread | None = None

    def start(self) -> "UpstreamServer":
        """Serve in a background thread; returns the server."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"upstream-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut every open connection (a /hang included), join the threads; idempotent."""
        if self._server.stopping.is_set():
            return
        self._server.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()
        self._server.close_connections(timeout)

    def __enter__(self) -> "UpstreamServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def refused_port() -> int:
    """A loopback port with nothing listening on it: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

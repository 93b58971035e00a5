"""The relay's HTTP/1.1 client: keep-alive connections per checked upstream address, parsed by llhttp.

Why not aiohttp's ClientSession: measured on a 2-core machine, relaying GETs through granian with
nothing else in the way, aiohttp's client made 7,100 req/s and an asyncio Protocol over httptools
(llhttp, the parser of Node.js) 15,200; the relay uses none of what a general client adds (cookies,
redirects, decompression, URL parsing). A request is one socket write (head and a body already read),
the answer's head is one callback, and a streamed body passes with backpressure both ways.

What the caller gets: `Pool.request()` returns an `Exchange` once the answer's status and header lines
are in, its body not read yet. Everything an upstream sends is hostile: an answer llhttp cannot parse,
a header line over `max_field_bytes`, a head over `MAX_HEAD_BYTES`, or a connection lost before the
answer's end raises `AnswerFailed` (never a hang: the caller's deadline bounds every wait). A
connection is reused only when its answer was read to the end, the upload finished, and both sides
allow keep-alive.
"""

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Callable

import httptools

# The most answer-head bytes (status line and every header line) read before the head must be done.
MAX_HEAD_BYTES = 256 * 1024
# The most answer header lines: past it the answer is refused (aiohttp's and nginx's order of magnitude).
MAX_HEADER_LINES = 256
# Body bytes queued ahead of the caller before the connection stops reading (TCP backpressure then
# reaches the upstream); reading resumes below half of it.
QUEUE_HIGH_BYTES = 256 * 1024

RequestBody = bytes | AsyncIterator[bytes] | None


class AnswerFailed(Exception):
    """The upstream's answer cannot be relayed: malformed, too large a head, or cut short."""


class ConnectFailed(Exception):
    """No connection to the upstream: refused, unreachable, or (tls=True) its TLS handshake failed."""

    def __init__(self, message: str, *, tls: bool = False) -> None:
        super().__init__(message)
        self.tls = tls


class Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, max_field_bytes: int) -> None:
        self.max_field_bytes = max_field_bytes
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()
        self._reset()

    def _reset(self) -> None:
        self.in_flight = False
        self.head_only = False  # a HEAD request: its answer has no body, whatever its length says
        self.head_done = False
        self.complete = False
        self.reusable = True
        self.interim = False  # a 1xx answer before the real one (100 Continue, 103 Early Hints)
        self.status = 0
        self.lines: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.until_close = False  # a body framed by the connection's end (no length, not chunked)
        self.failure: BaseException | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.reading_paused = False
        self._head_waiter: asyncio.Future[None] | None = None
        self._body_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if not self.in_flight or self.complete:
            # Bytes nobody asked for (after an answer's end, or on an idle connection): the connection
            # can no longer be trusted to frame the next answer.
            self.reusable = False
            self._close()
            return
        if not self.head_done:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reusable = False  # a 101 Switching Protocols: refused by the caller, never reused
        except httptools.HttpParserError as exc:
            if self.complete:  # trailing garbage after a complete answer: that answer stands
                self.reusable = False
                self._close()
                return
            self._fail(self.failure if isinstance(self.failure, AnswerFailed) else AnswerFailed(str(exc)))
        else:
            if not self.head_done and self.head_bytes > MAX_HEAD_BYTES:
                self._fail(AnswerFailed("answer head too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and self.until_close and not self.complete and self.failure is None:
            self.complete = True  # the connection's end is the body's end
            self.reusable = False
        elif self.in_flight and not self.complete and self.failure is None:
            self.failure = AnswerFailed("connection closed before the answer's end")
        self._wake_all()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        _wake(self._drain_waiter)

    # --- llhttp callbacks ---------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request
            raise AnswerFailed("an answer after the answer")
        self.lines = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self.max_field_bytes:
            self.failure = AnswerFailed("answer header line too long")
            raise self.failure
        if len(self.lines) >= MAX_HEADER_LINES:
            self.failure = AnswerFailed("too many answer header lines")
            raise self.failure
        self.lines.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # its own message: the real answer follows on the same connection
            return
        self.status = status
        self.head_done = True
        self.until_close = not self._framed()
        if self.head_only or status == 101:
            self.complete = True
            self.reusable = False  # llhttp would read a HEAD answer's announced body: never reuse
        _wake(self._head_waiter)

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.body.append(body)
        self.queued += len(body)
        if self.queued > QUEUE_HIGH_BYTES and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self._body_waiter)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.complete:
            return
        self.complete = True
        if not self.parser.should_keep_alive():
            self.reusable = False
        _wake(self._body_waiter)

    # --- the caller's side --------------------------------------------------------------------------
    def _framed(self) -> bool:
        """Whether the answer's body has its own end (a length, chunked, or none by its status)."""
        if self.status in (204, 304):
            return True
        for name, _ in self.lines:
            if name.lower() in (b"content-length", b"transfer-encoding"):
                return True
        return False

    def begin(self, head: bytes, *, head_only: bool) -> None:
        self._reset()
        self.in_flight, self.head_only = True, head_only
        if self.transport is None or self.closed:
            raise AnswerFailed("connection closed before the request")
        self.transport.write(head)

    async def upload(self, chunks: AsyncIterator[bytes]) -> None:
        """Write a streamed body, at the pace the upstream reads it."""
        async for chunk in chunks:
            if self.closed or self.transport is None or self.complete:
                self.reusable = False  # the body was not all sent: the connection's framing is lost
                return
            self.transport.write(chunk)
            if self._writing_paused:
                self._drain_waiter = self._loop.create_future()
                await self._drain_waiter
                self._drain_waiter = None

    def fail_upload(self, exc: BaseException) -> None:
        """The client's body failed (gone, or too slow): the answer's waiter learns it."""
        self.reusable = False
        if not self.head_done and self.failure is None:  # after the head, the answer stands alone
            self.failure = exc
            self._wake_all()

    async def head(self) -> None:
        while not self.head_done:
            if self.failure is not None:
                raise self.failure
            if self.closed:
                raise AnswerFailed("connection closed before the answer")
            self._head_waiter = self._loop.create_future()
            try:
                await self._head_waiter
            finally:
                self._head_waiter = None

    async def read(self, most: int) -> bytes:
        """Up to `most` bytes of the body as they come; b"" at its end."""
        while not self.body:
            if self.complete:
                return b""
            if self.failure is not None:
                raise self.failure
            if self.closed:
                raise AnswerFailed("connection closed before the answer's end")
            self._body_waiter = self._loop.create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None
        parts: list[bytes] = []
        size = 0
        while self.body and size < most:
            piece = self.body.popleft()
            if size + len(piece) > most:
                cut = most - size
                self.body.appendleft(piece[cut:])
                piece = piece[:cut]
            parts.append(piece)
            size += len(piece)
        self.queued -= size
        if self.reading_paused and self.queued < QUEUE_HIGH_BYTES // 2 and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.reusable = False
        self._close()
        self._wake_all()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()  # nothing more is read or written: no lingering close
        self.closed = True

    def _wake_all(self) -> None:
        _wake(self._head_waiter)
        _wake(self._body_waiter)
        _wake(self._drain_waiter)

    def abort(self) -> None:
        self.reusable = False
        self._close()
        self._wake_all()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Exchange:
    """One request's answer: status and header lines in, the body read by `read()`. `finish()` gives the
    connection back (reused only when everything was read), and must be called once in every case."""

    __slots__ = ("_pool", "connection", "status", "lines", "_upload", "_finished")

    def __init__(self, pool: "Pool", connection: Connection, upload: "asyncio.Task[None] | None") -> None:
        self._pool, self.connection, self._upload = pool, connection, upload
        self.status, self.lines = connection.status, connection.lines
        self._finished = False

    async def read(self, most: int) -> bytes:
        return await self.connection.read(most)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        connection = self.connection
        reusable = connection.complete and connection.reusable and not connection.body
        if self._upload is not None and not self._upload.done():
            self._upload.cancel()
            reusable = False
        self._pool.release(connection, reusable)


class Pool:
    """Keep-alive connections to one address, for one host name (a TLS connection is never reused for
    another name), at most `limit` open at once: a request past it waits for one."""

    def __init__(
        self,
        address: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        server_hostname: str | None,
        limit: int,
        keepalive_seconds: float,
        max_field_bytes: int,
    ) -> None:
        self.address, self.port = address, port
        self.tls, self.server_hostname = tls, server_hostname
        self.limit, self.keepalive_seconds = limit, keepalive_seconds
        self.max_field_bytes = max_field_bytes
        self.idle: list[Connection] = []
        self.open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def _acquire(self) -> Connection:
        while True:
            now = time.monotonic()
            while self.idle:
                connection = self.idle.pop()  # the most recently used: the one least likely closed
                if not connection.closed and now - connection.idle_since < self.keepalive_seconds:
                    return connection
                connection.abort()
                self.open -= 1
            if self.open < self.limit:
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.open += 1
        try:
            return await self._connect()
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: Connection(self.max_field_bytes),
                self.address,
                self.port,
                ssl=self.tls,
                server_hostname=self.server_hostname if self.tls else None,
            )
        except ssl.SSLError as exc:  # a failed handshake or certificate check (before OSError: a subclass)
            raise ConnectFailed(type(exc).__name__, tls=True) from None
        except OSError as exc:
            raise ConnectFailed(exc.strerror or type(exc).__name__) from None
        return connection

    def release(self, connection: Connection, reusable: bool) -> None:
        if reusable and not connection.closed:
            connection.in_flight = False
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        else:
            connection.abort()
            self.open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def request(self, head: bytes, body: RequestBody, *, head_only: bool = False) -> Exchange:
        """Send one request (its head already encoded, with Content-Length when there is a body) and
        wait for the answer's head. Cancelled (the caller's deadline), it leaves nothing open."""
        connection = await self._acquire()
        upload: asyncio.Task[None] | None = None
        try:
            if isinstance(body, bytes) or body is None:
                connection.begin(head + body if body else head, head_only=head_only)
            else:
                connection.begin(head, head_only=head_only)
                upload = asyncio.ensure_future(connection.upload(body))
                upload.add_done_callback(_upload_done(connection))
            await connection.head()
        except BaseException:
            if upload is not None:
                upload.cancel()
            self.release(connection, False)
            raise
        return Exchange(self, connection, upload)

    def close(self) -> None:
        for connection in self.idle:
            connection.abort()
        self.open -= len(self.idle)
        self.idle = []


def _upload_done(connection: Connection) -> Callable[["asyncio.Task[None]"], None]:
    def done(task: "asyncio.Task[None]") -> None:
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            connection.fail_upload(exc)

    return done


def encode_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    """The request line and header lines, encoded; ValueError for a value that would break a line
    (a header value with CR, LF or NUL)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1 or "\0" in text:
        raise ValueError("a header line break")
    try:
        return (text + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:  # a credential typed with characters past latin-1, sent as aiohttp did
        return (text + "\r\n\r\n").encode()

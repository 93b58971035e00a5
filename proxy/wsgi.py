"""The gateway under a WSGI server (manage.py runserver, the test suite's live server): a bridge.

Production serves /proxy/ from the ASGI interface (config/asgi.py, bin/serve). Under WSGI the same
gateway (proxy/gateway.py) runs on one event loop thread per process, and each request's own WSGI thread
does the blocking parts for it: it reads the client's body when the gateway asks, hands the answer to
the server piece by piece (the gateway waits for each piece to be taken: backpressure), and runs the
policy cache's database reads, so they happen on the request's thread as Django's test tools expect.
"""

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from proxy import gateway, hosts, views

READ_BLOCK = 64 * 1024
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _gateway_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop for the gateway, on a thread of its own (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="proxy-gateway", daemon=True).start()
            _loop = loop
        return _loop


def scope_of(environ: WSGIEnvironment) -> dict[str, Any]:
    """The ASGI scope of a WSGI request."""
    headers = [
        (name[5:].replace("_", "-").lower().encode("latin-1"), str(value).encode("latin-1"))
        for name, value in environ.items()
        if name.startswith("HTTP_")
    ]
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(name):
            headers.append(
                (name.replace("_", "-").lower().encode("latin-1"), environ[name].encode("latin-1"))
            )
    path = environ.get("PATH_INFO", "").encode("latin-1")  # PEP 3333: the bytes, decoded as latin-1
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
        "method": environ.get("REQUEST_METHOD", "GET"),
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": path.decode("utf-8", "replace"),
        "raw_path": raw.partition("?")[0].encode("latin-1") if raw else quote(path).encode(),
        "root_path": environ.get("SCRIPT_NAME", ""),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
        "client": (environ.get("REMOTE_ADDR", ""), int(environ.get("REMOTE_PORT") or 0)),
        "server": (environ.get("SERVER_NAME", ""), int(environ.get("SERVER_PORT") or 0)),
    }


def _resolve(future: "asyncio.Future[Any]", value: Any = None, error: BaseException | None = None) -> None:
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class _Exchange:
    """One request between its WSGI thread and the gateway's loop. The thread waits on `inbox` for what
    the gateway asks: a block of the body, a blocking call, or to pass on a message of the answer."""

    def __init__(self, environ: WSGIEnvironment, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.inbox = loop, queue.Queue[tuple[str, Any, Any]]()
        self.input = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH") or ""
        self.remaining: int | None = int(length) if length.isdigit() else None  # None: read to the end
        if self.remaining is None and "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", ""):
            self.remaining = 0

    async def _ask(self, kind: str, payload: Any) -> Any:
        answered = self.loop.create_future()
        self.inbox.put((kind, payload, answered))
        return await answered

    async def receive(self) -> dict[str, Any]:
        return await self._ask("read", None)

    async def send(self, message: dict[str, Any]) -> None:
        await self._ask("message", message)

    async def run_blocking(self, function: Callable[..., Any], *args: Any) -> Any:
        return await self._ask("call", (function, args))

    async def run(self, scope: dict[str, Any]) -> None:
        gateway.run_blocking.set(self.run_blocking)
        await gateway.with_async_proxy(_no_site)(scope, self.receive, self.send)

    def _read(self) -> dict[str, Any]:
        if self.remaining == 0:
            return {"type": "http.request", "body": b"", "more_body": False}
        wanted = READ_BLOCK if self.remaining is None else min(READ_BLOCK, self.remaining)
        block = self.input.read(wanted)
        if self.remaining is None:
            return {"type": "http.request", "body": block, "more_body": bool(block)}
        if not block:
            return {"type": "http.disconnect"}
        self.remaining -= len(block)
        return {"type": "http.request", "body": block, "more_body": self.remaining > 0}

    def messages(self, done: "concurrent.futures.Future[None]") -> Iterator[tuple[dict[str, Any], Any]]:
        """The gateway's messages, doing what it asks meanwhile; ends when the gateway is done."""
        while True:
            kind, payload, answered = self.inbox.get()
            if kind == "done":
                payload.result()  # raises what the gateway raised
                return
            if kind == "read":
                try:
                    message = self._read()
                except OSError:
                    message = {"type": "http.disconnect"}
                self.loop.call_soon_threadsafe(_resolve, answered, message)
            elif kind == "call":
                function, args = payload
                try:
                    result = function(*args)
                except BaseException as exc:  # noqa: BLE001 - handed to the gateway, which raises it
                    self.loop.call_soon_threadsafe(_resolve, answered, None, exc)
                else:
                    self.loop.call_soon_threadsafe(_resolve, answered, result)
            else:
                yield payload, answered


def _no_site(scope: dict[str, Any], receive: Any, send: Any) -> Any:
    raise RuntimeError("the WSGI bridge serves /proxy/ only")


class _Body:
    """The answer's body for the WSGI server; close() (the server calls it, also when the client
    leaves early) stops the gateway."""

    def __init__(self, chunks: Iterator[bytes], done: "concurrent.futures.Future[None]") -> None:
        self._chunks, self._done = chunks, done

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._done.cancel()


def proxy_application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI application for /proxy/ paths: the gateway, run on its loop for this request."""
    loop = _gateway_loop()
    exchange = _Exchange(environ, loop)
    done = asyncio.run_coroutine_threadsafe(exchange.run(scope_of(environ)), loop)
    done.add_done_callback(lambda finished: exchange.inbox.put(("done", finished, None)))
    messages = exchange.messages(done)
    start, answered = next(messages)
    status = HTTPStatus(start["status"])
    start_response(
        f"{status.value} {status.phrase}",
        [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in start["headers"]],
    )
    loop.call_soon_threadsafe(_resolve, answered)

    def chunks() -> Iterator[bytes]:
        for message, taken in messages:
            body = bytes(message.get("body", b""))
            if body:
                yield body
            loop.call_soon_threadsafe(_resolve, taken)  # the server took it: the gateway may go on

    return _Body(chunks(), done)


@csrf_exempt
def relay(request: HttpRequest, upstream_slug: str, key_id: str, path: str = "") -> HttpResponse:
    """/proxy/ through Django's URL routing (Django's test client): the same gateway, through the bridge,
    its answer read whole."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.update(status=int(status.split(" ", 1)[0]), headers=headers)

    body = proxy_application(request.META, start_response)  # a WSGIRequest's META is its environ
    try:
        content = b"".join(body)
    finally:
        body.close()  # type: ignore[attr-defined]
    response = HttpResponse(content, status=started["status"])
    del response["Content-Type"]
    for name, value in started["headers"]:
        response[name] = value
    return response


def with_proxy_fast_path(site: WSGIApplication) -> WSGIApplication:
    """Serve /proxy/ with proxy_application and everything else with `site`, each only on its own
    hosts when PROXY_HOSTS is set (proxy/hosts.py)."""

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = hosts.route_for(environ.get("HTTP_HOST", ""), environ.get("PATH_INFO", ""))
        if route in ("proxy", "wrong_host"):
            return proxy_application(environ, start_response)
        return site(environ, start_response)

    return application


__all__ = ["proxy_application", "relay", "scope_of", "views", "with_proxy_fast_path"]

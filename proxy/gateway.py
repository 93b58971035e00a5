"""The proxy's async gateway: /proxy/ served straight from the server's ASGI interface.

One event loop per server worker; a call in flight is a coroutine, not a thread, so thousands wait on
slow upstreams at the cost of their sockets. Nothing of Django's request handling is on this path (its
ASGI handler hops to a thread per request): the request is read into a slim HttpRequest
(proxy.request.ProxyRequest) only for the helpers the relay shares with the site (client address,
request id, host check), and the answers are sent as ASGI messages. The checks are proxy/gate.py's;
a policy cache miss reads the database on a thread (proxy.policy.NeedsDatabase), which steady state
never does.

Every call has one deadline, the upstream's timeout, from the moment its key is known: it bounds the
client's upload (past it while waiting on the client: 408), the upstream's connect, headers and body
(504, or a streamed answer cut short), and a client that reads slowly.
"""

import asyncio
import contextlib
import contextvars
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote_from_bytes

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpResponse

from keys.log_context import bind_request_id, unbind_request_id
from keys.request_ids import request_id
from proxy import access_log, checks, gate, hosts, invalidation, metrics, outbound, views
from proxy.deadline import within
from proxy.hosts import PROXY_PREFIX, RELAY_PATH
from proxy.policy import NeedsDatabase, PolicyUnavailable, policies
from proxy.request import (
    ClientGone,
    ProxyRequest,
    Receive,
    Upload,
    declared_length,
    facts_of,
    forwarded_headers,
)
from proxy.responses import Relayed, answer_headers, refuse, relayed_headers
from proxy.usage import ALLOWED, UPSTREAM_ERROR, usage

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")

# DOTALL: a path with a (decoded) line break still names an upstream and a key, and the relay refuses
# it as a path with a control character (400 invalid_path) rather than as an unknown URL.
_RELAY = re.compile(PROXY_PREFIX[1:] + RELAY_PATH.removeprefix("^"), re.DOTALL)
# An encoded / or \ in the path as sent: decoding would make it a separator the client did not write.
ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)
VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]*")

# How a blocking call runs: on a thread of the default executor; the WSGI bridge (proxy/wsgi.py) runs
# it on the request's own thread instead, where Django's test tools expect the database to be used.
run_blocking: contextvars.ContextVar[Callable[..., Awaitable[Any]] | None] = contextvars.ContextVar(
    "proxy_run_blocking", default=None
)


class StreamCut(Exception):
    """The upstream's streamed answer failed or ran past the deadline after its headers went out: the
    server must close the connection, so the client sees a cut answer, never a complete one."""


async def _with_database(function: Callable[..., T], *args: Any) -> T:
    try:
        return function(*args)
    except NeedsDatabase:
        runner = run_blocking.get()
        if runner is not None:  # in this call's context, as asyncio.to_thread does: its access record
            result: T = await runner(contextvars.copy_context().run, function, *args)
            return result
        return await asyncio.to_thread(function, *args)


async def proxy_call(scope: Scope, receive: Receive, send: Send) -> None:
    """One /proxy/ request, answered through `send`."""
    query = bytes(scope.get("query_string", b""))
    if query and not VISIBLE_ASCII.fullmatch(query):
        # Relayed percent-encoded: Django reads the query as UTF-8, and no upstream should see raw bytes.
        scope = {**scope, "query_string": quote_from_bytes(query, safe=outbound.QUERY_SAFE).encode()}
    request = ProxyRequest(scope)
    match = _RELAY.match(request.path_info[1:])
    access = access_log.begin(request, match["upstream_slug"] if match else None)
    bound = bind_request_id(request_id(request))  # every log line of this request carries its id
    status = 500
    try:
        response = await _proxy_response(request, scope, receive, match)
        status = response.status_code
        await send_answer(response, send)
    finally:
        with contextlib.suppress(ValueError):  # a call abandoned by its server ends in another context
            unbind_request_id(bound)
        access_log.end(access, status)


async def _proxy_response(
    request: ProxyRequest, scope: Scope, receive: Receive, match: re.Match[str] | None
) -> HttpResponse | Relayed:
    try:
        request.get_host()  # the site's rule (DJANGO_ALLOWED_HOSTS) holds here too; never sent upstream
    except DisallowedHost:
        return views.bad_host(request)
    if match is None:
        return views.not_found(request)
    try:
        return await _relay(request, scope, receive, match)
    except Exception:
        logger.exception("proxy: unexpected error")
        return views.internal_error(request)


async def _relay(
    request: ProxyRequest, scope: Scope, receive: Receive, match: re.Match[str]
) -> HttpResponse | Relayed:
    invalidation.start_listener()  # once per process; a no-op after that
    facts = facts_of(request, time.time())
    headers = answer_headers(request_id(request))
    upstream_slug, key_id = match["upstream_slug"], match["key_id"]
    # The tail as the client sent it decides whether it hides a separator; the decoded one is relayed.
    path = None if ENCODED_SEPARATOR.search(scope.get("raw_path") or b"") else (match["path"] or "")
    started, response = metrics.call_started(), None
    try:
        response = await _checked_relay(request, receive, facts, headers, upstream_slug, key_id, path)
    except PolicyUnavailable:  # the database is down and the key, upstream or token is not cached
        response = refuse(checks.reject("service_unavailable", "Try again shortly."), headers, key_id=None)
    finally:  # made-up slugs add no label: counted under the slug only when the upstream exists
        found = upstream_slug if policies.upstreams.known(upstream_slug) else None
        metrics.call_finished(started, found, response)
    return response


async def _checked_relay(
    request: ProxyRequest,
    receive: Receive,
    facts: checks.Facts,
    headers: dict[str, str],
    upstream_slug: str,
    key_id: str,
    path: str | None,
) -> HttpResponse | Relayed:
    admitted = await _with_database(gate.admit, facts, request.headers, headers, upstream_slug, key_id)
    if isinstance(admitted, HttpResponse):
        return admitted
    upstream, key = admitted.upstream, admitted.key
    deadline = asyncio.get_running_loop().time() + upstream.timeout
    upload, limit = Upload(receive), settings.PROXY_MAX_BODY_BYTES
    length = declared_length(request)
    body: bytes | None = None
    rpc_rejection = None
    # A chunked body is read first (413 must come before any upstream byte), and so is a JSON-RPC one
    # for its method check; any other is streamed to the upstream as it comes.
    if length is None or (key.rpc_methods and 0 < length <= limit):
        try:
            async with within(deadline):
                body = await upload.read(limit)
        except (TimeoutError, ClientGone):
            return refuse(_slow_client(), headers, key_id=key.key_id)
        length = len(body)
    if key.rpc_methods and length <= limit:
        rpc_rejection = checks.check_rpc_methods(key, body or b"")
    target = gate.clear(admitted, facts, headers, rpc_rejection, path, length)
    if isinstance(target, HttpResponse):
        return target
    # 10: the call, within the deadline.
    out_headers = outbound.outbound_headers(
        upstream,
        request.proxy_headers.lines(),
        forwarded=forwarded_headers(request, facts.client_address, headers),
    )
    sent: outbound.RequestBody = body
    if length:
        out_headers["Content-Length"] = str(length)
        sent = upload.stream() if body is None else body
    query = outbound.outbound_query(upstream, request.META.get("QUERY_STRING", ""))
    answer: outbound.Answer | checks.Rejection | None = None
    try:
        async with within(deadline):
            answer = await outbound.client.send(
                upstream, facts.method, f"{target}?{query}" if query else target, out_headers, sent
            )
            if isinstance(answer, checks.Rejection):
                return refuse(answer, headers, key_id=key.key_id, outcome=UPSTREAM_ERROR)
            relayed = Relayed(answer.status, relayed_headers(answer, upstream, headers))
            if answer.length is not None and answer.length <= outbound.SMALL_ANSWER_BYTES:
                content = await outbound.read_small_body(answer)
                if isinstance(content, checks.Rejection):
                    return refuse(content, headers, key_id=key.key_id, outcome=UPSTREAM_ERROR)
                relayed.content = content
            else:
                relayed.answer, relayed.deadline = answer, deadline
    except (TimeoutError, ClientGone):
        if isinstance(answer, outbound.Answer):
            answer.close()
        if upload.waiting_on_client:
            return refuse(_slow_client(), headers, key_id=key.key_id)
        return refuse(
            outbound.timeout_rejection(upstream), headers, key_id=key.key_id, outcome=UPSTREAM_ERROR
        )
    usage.count(key.key_id, ALLOWED)
    return relayed


def _slow_client() -> checks.Rejection:
    return checks.reject("request_timeout", "The request body did not arrive in time.")


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def send_answer(response: HttpResponse | Relayed, send: Send) -> None:
    """Send an answer: a Django response of the proxy's own, or the upstream's (streamed when it is
    large or of unknown length, within the call's deadline; cut, never ended cleanly, on failure)."""
    if isinstance(response, HttpResponse):
        fields = [*response.items(), ("Content-Length", str(len(response.content)))]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": _encoded(fields)}
        )
        await send({"type": "http.response.body", "body": response.content})
        return
    start = {
        "type": "http.response.start",
        "status": response.status_code,
        "headers": _encoded(response.headers),
    }
    if response.answer is None:
        await send(start)
        await send({"type": "http.response.body", "body": response.content or b""})
        return
    answer, finished = response.answer, False
    try:
        async with within(response.deadline):
            await send(start)
            async for chunk in answer.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finished = True
    except (TimeoutError, outbound.AnswerFailed, OSError) as exc:
        raise StreamCut(type(exc).__name__) from None
    finally:
        if finished:
            answer.release()
        else:
            answer.close()
    await send({"type": "http.response.body", "body": b""})


def _host_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return bytes(value).decode("latin-1")
    return ""


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await outbound.client.close()
            # The worker stops: what it counted goes to the database now (it may not get another chance).
            await asyncio.to_thread(usage.flush)
            metrics.flush_batch()
            await send({"type": "lifespan.shutdown.complete"})
            return


def with_async_proxy(site: ASGIApp) -> ASGIApp:
    """Serve /proxy/ with the gateway and everything else with `site` (Django's ASGI handler), each only
    on its own hosts when PROXY_HOSTS is set (proxy/hosts.py)."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            route = hosts.route_for(_host_of(scope), scope.get("path", ""))
            if route == "proxy":
                await proxy_call(scope, receive, send)
                return
            if route == "wrong_host":
                await send_answer(views.wrong_host(ProxyRequest(scope)), send)
                return
        elif kind == "websocket":
            from proxy import websocket  # the relay of WebSocket handshakes (it imports this module)

            route = hosts.route_for(_host_of(scope), scope.get("path", ""))
            await websocket.websocket_call(scope, receive, send, route)
            return
        elif kind == "lifespan":
            await _lifespan(receive, send)
            return
        await site(scope, receive, send)

    return application

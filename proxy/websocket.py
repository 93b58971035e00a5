"""The WebSocket relay: `GET /proxy/<upstream>/<key_id>/<path>` with `Upgrade: websocket`.

The handshake passes DESIGN's checks 1-9 through proxy/gate.py, as an HTTP call does (a browser shows
an access token as the `Sec-WebSocket-Protocol` pair `bearer, <token>`); a refusal is the contract's
HTTP error, sent with ASGI's "websocket.http.response" extension, never a 101. The upstream's own
handshake comes next (its WebSocket URL, its credential, the SSRF rule at connect), and only when it
succeeds does the client get its 101.

Then each client message passes the size limit, the key's JSON-RPC method allowlist and its rate limit
and quota (the same functions the HTTP relay calls); a refused one gets a JSON-RPC error reply with its
id and never reaches the upstream, and the socket stays open. Upstream messages (answers and
subscriptions' notifications) flow back as they come.

Every open socket is registered by key (proxy/websocket_registry.py): a watchdog re-admits each one
every PROXY_WS_RECHECK_SECONDS against the policy cache, which every write invalidates, so a revoked,
expired or suspended key, a token revoked or expired, a secret rotated without grace, or an allowlist
that no longer admits the client closes the socket (close code 4000 + the HTTP status, the contract's
code as the reason) within a second.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import ssl
import time
from typing import Any
from urllib.parse import quote_from_bytes, urlsplit

import aiohttp
from django.conf import settings
from django.core.exceptions import DisallowedHost, ValidationError
from django.http import HttpResponse
from yarl import URL

from keys import validators
from keys.log_context import bind_request_id, unbind_request_id
from keys.request_ids import request_id
from proxy import access_log, checks, gate, gateway, invalidation, outbound, report, views
from proxy.gateway import ENCODED_SEPARATOR, VISIBLE_ASCII, Scope, Send
from proxy.policy import KeyPolicy, PolicyUnavailable, UpstreamPolicy
from proxy.ratelimit import limiter
from proxy.request import ProxyRequest, Receive, facts_of, forwarded_headers
from proxy.responses import answer_headers, refuse
from proxy.usage import ALLOWED, REJECTED, UPSTREAM_ERROR, usage
from proxy.websocket_registry import (
    OpenSocket,
    destination_of,
    messages_allowed,
    messages_rejected,
    registry,
)

logger = logging.getLogger(__name__)

# The subprotocol that says the next offered one is an access token: `new WebSocket(url, ["bearer",
# token])`. The proxy echoes `bearer` (never the token) when the upstream picks none of the others.
TOKEN_SUBPROTOCOL = "bearer"  # noqa: S105 - a subprotocol name, not a secret
# The handshake's own fields, which aiohttp writes for the upstream handshake itself.
HANDSHAKE_FIELDS = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
# Upstream messages are the upstream's answers (eth_getLogs can be large); granian's own bound on a
# client message is 64 MiB, and the same bound holds the other way.
UPSTREAM_MESSAGE_MAX = 64 * 1024 * 1024
# JSON-RPC error codes of refused messages, as Infura's endpoint answers them (EIP-1474's -32005 for
# limits, -32002 for the key's own settings) and JSON-RPC 2.0's -32600 for a request it cannot take.
RPC_ERROR_CODES = {
    "rpc_method_not_allowed": -32002,
    "invalid_rpc_request": -32600,
    "payload_too_large": -32600,
    "rate_limited": -32005,
    "quota_exceeded": -32005,
}
# Close codes the proxy may relay from an upstream as they are (RFC 6455 7.4; 1005, 1006 and 1015 are
# never sent on the wire).
RELAYABLE_CLOSE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)}) | frozenset(range(3000, 5000))
UPSTREAM_FAILED = 1014  # "Bad Gateway" in IANA's WebSocket close code registry
GOING_AWAY = 1001


def _http_scope(scope: Scope) -> Scope:
    """The handshake as the HTTP GET it is, for the helpers the relay shares with HTTP calls (its query
    percent-encoded when it holds bytes no upstream should see raw, as proxy/gateway.py does)."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    query = bytes(scope.get("query_string", b""))
    if query and not VISIBLE_ASCII.fullmatch(query):
        query = quote_from_bytes(query, safe=outbound.QUERY_SAFE).encode()
    return {**scope, "type": "http", "method": "GET", "scheme": scheme, "query_string": query}


def offered_token(subprotocols: list[str]) -> tuple[str | None, list[str]]:
    """(the access token of a `bearer, <token>` pair, the other offered subprotocols)."""
    if TOKEN_SUBPROTOCOL not in subprotocols:
        return None, subprotocols
    at = subprotocols.index(TOKEN_SUBPROTOCOL)
    token = subprotocols[at + 1] if at + 1 < len(subprotocols) else ""
    return token, subprotocols[:at] + subprotocols[at + 2 :]


async def send_http_answer(scope: Scope, send: Send, response: HttpResponse) -> None:
    """A refused handshake: the contract's HTTP error (ASGI "websocket.http.response"). A server
    without that extension can only close before accepting (the client sees 403)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    fields = [*response.items(), ("Content-Length", str(len(response.content)))]
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in fields]
    await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": response.content})


async def websocket_call(scope: Scope, receive: Receive, send: Send, route: str) -> None:
    """One WebSocket handshake (proxy/gateway.py routes them here) and, once admitted, its relay."""
    request = ProxyRequest(_http_scope(scope))
    if route != "proxy":
        # The site has no WebSocket endpoint: only the proxy's paths upgrade.
        answer = views.wrong_host(request) if route == "wrong_host" else views.not_found(request)
        await send_http_answer(scope, send, answer)
        return
    match = gateway._RELAY.match(request.path_info[1:])
    access = access_log.begin(request, match["upstream_slug"] if match else None)
    bound = bind_request_id(request_id(request))
    try:
        opened = await _handshake(request, scope, receive, send, match, access)
        if opened is not None:
            await _relay(opened, receive, send)
    finally:
        with contextlib.suppress(ValueError):
            unbind_request_id(bound)


@dataclasses.dataclass(slots=True)
class _Opened:
    socket: OpenSocket
    upstream: aiohttp.ClientWebSocketResponse


async def _handshake(
    request: ProxyRequest,
    scope: Scope,
    receive: Receive,
    send: Send,
    match: Any,
    access: access_log.Access,
) -> _Opened | None:
    """Checks, upstream handshake, 101: the open socket, or None once refused (the access line written
    either way, with 101 or the refusal's status)."""
    status = 500
    try:
        answer = await _admit(request, scope, match)
        if isinstance(answer, HttpResponse):
            status = answer.status_code
            await send_http_answer(scope, send, answer)
            return None
        opened, subprotocol, headers = answer
        try:
            connected = await receive()  # websocket.connect, before the accept
            if connected["type"] == "websocket.disconnect":  # the client left while we connected upstream
                status = 499
                await _forget(opened)
                return None
            # Counted before the accept: after it, nothing may fail into an HTTP answer (below).
            usage.count(opened.socket.key_id, ALLOWED)  # the handshake is one call; each message one more
            # granian 2.8 sends no header of the accept's own: the request id is on the access line.
            accept = [(b"x-request-id", headers["X-Request-Id"].encode())]
            await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": accept})
        except BaseException:
            await _forget(opened)
            raise
        status = 101
        return opened
    except Exception:
        logger.exception("proxy: unexpected error in a WebSocket handshake")
        await send_http_answer(scope, send, views.internal_error(request))
        return None
    finally:
        access_log.end(access, status)


async def _forget(opened: _Opened) -> None:
    registry.remove(opened.socket)
    await opened.upstream.close()


async def _admit(
    request: ProxyRequest, scope: Scope, match: Any
) -> HttpResponse | tuple[_Opened, str | None, dict[str, str]]:
    try:
        request.get_host()
    except DisallowedHost:
        return views.bad_host(request)
    if match is None:
        return views.not_found(request)
    invalidation.start_listener()
    facts = facts_of(request, time.time())
    token, app_subprotocols = offered_token(list(scope.get("subprotocols") or ()))
    if token is not None and not facts.authorization:
        facts = dataclasses.replace(facts, authorization=f"Bearer {token}")
    headers = answer_headers(request_id(request))
    upstream_slug, key_id = match["upstream_slug"], match["key_id"]
    path = None if ENCODED_SEPARATOR.search(scope.get("raw_path") or b"") else (match["path"] or "")
    try:
        admitted = await gateway._with_database(
            gate.admit, facts, request.headers, headers, upstream_slug, key_id
        )
        if isinstance(admitted, HttpResponse):
            return admitted
        destination = destination_of(admitted.upstream)  # as the watchdog will see the upstream
        # The upstream as the socket reaches it: its own WebSocket URL's host, port and path, if it has one.
        admitted = dataclasses.replace(admitted, upstream=websocket_upstream(admitted.upstream))
        upstream, key = admitted.upstream, admitted.key
        target = gate.clear(admitted, facts, headers, None, path, 0)
        if isinstance(target, HttpResponse):
            return target
        socket = OpenSocket(upstream_slug, key, facts, asyncio.get_running_loop(), destination)
        if not await registry.add(socket):
            cap = settings.PROXY_WS_MAX_CONNECTIONS_PER_KEY
            rejection = checks.reject(
                "too_many_connections", f"{key.key_id} already has {cap} WebSocket connections open."
            )
            return refuse(rejection, headers, key_id=key.key_id)
    except PolicyUnavailable:
        return refuse(checks.reject("service_unavailable", "Try again shortly."), headers, key_id=None)
    try:
        query = outbound.outbound_query(upstream, request.META.get("QUERY_STRING", ""))
        client_headers = [
            (name, value) for name, value in request.headers.items() if name.lower() not in HANDSHAKE_FIELDS
        ]
        out_headers = outbound.outbound_headers(
            upstream, client_headers, forwarded=forwarded_headers(request, facts.client_address, headers)
        )
        connected = await _connect_upstream(
            upstream, f"{target}?{query}" if query else target, out_headers, app_subprotocols
        )
    except BaseException:
        registry.remove(socket)  # its place under the cap goes with it
        raise
    if isinstance(connected, checks.Rejection):
        registry.remove(socket)
        return refuse(connected, headers, key_id=key.key_id, outcome=UPSTREAM_ERROR)
    socket.request_id = headers["X-Request-Id"]
    chosen = connected.protocol or (TOKEN_SUBPROTOCOL if token is not None else None)
    return _Opened(socket, connected), chosen, headers


def websocket_upstream(upstream: UpstreamPolicy) -> UpstreamPolicy:
    """The upstream with its WebSocket URL in place of its base URL (scheme http/https standing for
    ws/wss), so the path rule, the Host header and the address check read the URL connected to."""
    if not upstream.websocket_url:
        return upstream
    parts = urlsplit(upstream.websocket_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path.rstrip("/")
    return dataclasses.replace(upstream, scheme=scheme, host=parts.hostname or "", port=port, base_path=path)


_session: aiohttp.ClientSession | None = None


class RedirectRefused(Exception):
    """The upstream answered the handshake with a redirect: never followed (its target was not checked
    against the SSRF rule, and would get the upstream's credential)."""


async def _refuse_redirect(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
    raise RedirectRefused


def _upstream_session() -> aiohttp.ClientSession:
    """One session per process for upstream sockets: an upgraded connection is never pooled, so nothing
    is shared between sockets but the TLS configuration (no cap: each socket holds its connection).
    aiohttp's ws_connect follows redirects and has no option not to: a trace hook refuses them."""
    global _session
    if _session is None or _session.closed:
        no_redirects = aiohttp.TraceConfig()
        no_redirects.on_request_redirect.append(_refuse_redirect)
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=ssl.create_default_context()),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,
            trace_configs=[no_redirects],
        )
    return _session


async def _checked_address(upstream: UpstreamPolicy) -> str:
    """The address to connect to: the SSRF rule of every upstream call (outbound.py), checked again now."""
    if upstream.allow_private_network:
        return upstream.host
    addresses = await asyncio.to_thread(
        validators.check_public_destination, f"{upstream.scheme}://{upstream.host}/"
    )
    return addresses[0]


async def _connect_upstream(
    upstream: UpstreamPolicy, target: str, headers: dict[str, str], subprotocols: list[str]
) -> aiohttp.ClientWebSocketResponse | checks.Rejection:
    """The upstream's handshake within its timeout: its socket, or the refusal to answer (502/504)."""
    try:
        async with asyncio.timeout(upstream.timeout):
            address = await _checked_address(upstream)
            host = f"[{address}]" if ":" in address else address
            scheme = "wss" if upstream.scheme == "https" else "ws"
            url = URL(f"{scheme}://{host}:{upstream.port}{target}", encoded=True)
            ping = settings.PROXY_WS_PING_SECONDS
            return await _upstream_session().ws_connect(
                url,
                headers=headers,
                protocols=subprotocols,
                heartbeat=ping or None,
                max_msg_size=UPSTREAM_MESSAGE_MAX,
                server_hostname=upstream.host if upstream.scheme == "https" else None,
                autoping=True,
            )
    except TimeoutError:
        return outbound.timeout_rejection(upstream)
    except RedirectRefused:
        return checks.reject("upstream_unreachable", "The upstream answered the handshake with a redirect.")
    except ValidationError as exc:
        return checks.reject("upstream_unreachable", f"The upstream cannot be reached: {exc.messages[0]}")
    except aiohttp.WSServerHandshakeError as exc:
        return checks.reject(
            "upstream_unreachable", f"The upstream refused the WebSocket handshake ({exc.status})."
        )
    except aiohttp.ClientSSLError:
        return checks.reject("upstream_unreachable", "The upstream's TLS certificate or handshake failed.")
    except aiohttp.ClientConnectorError:
        return checks.reject("upstream_unreachable", "The upstream refused the connection.")
    except (aiohttp.ClientError, OSError) as exc:
        return checks.reject("upstream_unreachable", f"The upstream failed: {type(exc).__name__}.")
    except ValueError:
        return checks.reject("upstream_unreachable", "The upstream's credential cannot be sent; re-enter it.")


def _message_bytes(data: str | bytes) -> int:
    """A message's size in bytes, without encoding the ones too short to be over any limit."""
    if isinstance(data, bytes):
        return len(data)
    limit = settings.PROXY_WS_MAX_MESSAGE_BYTES
    if len(data) * 4 <= limit or len(data) > limit:  # surely within, or surely over (chars <= bytes)
        return len(data)
    return len(data.encode())


def message_refusal(key: KeyPolicy, data: str | bytes, now: float) -> checks.Rejection | None:
    """One client message against the key: its size, the JSON-RPC method allowlist (single and batch),
    then the rate limit and quota (one unit each, as one HTTP call). None: relay it. What a report-mode
    check would have refused is counted here (proxy/report.py)."""
    if (size := _message_bytes(data)) > (limit := settings.PROXY_WS_MAX_MESSAGE_BYTES):
        return checks.reject("payload_too_large", f"The message is {size} bytes, over {limit}.")
    reported: list[checks.Rejection] = []
    rpc = (
        checks.check_rpc_methods(key, data.encode() if isinstance(data, str) else data)
        if key.rpc_methods
        else None
    )
    rejection = report.enforced(key, reported, rpc)
    if not rejection:
        rejection = report.enforced(key, reported, *limiter.check(key, now).refusals)
    if not rejection:
        report.count_would_reject(usage.count, key.key_id, reported)
    return rejection


def _ids_of(data: str | bytes) -> tuple[bool, list[Any]]:
    """(is a batch, the ids of its calls): null for calls without one or for what is not JSON-RPC."""
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return False, [None]
    calls = payload if isinstance(payload, list) and payload else [payload]
    ids = [call.get("id") if isinstance(call, dict) else None for call in calls]
    return isinstance(payload, list) and bool(payload), ids


# A refused batch longer than this gets one error (id null), not one per call: a 1 MiB batch of a
# million tiny calls must not make the proxy build and send a million error objects.
BATCH_REPLIES_MAX = 100


def rpc_error_reply(data: str | bytes, rejection: checks.Rejection, request_id: str) -> str:
    """The JSON-RPC error answer to a refused message: one per call of a batch (up to
    BATCH_REPLIES_MAX calls), each with its id."""
    batch, ids = _ids_of(data) if len(data) <= settings.PROXY_WS_MAX_MESSAGE_BYTES else (False, [None])
    if len(ids) > BATCH_REPLIES_MAX:
        batch, ids = False, [None]
    error_data: dict[str, Any] = {"code": rejection.code, "request_id": request_id}
    if rejection.retry_after is not None:
        error_data["retry_after"] = rejection.retry_after
    error = {
        "code": RPC_ERROR_CODES.get(rejection.code, -32600),
        "message": rejection.message,
        "data": error_data,
    }
    replies = [{"jsonrpc": "2.0", "id": call_id, "error": error} for call_id in ids]
    return json.dumps(replies if batch else replies[0])


async def _relay(opened: _Opened, receive: Receive, send: Send) -> None:
    """Both directions until one side closes or the watchdog closes the socket."""
    socket, upstream = opened.socket, opened.upstream
    from_client = asyncio.create_task(_from_client(socket, upstream, receive, send))
    from_upstream = asyncio.create_task(_from_upstream(socket, upstream, send))
    try:
        waited: set[asyncio.Future[Any]] = {from_client, from_upstream, socket.closed}
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        if socket.closed.done():  # the proxy closes: the watchdog's reason
            code, reason = socket.closed.result()
        elif _finished(from_client):  # the client closed: the upstream is told with the client's code
            code = from_client.result()
            await upstream.close(code=code if code in RELAYABLE_CLOSE else 1000)
            return
        else:  # the upstream closed, or sending to it failed: its close code, as far as it may pass
            code, reason = _client_close_of(upstream, from_upstream)
        # granian holds a close back while a receive is pending: that receive goes first; and a send
        # to a client that reads nothing must not hold the close (or this socket's place) forever.
        await _cancelled(from_client)
        await _cancelled(from_upstream)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_SECONDS):
                await send({"type": "websocket.close", "code": code, "reason": reason})
    finally:
        for task in (from_client, from_upstream):
            _log_unexpected(task)
        await _cancelled(from_client)
        await _cancelled(from_upstream)
        if not upstream.closed:
            await upstream.close(code=GOING_AWAY)
        registry.remove(socket)


# How long the proxy waits for its close frame to go out to a client before it lets the socket go.
CLOSE_SECONDS = 5


def _log_unexpected(task: asyncio.Task[Any]) -> None:
    """A relay task that failed on something other than a peer's connection: a bug to see in the logs
    (the client got 1014 like for an upstream failure)."""
    if task.done() and not task.cancelled():
        failure = task.exception()
        if failure is not None and not isinstance(failure, aiohttp.ClientError | ConnectionError | OSError):
            logger.error("proxy: a WebSocket relay task failed", exc_info=failure)


def _finished(task: asyncio.Task[Any]) -> bool:
    """Done with a result (not cancelled, not failed)."""
    return task.done() and not task.cancelled() and task.exception() is None


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


def _client_close_of(upstream: aiohttp.ClientWebSocketResponse, task: asyncio.Task[Any]) -> tuple[int, str]:
    """The close code and reason the client gets when the upstream's side ended."""
    if isinstance(upstream.exception(), (aiohttp.ServerTimeoutError, TimeoutError)):
        return UPSTREAM_FAILED, "upstream_timeout"  # no pong in time
    code = upstream.close_code
    if code in RELAYABLE_CLOSE:
        reason = task.result() if _finished(task) else ""
        return code, reason.encode()[:123].decode(errors="ignore")  # a close frame holds 123 bytes of it
    if code == 1005:  # closed without a code: a normal end
        return 1000, ""
    return UPSTREAM_FAILED, "upstream_unreachable"


async def _from_client(
    socket: OpenSocket, upstream: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send
) -> int:
    """Client messages, checked one by one; returns the client's close code."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return int(message.get("code") or 1000)
        if message["type"] != "websocket.receive":
            continue
        text = message.get("text")
        data: str | bytes = text if text is not None else bytes(message.get("bytes") or b"")
        socket.touch()
        rejection = message_refusal(socket.key, data, time.time())
        if rejection is not None:
            usage.count(socket.key_id, REJECTED, rejection.code, rejection.detail)
            messages_rejected.inc()
            await send(
                {"type": "websocket.send", "text": rpc_error_reply(data, rejection, socket.request_id)}
            )
            continue
        if isinstance(data, str):
            await upstream.send_str(data)
        else:
            await upstream.send_bytes(data)
        usage.count(socket.key_id, ALLOWED)
        messages_allowed.inc()


async def _from_upstream(socket: OpenSocket, upstream: aiohttp.ClientWebSocketResponse, send: Send) -> str:
    """Upstream messages to the client as they come; returns the upstream's close reason."""
    while True:
        message = await upstream.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            socket.touch()
            await send({"type": "websocket.send", "text": message.data})
        elif message.type == aiohttp.WSMsgType.BINARY:
            socket.touch()
            await send({"type": "websocket.send", "bytes": message.data})
        elif message.type == aiohttp.WSMsgType.CLOSE:
            return str(message.extra or "")
        elif message.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ""

"""The outbound side: the pooled async client, the outbound URL and headers, and error mapping.

The client is proxy/http1.py's (keep-alive pools over llhttp, measured at about half aiohttp's
client's cost per call, which was itself a fifth of httpx's AsyncClient's). Connections go to
the address that was checked: a tenant's upstream is resolved, every address must be public, and the
client connects to that address while sending the upstream's host name (Host, SNI, certificate check)
— so DNS rebinding cannot turn a checked name into a private one.
"""

import asyncio
import base64
import functools
import re
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import quote, quote_plus, unquote_plus, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from keys import validators
from keys.models import AuthType
from keys.validators import HOP_BY_HOP
from proxy import http1, metrics
from proxy.checks import Rejection, reject
from proxy.http1 import AnswerFailed
from proxy.lazy import lazy
from proxy.policy import UpstreamPolicy

# Never forwarded upstream: the client's own credentials, what the proxy sets itself, and the headers
# by which an upstream's framework would believe the client about its address, scheme, host or path
# (the proxy sets X-Forwarded-For/-Proto/-Host itself, from the trusted-proxy rule; every other
# x-forwarded-* is dropped by prefix).
REQUEST_DROPPED = HOP_BY_HOP | {
    "authorization",
    "cookie",
    "host",
    "content-length",
    "x-request-id",
    "traceparent",  # the proxy sends its own (proxy/tracing.py), tracestate only with a valid one
    "tracestate",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
}
RESPONSE_DROPPED = HOP_BY_HOP | {"set-cookie", "x-request-id"}
PATH_UNSAFE = re.compile(r"%(2e|2f|5c|00|25)|[\x00-\x1f\x7f\\]", re.IGNORECASE)
CHUNK_SIZE = 64 * 1024  # the most of a streamed answer handed to the server at once (its queue holds 4)
# Answers up to this size (by their Content-Length) are read whole and written in one go; larger or
# unknown-length answers are streamed.
SMALL_ANSWER_BYTES = 64 * 1024
# The largest Content-Length believed (a petabyte): past it the number cannot be true, and servers that
# keep lengths in 63 or 64 bits fail on it.
MAX_ANSWER_LENGTH = 10**15
# The longest answer header line read from an upstream (aiohttp's default is 8 KiB, nginx's 4 to 8); a
# longer one is a failed answer (502).
MAX_FIELD_BYTES = 32 * 1024


# What the relay sends upstream: bytes it already read (a JSON-RPC or chunked body), or the client's body
# as it arrives.
RequestBody = http1.RequestBody


class UpstreamBlocked(Exception):
    """The upstream's host resolves to an address this upstream may not reach."""


def outbound_path(upstream: UpstreamPolicy, path: str) -> str | None:
    """The upstream request path for the proxied `path` (already percent-decoded once by the server),
    or None when it could leave the base path: dot segments (also with matrix parameters, `..;`), empty
    segments (`//host`), encoded separators or dots left after decoding (`%252e`), backslashes and
    control characters."""
    if len(path) > CACHED_PATH_CHARS:
        return _outbound_path.__wrapped__(upstream.base_path, path)
    return _outbound_path(upstream.base_path, path)


# Most calls of a key repeat a few paths (a JSON-RPC endpoint has one): each short one is worked out
# once, in a cache of bounded size (at most 4096 entries of up to 256 characters).
CACHED_PATH_CHARS = 256


@functools.lru_cache(maxsize=4096)
def _outbound_path(base_path: str, path: str) -> str | None:
    if PATH_UNSAFE.search(path):
        return None
    segments = path.split("/") if path else []
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash is kept below, as the client sent it
    # A segment's matrix parameters (`..;x`, `.;/`) are cut off by Tomcat, Jetty and Spring before they
    # resolve dot segments, so `..;` climbs there: judge each segment by what precedes its first `;`.
    if any(segment.partition(";")[0] in ("", ".", "..") for segment in segments):
        return None
    tail = "/".join(quote(segment, safe="!$&'()*+,;=:@-._~") for segment in segments)
    trailing = "/" if path.endswith("/") and tail else ""
    return f"{base_path}/{tail}{trailing}" if tail else (base_path or "/")


# Every visible ASCII character passes as the client sent it; anything else (bytes over 0x7f, controls,
# spaces) is percent-encoded, so no query can make a request line the upstream would misread.
QUERY_SAFE = "".join(chr(code) for code in range(0x21, 0x7F))


def outbound_query(upstream: UpstreamPolicy, query_string: str) -> str:
    """The client's query string, with the upstream's credential parameter added (replacing the client's)."""
    if not query_string.isascii() or not query_string.isprintable() or " " in query_string:
        query_string = quote(query_string, safe=QUERY_SAFE, encoding="latin-1")
    if upstream.auth_type != AuthType.QUERY:
        return query_string
    name = quote(upstream.auth_name, safe="")
    kept = [part for part in query_string.split("&") if part and part.split("=", 1)[0] != name]
    kept.append(urlencode({upstream.auth_name: upstream.auth_value}))
    return "&".join(kept)


def credential_header(upstream: UpstreamPolicy) -> tuple[str, str] | None:
    if upstream.auth_type == AuthType.BEARER:
        return "Authorization", f"Bearer {upstream.auth_value}"
    if upstream.auth_type == AuthType.BASIC:
        pair = f"{upstream.auth_name}:{upstream.auth_value}".encode()
        return "Authorization", "Basic " + base64.b64encode(pair).decode()
    if upstream.auth_type == AuthType.HEADER:
        return upstream.auth_name, upstream.auth_value
    return None


def outbound_headers(
    upstream: UpstreamPolicy, client_headers: list[tuple[str, str]], *, forwarded: dict[str, str]
) -> dict[str, str]:
    """Client headers minus hop-by-hop (and any the client's Connection names), credentials and
    Proxy-*, plus X-Forwarded-*, Host and the upstream's own credential."""
    connection_named: set[str] = set()
    for name, value in client_headers:
        if name.lower() == "connection":
            connection_named.update(token.strip().lower() for token in value.split(","))
    credential = credential_header(upstream)
    credential_name = credential[0].lower() if credential else None
    headers: dict[str, str] = {}
    for name, value in client_headers:
        lower = name.lower()
        if (
            lower in REQUEST_DROPPED
            or lower in connection_named
            or lower.startswith(("proxy-", "x-forwarded-"))
        ):
            continue
        if lower == credential_name:
            continue
        headers[name] = value
    default_port = 443 if upstream.scheme == "https" else 80
    headers["Host"] = upstream.host if upstream.port == default_port else f"{upstream.host}:{upstream.port}"
    headers.update(forwarded)
    if credential:
        headers[credential[0]] = credential[1]
    return headers


# RFC 9110 field names are tokens; values are visible characters, spaces and tabs. Anything else from
# an upstream is dropped, never passed to the server (which would fail the whole answer).
FIELD_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
FIELD_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
OBS_FOLD = re.compile(r"\r?\n[ \t]+")
URL_HEADERS = frozenset({"location", "content-location"})
# Below this length a credential is too short to look for inside other text without false matches.
CREDENTIAL_SEARCH_MIN = 6


@functools.lru_cache(maxsize=1024)
def _credential_forms(auth_type: str, auth_name: str, auth_value: str) -> tuple[str, ...]:
    """The spellings of an upstream credential that must never travel back to the caller."""
    if auth_type == AuthType.NONE or len(auth_value) < CREDENTIAL_SEARCH_MIN:
        return ()
    forms = {auth_value, quote(auth_value, safe=""), quote_plus(auth_value, safe="")}
    if auth_type == AuthType.BASIC:
        forms.add(base64.b64encode(f"{auth_name}:{auth_value}".encode()).decode())
    return tuple(forms)


def _without_query_credential(url: str, parameter: str) -> str:
    """`url` minus the query parameter the upstream's credential travels in (an upstream redirect may
    repeat the query it was sent)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [part for part in parts.query.split("&") if unquote_plus(part.split("=", 1)[0]) != parameter]
    return urlunsplit(parts._replace(query="&".join(kept)))


class RawFields:
    """An answer's header lines as received (llhttp's name and value bytes), decoded once, with what
    the relay asks of them gathered in the same pass: the Content-Length values, whether a
    Transfer-Encoding came, and the names its Connection header lists."""

    __slots__ = ("lines", "lowered", "lengths", "chunked", "connection_named")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.lines: list[tuple[str, str]] = []
        self.lowered: list[str] = []
        self.lengths: list[str] = []
        self.chunked = False
        self.connection_named: set[str] = set()
        for raw_name, raw_value in raw:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            lower = name.lower()
            self.lines.append((name, value))
            self.lowered.append(lower)
            if lower == "content-length":
                self.lengths.append(value.strip())
            elif lower == "transfer-encoding":
                self.chunked = True
            elif lower == "connection":
                self.connection_named.update(token.strip().lower() for token in value.split(","))


def response_headers(fields: RawFields, upstream: UpstreamPolicy) -> list[tuple[str, str]]:
    """Upstream answer headers minus hop-by-hop, Set-Cookie, Access-Control-* (the proxy answers CORS),
    malformed fields, and anything that carries the upstream's own credential."""
    credential = credential_header(upstream)
    credential_name = credential[0].lower() if credential else None
    secrets = _credential_forms(upstream.auth_type, upstream.auth_name, upstream.auth_value)
    query_credential = upstream.auth_type == AuthType.QUERY
    connection_named, chunked = fields.connection_named, fields.chunked
    kept: list[tuple[str, str]] = []
    for (name, value), lower in zip(fields.lines, fields.lowered, strict=True):
        if (
            lower in RESPONSE_DROPPED
            or lower in connection_named
            or lower.startswith("access-control-")
            or lower == credential_name
            or (chunked and lower == "content-length")  # RFC 9112 6.1: chunked overrides it
            or not FIELD_NAME.match(name)
        ):
            continue
        if "\n" in value:  # RFC 9112 5.2: a proxy replaces obs-fold by spaces
            value = OBS_FOLD.sub(" ", value)
        value = value.strip()
        if FIELD_VALUE_FORBIDDEN.search(value):
            continue
        if query_credential and lower in URL_HEADERS:
            value = _without_query_credential(value, upstream.auth_name)
        if secrets and any(secret in value for secret in secrets):
            continue
        kept.append((name, value))
    return kept


def _believable_length(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= MAX_ANSWER_LENGTH


def answer_problem(status: int, fields: RawFields) -> Rejection | None:
    """A refusal for an upstream answer no client should get: a status outside 200-599 or a
    Content-Length that is not one number (RFC 9112 6.3: a proxy answers 502 for it)."""
    if not 200 <= status <= 599:
        return reject("upstream_unreachable", f"The upstream answered with status {status}.")
    lengths = fields.lengths
    if lengths and not fields.chunked:
        if len(set(lengths)) > 1 or not all(_believable_length(length) for length in lengths):
            return reject("upstream_unreachable", "The upstream sent an invalid Content-Length.")
    return None


class Answer:
    """The upstream's answer: status and header lines read, the body not yet."""

    __slots__ = ("exchange", "status", "fields", "length")

    def __init__(self, exchange: http1.Exchange, fields: RawFields) -> None:
        self.exchange, self.status, self.fields = exchange, exchange.status, fields
        # The body's length when the upstream said it (not chunked); answer_problem vouched for it.
        self.length = int(fields.lengths[0]) if fields.lengths and not fields.chunked else None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it comes; an answer cut short raises AnswerFailed, so the caller can cut its own
        answer too rather than end it as if complete."""
        while chunk := await self.exchange.read(CHUNK_SIZE):
            yield chunk

    def release(self) -> None:
        """The body was read to its end: the connection may serve another call."""
        self.exchange.finish()

    def close(self) -> None:
        """The body was not read to its end: what is left on the connection cannot be trusted."""
        self.exchange.connection.abort()
        self.exchange.finish()


class Client:
    """Connections per checked upstream address, shared by every call of the process (its event loop).

    One pool per (scheme, address, port, host name): a TLS connection opened for one host name is
    never reused for another host behind the same address."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, int, str], http1.Pool] = {}
        self._addresses: dict[str, tuple[float, str]] = {}
        self._tls = ssl.create_default_context()

    async def _address(self, upstream: UpstreamPolicy) -> str:
        if upstream.allow_private_network:
            return upstream.host
        cached = self._addresses.get(upstream.host)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:  # a DNS lookup blocks: on a thread, within the caller's deadline
            addresses = await asyncio.to_thread(
                validators.check_public_destination, f"{upstream.scheme}://{upstream.host}/"
            )
        except ValidationError as exc:
            raise UpstreamBlocked(exc.messages[0]) from exc
        self._addresses[upstream.host] = (now + settings.PROXY_DNS_CACHE_SECONDS, addresses[0])
        return addresses[0]

    def _pool(self, upstream: UpstreamPolicy, address: str) -> http1.Pool:
        pool_key = (upstream.scheme, address, upstream.port, upstream.host)
        pool = self._pools.get(pool_key)
        if pool is None:
            tls = upstream.scheme == "https"
            pool = http1.Pool(
                address,
                upstream.port,
                tls=self._tls if tls else None,
                server_hostname=upstream.host if tls else None,  # SNI and the certificate's name
                limit=settings.PROXY_POOL_SIZE,
                keepalive_seconds=settings.PROXY_KEEPALIVE_SECONDS,
                max_field_bytes=MAX_FIELD_BYTES,
            )
            self._pools[pool_key] = pool
        return pool

    async def send(
        self,
        upstream: UpstreamPolicy,
        method: str,
        target: str,
        headers: dict[str, str],
        body: RequestBody,
    ) -> Answer | Rejection:
        """Send the request and wait for the answer's headers (the caller bounds the wait by its
        deadline); returns the answer, its body not read yet, or the refusal to answer instead."""
        sent = time.perf_counter()
        try:
            head = http1.encode_head(method, target, headers)
        except ValueError:
            # A header value with a line break: a credential stored before such values were refused
            # at save. The upstream cannot be called until it is re-entered.
            return reject("upstream_unreachable", "The upstream's credential cannot be sent; re-enter it.")
        try:
            address = await self._address(upstream)
            exchange = await self._pool(upstream, address).request(head, body, head_only=method == "HEAD")
        except UpstreamBlocked as exc:
            return reject("upstream_unreachable", f"The upstream cannot be reached: {exc}")
        except http1.ConnectFailed as exc:
            if exc.tls:
                return reject("upstream_unreachable", "The upstream's TLS certificate or handshake failed.")
            return reject("upstream_unreachable", "The upstream refused the connection.")
        except http1.AnswerFailed:
            return reject("upstream_unreachable", "The upstream failed: its answer could not be read.")
        finally:
            metrics.upstream_answered(upstream.slug, sent)
        fields = RawFields(exchange.lines)
        if problem := answer_problem(exchange.status, fields):
            exchange.connection.abort()  # never reused: what follows on this connection cannot be trusted
            exchange.finish()
            return problem
        return Answer(exchange, fields)

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


async def read_small_body(answer: Answer) -> bytes | Rejection:
    """The whole answer of known small length (the caller bounds it by its deadline), or 502 for an
    answer cut short."""
    parts: list[bytes] = []
    try:
        while part := await answer.exchange.read(SMALL_ANSWER_BYTES):
            parts.append(part)
    except (AnswerFailed, OSError):
        answer.close()
        return reject("upstream_unreachable", "The upstream's answer ended early.")
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    if answer.length is not None and len(body) != answer.length:
        answer.close()
        return reject("upstream_unreachable", "The upstream's answer ended early.")
    answer.release()
    return body


def timeout_rejection(upstream: UpstreamPolicy) -> Rejection:
    return reject("upstream_timeout", f"The upstream did not answer within {upstream.timeout:g} s.")


# One client per process: its sessions belong to the event loop that first used them (the server
# worker's, or the bridge's under WSGI), and every call of the process runs on that loop.
client = lazy(Client)

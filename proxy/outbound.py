"""The outbound side: the pooled client, the outbound URL and headers, streaming, and error mapping.

urllib3 was measured the cheapest pooled client for a synchronous relay (about half httpx's CPU per
request). Connections go to the address that was checked: a tenant's upstream is resolved, every
address must be public, and the pool connects to that address while sending the upstream's host
name (Host, SNI, certificate check) — so DNS rebinding cannot turn a checked name into a private one.
"""

import base64
import functools
import re
import threading
import time
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import quote, quote_plus, unquote_plus, urlencode, urlsplit, urlunsplit

import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from urllib3 import BaseHTTPResponse
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    TimeoutError,
)

from keys import validators
from keys.models import AuthType
from keys.validators import HOP_BY_HOP
from proxy import metrics
from proxy.checks import Rejection, reject
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
CHUNK_SIZE = 64 * 1024
# Answers up to this size (by their Content-Length) are read whole and written in one go; larger or
# unknown-length answers are streamed.
SMALL_ANSWER_BYTES = 64 * 1024
# The largest Content-Length believed (a petabyte): past it the number cannot be true, and servers that
# keep lengths in 63 or 64 bits fail on it.
MAX_ANSWER_LENGTH = 10**15


class FieldLines(Protocol):
    """Headers as received, a repeated field kept as its several lines (urllib3's HTTPHeaderDict)."""

    def __contains__(self, name: object, /) -> bool:
        """Case-insensitive."""
        ...

    def getlist(self, name: str, /) -> list[str]:
        """Every value of the field, one per line it came in."""
        ...

    def iteritems(self) -> Iterator[tuple[str, str]]:
        """Every (name, value) line, repeated fields included, in the order received."""
        ...


# What the relay sends upstream: bytes it already read (a JSON-RPC or chunked body), or the request itself,
# which urllib3 reads in blocks as it sends.
RequestBody = bytes | HttpRequest | None


class UpstreamBlocked(Exception):
    """The upstream's host resolves to an address this upstream may not reach."""


def outbound_path(upstream: UpstreamPolicy, path: str) -> str | None:
    """The upstream request path for the proxied `path` (already percent-decoded once by the server),
    or None when it could leave the base path: dot segments (also with matrix parameters, `..;`), empty
    segments (`//host`), encoded separators or dots left after decoding (`%252e`), backslashes and
    control characters."""
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
    return f"{upstream.base_path}/{tail}{trailing}" if tail else (upstream.base_path or "/")


def outbound_query(upstream: UpstreamPolicy, query_string: str) -> str:
    """The client's query string, with the upstream's credential parameter added (replacing the client's)."""
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


def response_headers(upstream_headers: FieldLines, upstream: UpstreamPolicy) -> list[tuple[str, str]]:
    """Upstream answer headers minus hop-by-hop, Set-Cookie, Access-Control-* (the proxy answers CORS),
    malformed fields, and anything that carries the upstream's own credential."""
    connection_named = {
        token.strip().lower()
        for value in upstream_headers.getlist("connection")
        for token in value.split(",")
    }
    chunked = "transfer-encoding" in upstream_headers
    credential = credential_header(upstream)
    credential_name = credential[0].lower() if credential else None
    secrets = _credential_forms(upstream.auth_type, upstream.auth_name, upstream.auth_value)
    kept: list[tuple[str, str]] = []
    for name, value in upstream_headers.iteritems():
        lower = name.lower()
        if (
            lower in RESPONSE_DROPPED
            or lower in connection_named
            or lower.startswith("access-control-")
            or lower == credential_name
            or (lower == "content-length" and chunked)  # RFC 9112 6.1: chunked overrides it
            or not FIELD_NAME.match(name)
        ):
            continue
        value = OBS_FOLD.sub(" ", value).strip()  # RFC 9112 5.2: a proxy replaces obs-fold by spaces
        if FIELD_VALUE_FORBIDDEN.search(value):
            continue
        if lower in URL_HEADERS and upstream.auth_type == AuthType.QUERY:
            value = _without_query_credential(value, upstream.auth_name)
        if any(secret in value for secret in secrets):
            continue
        kept.append((name, value))
    return kept


def _believable_length(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= MAX_ANSWER_LENGTH


def answer_problem(response: BaseHTTPResponse) -> Rejection | None:
    """A refusal for an upstream answer no client should get: a status outside 200-599 or a
    Content-Length that is not one number (RFC 9112 6.3: a proxy answers 502 for it)."""
    if not 200 <= response.status <= 599:
        return reject("upstream_unreachable", f"The upstream answered with status {response.status}.")
    lengths = {value.strip() for value in response.headers.getlist("content-length")}
    if "transfer-encoding" not in response.headers and (
        len(lengths) > 1
        or any(
            not (length.isascii() and length.isdigit()) or int(length) > MAX_ANSWER_LENGTH
            for length in lengths
        )
    ):
        return reject("upstream_unreachable", "The upstream sent an invalid Content-Length.")
    return None


class Client:
    """Connection pools per upstream address, shared by every request of the process."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._addresses: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def _address(self, upstream: UpstreamPolicy) -> str:
        if upstream.allow_private_network:
            return upstream.host
        cached = self._addresses.get(upstream.host)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            addresses = validators.check_public_destination(f"{upstream.scheme}://{upstream.host}/")
        except ValidationError as exc:
            raise UpstreamBlocked(exc.messages[0]) from exc
        self._addresses[upstream.host] = (now + settings.PROXY_DNS_CACHE_SECONDS, addresses[0])
        return addresses[0]

    def pool(self, upstream: UpstreamPolicy) -> urllib3.HTTPConnectionPool:
        address = self._address(upstream)
        pool_key = (upstream.scheme, address, upstream.port, upstream.host)
        pool = self._pools.get(pool_key)
        if pool is None:
            with self._lock:
                pool = self._pools.get(pool_key)
                if pool is None:
                    size = settings.PROXY_POOL_SIZE
                    if upstream.scheme == "https":
                        pool = urllib3.HTTPSConnectionPool(
                            address,
                            upstream.port,
                            server_hostname=upstream.host,
                            assert_hostname=upstream.host,
                            cert_reqs="CERT_REQUIRED",
                            maxsize=size,
                            block=False,
                            retries=False,
                        )
                    else:
                        pool = urllib3.HTTPConnectionPool(
                            address, upstream.port, maxsize=size, block=False, retries=False
                        )
                    self._pools[pool_key] = pool
        return pool

    def send(
        self,
        upstream: UpstreamPolicy,
        method: str,
        target: str,
        headers: dict[str, str],
        body: RequestBody,
        deadline: float,
    ) -> BaseHTTPResponse | Rejection:
        """Send the request; returns the upstream's answer (its body not read yet) or the refusal to answer
        instead."""
        remaining, sent = deadline - time.monotonic(), time.perf_counter()
        try:
            pool = self.pool(upstream)
            response = pool.urlopen(
                method,
                target,
                body=body,
                headers=headers,
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                timeout=urllib3.Timeout(connect=remaining, read=remaining),
            )
        except UpstreamBlocked as exc:
            return reject("upstream_unreachable", f"The upstream cannot be reached: {exc}")
        except NewConnectionError:  # before the timeouts: urllib3 makes it a ConnectTimeoutError subclass
            return reject("upstream_unreachable", "The upstream refused the connection.")
        except (ConnectTimeoutError, ReadTimeoutError, TimeoutError):
            return timeout_rejection(upstream)
        except HTTPError as exc:
            return reject("upstream_unreachable", f"The upstream failed: {type(exc).__name__}.")
        except ValueError:
            # http.client refuses a header value with a line break: a credential stored before such
            # values were refused at save. The upstream cannot be called until it is re-entered.
            return reject("upstream_unreachable", "The upstream's credential cannot be sent; re-enter it.")
        finally:
            metrics.upstream_answered(upstream.slug, sent)
        if problem := answer_problem(response):
            response.close()  # never reused: what follows on this connection cannot be trusted
            return problem
        return response


def stream_body(response: BaseHTTPResponse, deadline: float) -> Iterator[bytes]:
    """The upstream answer in chunks, within the total deadline; the connection goes back to the
    pool only when the body was read to its end."""
    finished = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # past the deadline: cut the answer short and drop the connection
            sock = getattr(response.connection, "sock", None)
            if sock is not None:
                sock.settimeout(remaining)
            chunk = response.read1(CHUNK_SIZE) if hasattr(response, "read1") else response.read(CHUNK_SIZE)
            if not chunk:
                finished = True
                return
            yield chunk
    except (HTTPError, OSError):
        return
    finally:
        if finished:
            response.release_conn()
        else:
            response.close()


def read_small_body(
    response: BaseHTTPResponse, upstream: UpstreamPolicy, deadline: float
) -> tuple[bytes, Rejection | None]:
    """The whole answer of known small length, within the deadline; or the refusal to answer instead:
    504 past the deadline, 502 for an answer cut short."""
    parts: list[bytes] = []
    try:
        # Piece by piece, each read bounded by what is left of the deadline: one read() of the whole
        # length would give every socket read the full timeout again, so an upstream sending a byte a
        # second would hold the call for as many seconds as the answer has bytes.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                response.close()
                return b"", timeout_rejection(upstream)
            sock = getattr(response.connection, "sock", None)
            if sock is not None:
                sock.settimeout(remaining)
            part = response.read1(CHUNK_SIZE)
            if not part:
                break
            parts.append(part)
        body = b"".join(parts)
    except (ReadTimeoutError, TimeoutError):
        response.close()
        return b"", timeout_rejection(upstream)
    except (HTTPError, OSError):
        response.close()
        return b"", reject("upstream_unreachable", "The upstream's answer ended early.")
    response.release_conn()
    return body, None


def timeout_rejection(upstream: UpstreamPolicy) -> Rejection:
    return reject("upstream_timeout", f"The upstream did not answer within {upstream.timeout:g} s.")


client = lazy(Client)

"""The outbound side: the pooled client, the outbound URL and headers, streaming, and error mapping.

urllib3 was measured the cheapest pooled client for a synchronous relay (about half httpx's CPU per
request). Connections go to the address that was checked: a tenant's upstream is resolved, every
address must be public, and the pool connects to that address while sending the upstream's host
name (Host, SNI, certificate check) — so DNS rebinding cannot turn a checked name into a private one.
"""

import base64
import re
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    TimeoutError,
)

from keys import validators
from keys.models import AuthType
from proxy.checks import Rejection, reject
from proxy.policy import UpstreamPolicy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Never forwarded upstream: the client's own credentials and what the proxy sets itself.
REQUEST_DROPPED = HOP_BY_HOP | {
    "authorization",
    "cookie",
    "host",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
}
RESPONSE_DROPPED = HOP_BY_HOP | {"set-cookie", "x-request-id"}
PATH_UNSAFE = re.compile(r"%(2e|2f|5c|00|25)|[\x00-\x1f\x7f\\]", re.IGNORECASE)
CHUNK_SIZE = 64 * 1024
# Answers up to this size (by their Content-Length) are read whole and written in one go; larger or
# unknown-length answers are streamed.
SMALL_ANSWER_BYTES = 64 * 1024


class UpstreamBlocked(Exception):
    """The upstream's host resolves to an address this upstream may not reach."""


def outbound_path(upstream: UpstreamPolicy, path: str) -> str | None:
    """The upstream request path for the proxied `path` (already percent-decoded once by the server),
    or None when it could leave the base path: dot segments, empty segments (`//host`), encoded
    separators or dots left after decoding (`%252e`), backslashes and control characters."""
    if PATH_UNSAFE.search(path):
        return None
    segments = path.split("/") if path else []
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash is kept below, as the client sent it
    if any(segment in ("", ".", "..") for segment in segments):
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
    connection_named = set()
    for name, value in client_headers:
        if name.lower() == "connection":
            connection_named.update(token.strip().lower() for token in value.split(","))
    credential = credential_header(upstream)
    credential_name = credential[0].lower() if credential else None
    headers: dict[str, str] = {}
    for name, value in client_headers:
        lower = name.lower()
        if lower in REQUEST_DROPPED or lower in connection_named or lower.startswith("proxy-"):
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


def response_headers(upstream_headers) -> list[tuple[str, str]]:
    """Upstream answer headers minus hop-by-hop, Set-Cookie and Access-Control-* (the proxy answers CORS)."""
    connection_named = {
        token.strip().lower()
        for value in upstream_headers.getlist("connection")
        for token in value.split(",")
    }
    return [
        (name, value)
        for name, value in upstream_headers.iteritems()
        if (lower := name.lower()) not in RESPONSE_DROPPED
        and lower not in connection_named
        and not lower.startswith("access-control-")
    ]


class Client:
    """Connection pools per upstream address, shared by every request of the process."""

    def __init__(self) -> None:
        self._pools: dict[tuple, urllib3.HTTPConnectionPool] = {}
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
                    options = {"maxsize": settings.PROXY_POOL_SIZE, "block": False, "retries": False}
                    if upstream.scheme == "https":
                        pool = urllib3.HTTPSConnectionPool(
                            address,
                            upstream.port,
                            server_hostname=upstream.host,
                            assert_hostname=upstream.host,
                            cert_reqs="CERT_REQUIRED",
                            **options,
                        )
                    else:
                        pool = urllib3.HTTPConnectionPool(address, upstream.port, **options)
                    self._pools[pool_key] = pool
        return pool

    def send(
        self,
        upstream: UpstreamPolicy,
        method: str,
        target: str,
        headers: dict[str, str],
        body,
        deadline: float,
    ):
        """Send the request; returns (urllib3 response, None) or (None, Rejection)."""
        remaining = deadline - time.monotonic()
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
            return None, reject("upstream_unreachable", f"The upstream cannot be reached: {exc}")
        except NewConnectionError:  # before the timeouts: urllib3 makes it a ConnectTimeoutError subclass
            return None, reject("upstream_unreachable", "The upstream refused the connection.")
        except (ConnectTimeoutError, ReadTimeoutError, TimeoutError):
            return None, timeout_rejection(upstream)
        except HTTPError as exc:
            return None, reject("upstream_unreachable", f"The upstream failed: {type(exc).__name__}.")
        return response, None


def stream_body(response, deadline: float) -> Iterator[bytes]:
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


def read_small_body(response, deadline: float) -> bytes | None:
    """The whole answer of known small length, within the deadline; None if the deadline passed."""
    try:
        sock = getattr(response.connection, "sock", None)
        if sock is not None:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
        body = response.read()
    except (HTTPError, OSError):
        response.close()
        return None
    response.release_conn()
    return body


def timeout_rejection(upstream: UpstreamPolicy) -> Rejection:
    return reject("upstream_timeout", f"The upstream did not answer within {upstream.timeout:g} s.")


client = Client()

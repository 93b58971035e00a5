"""What the relay reads from the incoming request: its id, the client address, and the body."""

from django.conf import settings
from django.http import HttpRequest

from keys.client_address import client_address
from proxy import checks, tracing
from proxy.policy import KeyPolicy

# Headers with which a client asks a framework to treat the request as another method.
METHOD_OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")
# Where a chunked body, once read, is kept for the rest of the request: a key of its WSGI environ
# (request.META), named as PEP 3333 names extensions; never a header, so never sent upstream.
CHUNKED_BODY = "proxy.chunked_body"


def facts_of(request: HttpRequest, now: float) -> checks.Facts:
    """What the checks read of the request."""
    return checks.Facts(
        method=request.method or "",  # None only on an HttpRequest made by hand; every handler sets it
        origin=request.headers.get("Origin"),
        authorization=request.headers.get("Authorization", ""),
        client_address=client_address(request),
        user_agent=request.headers.get("User-Agent", ""),
        now=now,
        method_overrides=tuple(
            value.strip().upper() for name in METHOD_OVERRIDES if (value := request.headers.get(name))
        ),
    )


def forwarded_headers(request: HttpRequest, ip: str, answer_headers: dict[str, str]) -> dict[str, str]:
    """The X-Forwarded-*, X-Request-Id and trace context headers the proxy itself sends upstream."""
    return {
        "X-Forwarded-For": ip,
        "X-Forwarded-Proto": request.scheme,
        "X-Forwarded-Host": request.META.get("HTTP_HOST", ""),
        "X-Request-Id": answer_headers["X-Request-Id"],
        **tracing.upstream_trace_headers(tracing.trace_of(request)),
    }


def _chunked(request: HttpRequest) -> bool:
    return "CONTENT_LENGTH" not in request.META and "chunked" in request.META.get(
        "HTTP_TRANSFER_ENCODING", ""
    )


def _chunked_body(request: HttpRequest) -> bytes:
    """A chunked request body (the server has de-chunked it), read once and at most one byte over the
    limit: its length is only known at the end, and 413 must come before any upstream byte."""
    body: bytes | None = request.META.get(CHUNKED_BODY)
    if body is None:
        stream, limit, size = request.META["wsgi.input"], settings.PROXY_MAX_BODY_BYTES, 0
        parts: list[bytes] = []
        while size <= limit:
            part = stream.read(min(65536, limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
        body = request.META[CHUNKED_BODY] = b"".join(parts)
    return body


def content_length(request: HttpRequest) -> int:
    """The body's length: as declared, or as read for a chunked body; 0 for none or a malformed one."""
    if _chunked(request):
        return len(_chunked_body(request))
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def body_to_send(request: HttpRequest) -> bytes | HttpRequest:
    """The body for urllib3: the request itself (streamed in blocks as it is sent) or, when it came
    chunked, the bytes already read."""
    return _chunked_body(request) if _chunked(request) else request


def check_rpc_body(request: HttpRequest, key: KeyPolicy) -> tuple[bytes | None, checks.Rejection | None]:
    """For a key with a JSON-RPC allowlist: (the body, read once, and the method check's verdict).
    A body over the size limit is left for check_body_size to refuse."""
    length = content_length(request)
    if not key.rpc_methods or length > settings.PROXY_MAX_BODY_BYTES:
        return None, None
    if _chunked(request):
        body = _chunked_body(request)
    else:
        body = request.read(length) if length else b""
    return body, checks.check_rpc_methods(key, body)


def check_body_size(request: HttpRequest) -> checks.Rejection | None:
    """413 for a body over PROXY_MAX_BODY_BYTES."""
    limit = settings.PROXY_MAX_BODY_BYTES
    if content_length(request) > limit:
        return checks.reject("payload_too_large", f"The request body is over {limit} bytes.")
    return None

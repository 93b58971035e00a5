"""What the relay reads from the incoming request: the facts the checks read, and the body."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.http import HttpRequest

from keys.client_address import client_address
from proxy import checks, tracing

Receive = Callable[[], Awaitable[dict[str, Any]]]

# Headers with which a client asks a framework to treat the request as another method.
METHOD_OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


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


class ClientTooSlow(Exception):
    """The client's body did not arrive within the call's deadline (408)."""


class ClientGone(Exception):
    """The client disconnected before its body was all sent."""


class Upload:
    """The client's body as the server hands it over (ASGI http.request messages), within the call's
    deadline: a client that sends too slowly is told so (408), and holds nothing but its connection."""

    __slots__ = ("_receive", "_more", "waiting_on_client")

    def __init__(self, receive: Receive) -> None:
        self._receive, self._more = receive, True
        self.waiting_on_client = False  # True while the relay waits for the client's next bytes

    async def _next(self) -> bytes:
        self.waiting_on_client = True
        try:
            message = await self._receive()
        finally:
            self.waiting_on_client = False
        if message["type"] == "http.disconnect":
            self._more = False
            raise ClientGone
        self._more = bool(message.get("more_body", False))
        return bytes(message.get("body", b""))

    async def read(self, limit: int) -> bytes:
        """The whole body, or its first limit + 1 bytes when it is longer (so the caller can refuse it
        before any upstream byte is sent)."""
        parts: list[bytes] = []
        size = 0
        while self._more and size <= limit:
            part = await self._next()
            parts.append(part)
            size += len(part)
        return b"".join(parts)[: limit + 1]

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, block by block as it arrives (the upstream's pace sets the client's: backpressure)."""
        while self._more:
            if part := await self._next():
                yield part


def declared_length(request: HttpRequest) -> int | None:
    """The body's declared length; 0 for none or a malformed one; None for a chunked body (its length
    is only known once read)."""
    if "CONTENT_LENGTH" not in request.META and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", ""):
        return None
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0

"""The answers the relay sends: the contract's error body, a preflight, and the upstream's answer."""

from django.http import HttpResponse, StreamingHttpResponse
from urllib3 import BaseHTTPResponse

from keys.errors import error_json
from proxy import access_log, checks, cors, outbound
from proxy.policy import KeyPolicy, UpstreamPolicy
from proxy.usage import REJECTED, UPSTREAM_ERROR, usage

# Proxied content is someone else's, served on the site's own origin: a sandboxed document runs no
# script and has an opaque origin, so an upstream's HTML can never act as the portal or the admin
# (CSP does not apply to fetch/XHR callers, so nothing legitimate breaks); nosniff stops a browser
# from reading a script or a page into an answer labelled as something else.
CONTENT_ISOLATION = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


def answer_headers(request_id: str) -> dict[str, str]:
    """The headers every proxied answer carries, refusals and streams included (DESIGN.md "CORS":
    Vary: Origin on every answer, since the CORS grant depends on it)."""
    return {"X-Request-Id": request_id, "Vary": "Origin", **CONTENT_ISOLATION}


class Refusal(HttpResponse):
    """An error answer of the proxy, which knows its usage outcome (for proxy.metrics)."""

    outcome = REJECTED


def refuse(
    rejection: checks.Rejection, headers: dict[str, str], *, key_id: str | None, outcome: str = REJECTED
) -> HttpResponse:
    """The contract's error answer, with the CORS, request-id and rate-limit headers gathered so far."""
    access_log.note_code(rejection.code)
    if key_id is not None:
        usage.count(key_id, outcome, rejection.code, rejection.detail)
    response = Refusal(
        error_json(rejection.code, rejection.message, headers["X-Request-Id"]),
        status=rejection.status,
        content_type="application/json",
        headers=headers,
    )
    response.outcome = outcome
    if rejection.retry_after is not None:
        response["Retry-After"] = str(rejection.retry_after)
    return response


def preflight(key: KeyPolicy, origin: str, requested_headers: str, headers: dict[str, str]) -> HttpResponse:
    """204 with the CORS grant for an allowed origin; otherwise an error without any grant."""
    if not cors.cors_allowed(key, origin):
        rejection = checks.reject(
            "origin_not_allowed", f"Origin {origin} is not allowed for key {key.key_id}.", detail=origin
        )
        # Counted: for a browser's preflighted call (a JSON POST, say) this is all the proxy ever sees,
        # and the tenant's rejection table is where they learn which origin to add.
        return refuse(rejection, headers, key_id=key.key_id)
    return HttpResponse(
        status=204, headers={**headers, **cors.preflight_headers(key, origin, requested_headers)}
    )


def relayed(
    answer: BaseHTTPResponse,
    upstream: UpstreamPolicy,
    key: KeyPolicy,
    headers: dict[str, str],
    deadline: float,
) -> HttpResponse | StreamingHttpResponse:
    """The upstream's answer: read whole when small and of known length, streamed otherwise. The status
    line's reason is the standard one: an upstream's own text is not trusted onto the wire."""
    length = answer.length_remaining
    response: HttpResponse | StreamingHttpResponse
    if length is not None and length <= outbound.SMALL_ANSWER_BYTES:
        content, failure = outbound.read_small_body(answer, upstream, deadline)
        if failure:
            return refuse(failure, headers, key_id=key.key_id, outcome=UPSTREAM_ERROR)
        response = HttpResponse(content, status=answer.status)
    else:
        body = outbound.stream_body(answer, deadline)
        response = StreamingHttpResponse(body, status=answer.status)
    del response["Content-Type"]  # the upstream's own, if any, comes with its headers below
    for name, value in outbound.response_headers(answer.headers, upstream):
        response.headers[name] = value
    upstream_vary = response.headers.get("Vary")
    for name, value in headers.items():
        response.headers[name] = value
    if upstream_vary and upstream_vary.strip() != "*":
        # The upstream's own Vary still holds for caches; ours adds Origin to it.
        names = [part.strip() for part in upstream_vary.split(",") if part.strip()]
        if "origin" not in {name.lower() for name in names}:
            names.append("Origin")
        response.headers["Vary"] = ", ".join(names)
    elif upstream_vary:
        response.headers["Vary"] = "*"
    return response

"""The relay: DESIGN.md's checks in order, then the call upstream and its answer streamed back."""

import time

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from keys.errors import error_json
from proxy import checks, cors, invalidation
from proxy import upstream as outbound
from proxy.policy import PolicyUnavailable, policies
from proxy.ratelimit import limiter
from proxy.request import (
    check_body_size,
    check_rpc_body,
    client_ip,
    content_length,
    forwarded_headers,
    request_id,
)
from proxy.usage import ALLOWED, REJECTED, UPSTREAM_ERROR, usage


@csrf_exempt
def relay(request: HttpRequest, upstream_slug: str, key_id: str, path: str = "") -> HttpResponse:
    invalidation.start_listener()  # once per process; a no-op after that
    rid, now, origin = request_id(request), time.time(), request.headers.get("Origin")
    headers = {"X-Request-Id": rid}
    try:
        upstream, key = policies.upstream(upstream_slug), policies.key(key_id)
    except PolicyUnavailable:
        return refuse(checks.reject("service_unavailable", "Try again shortly."), headers, key_id=None)
    if origin is not None:
        headers.update(cors.cors_headers(origin, cors.cors_allowed(key, origin)))
    rejection = checks.check_upstream(upstream, upstream_slug) or checks.check_key(key, key_id, now)
    if rejection or (rejection := checks.check_upstream_allowed(key, upstream)):
        return refuse(rejection, headers, key_id=key.key_id if key else None)
    if cors.is_preflight(request.method, request.headers):
        if not cors.cors_allowed(key, origin):
            return refuse(
                checks.reject("origin_not_allowed", f"Origin {origin} is not allowed for key {key_id}."),
                headers,
                key_id=None,
            )
        return HttpResponse(
            status=204,
            headers={
                **headers,
                **cors.preflight_headers(
                    key, origin, request.headers.get("Access-Control-Request-Headers", "")
                ),
            },
        )

    facts = checks.Facts(
        request.method,
        origin,
        request.headers.get("Authorization", ""),
        client_ip(request),
        request.headers.get("User-Agent", ""),
        now,
    )
    rejection, credential = checks.check_credentials(key, facts, policies.token)
    rejection = rejection or checks.check_origin(key, facts, credential) or checks.check_client(key, facts)
    body = None
    if not rejection:
        body, rejection = check_rpc_body(request, key)
    if not rejection:
        verdict = limiter.check(key, now)
        headers.update(verdict.headers)
        rejection = verdict.rejection
    target = outbound.outbound_path(upstream, path)
    if not rejection and target is None:
        rejection = checks.reject("invalid_path", "The path may not leave the upstream's base path.")
    if rejection or (rejection := check_body_size(request)):
        return refuse(rejection, headers, key_id=key.key_id)

    length = content_length(request)
    if body is None and length:
        body = request  # streamed upstream: urllib3 reads it in blocks as it sends
    query = outbound.outbound_query(upstream, request.META.get("QUERY_STRING", ""))
    deadline = time.monotonic() + upstream.timeout
    out_headers = outbound.outbound_headers(
        upstream, list(request.headers.items()), forwarded=forwarded_headers(request, facts.client_ip, rid)
    )
    if length:
        out_headers["Content-Length"] = str(length)
    answer, failure = outbound.client.send(
        upstream, request.method, f"{target}?{query}" if query else target, out_headers, body, deadline
    )
    if failure:
        return refuse(failure, headers, key_id=key.key_id, outcome=UPSTREAM_ERROR)
    length = answer.length_remaining
    if length is not None and length <= outbound.SMALL_ANSWER_BYTES:
        content = outbound.read_small_body(answer, deadline)
        if content is None:
            return refuse(
                outbound.timeout_rejection(upstream), headers, key_id=key.key_id, outcome=UPSTREAM_ERROR
            )
        response = HttpResponse(content, status=answer.status, reason=answer.reason)
    else:
        response = StreamingHttpResponse(
            outbound.stream_body(answer, deadline), status=answer.status, reason=answer.reason
        )
    usage.count(key.key_id, ALLOWED)
    del response["Content-Type"]  # the upstream's own, if any, comes with its headers below
    for name, value in outbound.response_headers(answer.headers):
        response.headers[name] = value
    for name, value in headers.items():
        response.headers[name] = value
    return response


def refuse(
    rejection: checks.Rejection, headers: dict[str, str], *, key_id: str | None, outcome: str = REJECTED
) -> HttpResponse:
    """The contract's error answer, with the CORS, request-id and rate-limit headers gathered so far."""
    if key_id is not None:
        usage.count(key_id, outcome, rejection.code)
    response = HttpResponse(
        error_json(rejection.code, rejection.message, headers["X-Request-Id"]),
        status=rejection.status,
        content_type="application/json",
        headers=headers,
    )
    if rejection.retry_after is not None:
        response["Retry-After"] = str(rejection.retry_after)
    return response


def not_found(request: HttpRequest) -> HttpResponse:
    """A /proxy/ URL without an upstream and a key."""
    rejection = checks.reject("not_found", "Proxy URLs are /proxy/<upstream>/<key_id>/<path>.")
    return refuse(rejection, {"X-Request-Id": request_id(request)}, key_id=None)


def internal_error(request: HttpRequest) -> HttpResponse:
    rejection = checks.Rejection(
        500, "internal_error", "The proxy failed; the request id helps find out why."
    )
    return refuse(rejection, {"X-Request-Id": request_id(request)}, key_id=None)

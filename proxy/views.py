"""The relay: DESIGN.md's checks in order, then the call upstream and its answer streamed back."""

import time

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from keys.request_ids import request_id
from proxy import access_log, checks, cors, hosts, invalidation, metrics, outbound, report
from proxy.policy import PolicyUnavailable, policies
from proxy.ratelimit import limiter
from proxy.request import (
    body_to_send,
    check_body_size,
    check_rpc_body,
    content_length,
    facts_of,
    forwarded_headers,
)
from proxy.responses import answer_headers, preflight, refuse, relayed
from proxy.sharing import sharing
from proxy.usage import ALLOWED, UPSTREAM_ERROR, usage


@csrf_exempt
def relay(
    request: HttpRequest, upstream_slug: str, key_id: str, path: str = ""
) -> HttpResponse | StreamingHttpResponse:
    """A proxied call: /proxy/<upstream_slug>/<key_id>/<path>."""
    invalidation.start_listener()  # once per process; a no-op after that
    facts = facts_of(request, time.time())
    headers = answer_headers(request_id(request))
    started, response = metrics.call_started(), None
    try:
        response = _checked_relay(request, facts, headers, upstream_slug, key_id, path)
    except PolicyUnavailable:  # the database is down and the key, upstream or token is not cached
        response = refuse(checks.reject("service_unavailable", "Try again shortly."), headers, key_id=None)
    finally:  # made-up slugs add no label: counted under the slug only when the upstream exists
        found = upstream_slug if policies.upstreams.known(upstream_slug) else None
        metrics.call_finished(started, found, response)
    return response


def _checked_relay(
    request: HttpRequest,
    facts: checks.Facts,
    headers: dict[str, str],
    upstream_slug: str,
    key_id: str,
    path: str,
) -> HttpResponse | StreamingHttpResponse:
    found_upstream, found_key = policies.upstream(upstream_slug), policies.key(key_id)
    access_log.note_key(found_key)
    if facts.origin is not None:
        headers.update(cors.cors_headers(facts.origin, cors.cors_allowed(found_key, facts.origin)))
    # 1-4: upstream, key, key state, key may call the upstream.
    route = checks.check_route(found_upstream, upstream_slug, found_key, key_id, facts.now)
    if isinstance(route, checks.Rejection):
        return refuse(route, headers, key_id=found_key.key_id if found_key else None)
    upstream, key = route.upstream, route.key
    if facts.origin is not None and cors.is_preflight(facts.method, request.headers):
        return preflight(
            key, facts.origin, request.headers.get("Access-Control-Request-Headers", ""), headers
        )
    # 5-7: credentials, origin, the other allowlists; 8: limits; 9: path and body size.
    # Checks of 6-8 in report mode pass and land in `reported` (proxy/report.py); 1-5 and 9-10 never do.
    rejection, credential = checks.check_credentials(key, facts, policies.token)
    reported: list[checks.Rejection] = []
    if not rejection:
        origin, client = checks.check_origin(key, facts, credential), checks.client_rejections(key, facts)
        rejection = report.enforced(key, reported, origin, *client)
    body: outbound.RequestBody  # a JSON-RPC body already read for its check, else read when sent
    body, rpc = check_rpc_body(request, key) if not rejection else (None, None)
    rejection = rejection or report.enforced(key, reported, rpc)
    if not rejection:
        verdict = limiter.check(key, facts.now)
        headers.update(verdict.headers)
        rejection = report.enforced(key, reported, *verdict.refusals)
    headers.update(report.would_reject_headers(reported))
    if rejection:
        return refuse(rejection, headers, key_id=key.key_id)
    if (target := outbound.outbound_path(upstream, path)) is None:
        rejection = checks.reject("invalid_path", "The path may not leave the upstream's base path.")
        return refuse(rejection, headers, key_id=key.key_id)
    if rejection := check_body_size(request):
        return refuse(rejection, headers, key_id=key.key_id)
    report.count_would_reject(usage.count, key.key_id, reported)  # it passes: count what would not have
    sharing.note(key.key_id, facts.client_address, facts.origin, facts.user_agent)
    # 10: the call, within the upstream's total deadline.
    deadline = time.monotonic() + upstream.timeout
    out_headers = outbound.outbound_headers(
        upstream,
        list(request.headers.items()),
        forwarded=forwarded_headers(request, facts.client_address, headers),
    )
    if length := content_length(request):
        out_headers["Content-Length"] = str(length)
        body = body_to_send(request) if body is None else body
    query = outbound.outbound_query(upstream, request.META.get("QUERY_STRING", ""))
    answer = outbound.client.send(
        upstream, facts.method, f"{target}?{query}" if query else target, out_headers, body, deadline
    )
    if isinstance(answer, checks.Rejection):
        return refuse(answer, headers, key_id=key.key_id, outcome=UPSTREAM_ERROR)
    usage.count(key.key_id, ALLOWED)
    return relayed(answer, upstream, key, headers, deadline)


def not_found(request: HttpRequest) -> HttpResponse:
    """A /proxy/ URL without an upstream and a key."""
    rejection = checks.reject("not_found", "Proxy URLs are /proxy/<upstream>/<key_id>/<path>.")
    return refuse(rejection, answer_headers(request_id(request)), key_id=None)


def bad_host(request: HttpRequest) -> HttpResponse:
    """A Host header outside DJANGO_ALLOWED_HOSTS: refused here as the site refuses it."""
    rejection = checks.reject("invalid_request", "The Host header names a host this server does not serve.")
    return refuse(rejection, answer_headers(request_id(request)), key_id=None)


def wrong_host(request: HttpRequest) -> HttpResponse:
    """The proxy asked for on a site host, or the site on a proxy host (PROXY_HOSTS)."""
    rejection = checks.reject("not_found", hosts.wrong_host_message(request.path_info))
    return refuse(rejection, answer_headers(request_id(request)), key_id=None)


def internal_error(request: HttpRequest) -> HttpResponse:
    rejection = checks.Rejection(
        500, "internal_error", "The proxy failed; the request id helps find out why."
    )
    return refuse(rejection, answer_headers(request_id(request)), key_id=None)

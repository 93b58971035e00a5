"""DESIGN.md's checks 1-9 in their order, written once for the relay (proxy/gateway.py).

Two steps, because the JSON-RPC method check needs the body and reading it is the caller's I/O:
`admit` runs the checks that read only the request line and headers (1-7), `clear` the rest (the
JSON-RPC verdict the caller got from the body, 8 the limits, 9 the path and the body size). Each
returns the answer to send instead of relaying (a refusal, or a preflight's grant), or what the call
goes on with. Neither does I/O of its own beyond the policy cache (which may ask for the database:
proxy.policy.NeedsDatabase) and the limiter's occasional lease.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.http import HttpResponse

from proxy import access_log, checks, cors, outbound, report
from proxy.policy import KeyPolicy, UpstreamPolicy, policies
from proxy.ratelimit import limiter
from proxy.responses import preflight, refuse
from proxy.sharing import sharing
from proxy.usage import usage


@dataclass(frozen=True, slots=True)
class Admitted:
    """A call that passed checks 1-7: its upstream and key."""

    upstream: UpstreamPolicy
    key: KeyPolicy
    # Refusals of report-mode checks so far (proxy/report.py): the call goes on, they are counted.
    reported: list[checks.Rejection] = field(default_factory=list)


def admit(
    facts: checks.Facts,
    request_headers: dict[str, str],
    headers: dict[str, str],
    upstream_slug: str,
    key_id: str,
) -> Admitted | HttpResponse:
    """Checks 1-7. `headers` (the answer's) gains the CORS grant for an allowed origin. Repeatable: it
    refuses, and counts the refusal, only once every lookup it needs has been made."""
    found_upstream, found_key = policies.upstream(upstream_slug), policies.key(key_id)
    access_log.note_key(found_key)
    if facts.origin is not None:
        headers.update(cors.cors_headers(facts.origin, cors.cors_allowed(found_key, facts.origin)))
    # 1-4: upstream, key, key state, key may call the upstream.
    route = checks.check_route(found_upstream, upstream_slug, found_key, key_id, facts.now)
    if isinstance(route, checks.Rejection):
        return refuse(route, headers, key_id=found_key.key_id if found_key else None)
    upstream, key = route.upstream, route.key
    if facts.origin is not None and cors.is_preflight(facts.method, request_headers):
        return preflight(
            key, facts.origin, request_headers.get("Access-Control-Request-Headers", ""), headers
        )
    # 5-7: credentials, origin, the other allowlists.
    # Checks of 6-8 in report mode pass and land in `reported` (proxy/report.py); 1-5 and 9-10 never do.
    rejection, credential = checks.check_credentials(key, facts, policies.token)
    reported: list[checks.Rejection] = []
    if not rejection:
        origin, client = checks.check_origin(key, facts, credential), checks.client_rejections(key, facts)
        rejection = report.enforced(key, reported, origin, *client)
    if rejection:
        headers.update(report.would_reject_headers(reported))
        return refuse(rejection, headers, key_id=key.key_id)
    return Admitted(upstream, key, reported)


def clear(
    admitted: Admitted,
    facts: checks.Facts,
    headers: dict[str, str],
    rpc_rejection: checks.Rejection | None,
    path: str | None,
    body_length: int,
) -> str | HttpResponse:
    """The rest: the JSON-RPC verdict on the body (7), the limits (8: `headers` gains the rate-limit
    fields), the path (None: one with an encoded separator) and the body's size (9). Returns the
    upstream request path, or the refusal."""
    key, reported = admitted.key, admitted.reported
    rejection = report.enforced(key, reported, rpc_rejection)
    if not rejection:
        verdict = limiter.check(key, facts.now)
        headers.update(verdict.headers)
        rejection = report.enforced(key, reported, *verdict.refusals)
    headers.update(report.would_reject_headers(reported))
    if rejection:
        return refuse(rejection, headers, key_id=key.key_id)
    target = outbound.outbound_path(admitted.upstream, path) if path is not None else None
    if target is None:
        rejection = checks.reject("invalid_path", "The path may not leave the upstream's base path.")
        return refuse(rejection, headers, key_id=key.key_id)
    if body_length > (limit := settings.PROXY_MAX_BODY_BYTES):
        rejection = checks.reject("payload_too_large", f"The request body is over {limit} bytes.")
        return refuse(rejection, headers, key_id=key.key_id)
    report.count_would_reject(usage.count, key.key_id, reported)  # it passes: count what would not have
    sharing.note(key.key_id, facts.client_address, facts.origin, facts.user_agent)
    return target

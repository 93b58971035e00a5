"""The answers the relay sends: the contract's error body, a preflight, and the upstream's answer."""

from django.http import HttpResponse

from keys.errors import error_json
from proxy import access_log, checks, cors, outbound
from proxy.policy import KeyPolicy, UpstreamPolicy
from proxy.usage import ALLOWED, REJECTED, usage

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


class Relayed:
    """The upstream's answer as the relay sends it back: its body in memory (`content`), or still to
    stream from `answer`. The status line's reason is the standard one: an upstream's own text is not
    trusted onto the wire."""

    outcome = ALLOWED
    __slots__ = ("status_code", "headers", "content", "answer", "deadline")

    def __init__(
        self,
        status_code: int,
        headers: list[tuple[str, str]],
        content: bytes | None = None,
        answer: outbound.Answer | None = None,
    ) -> None:
        self.status_code, self.headers, self.content, self.answer = status_code, headers, content, answer
        self.deadline = 0.0  # the event loop's clock: when a streamed answer must be done


def relayed_headers(
    answer: outbound.Answer, upstream: UpstreamPolicy, ours: dict[str, str]
) -> list[tuple[str, str]]:
    """The upstream's answer headers that may pass (outbound.response_headers), with the proxy's own:
    ours win, and the upstream's Vary still holds for caches with Origin added to it."""
    our_names = {name.lower() for name in ours}
    merged: list[tuple[str, str]] = []
    upstream_vary: list[str] = []
    for name, value in outbound.response_headers(answer.fields, upstream):
        lower = name.lower()
        if lower == "vary":
            upstream_vary.extend(part for part in (piece.strip() for piece in value.split(",")) if part)
        elif lower not in our_names:
            merged.append((name, value))
    merged.extend((name, value) for name, value in ours.items() if name != "Vary")
    if "*" in upstream_vary:
        vary = "*"
    elif upstream_vary:
        if "origin" not in {name.lower() for name in upstream_vary}:
            upstream_vary.append("Origin")
        vary = ", ".join(upstream_vary)
    else:
        vary = ours.get("Vary", "Origin")
    merged.append(("Vary", vary))
    return merged

"""CORS for proxied answers, per key (DESIGN.md "CORS").

The proxy answers CORS itself rather than through django-cors-headers: its preflight answer is
204 with the requested headers echoed, and the allowlist is each key's own (with DESIGN.md's origin
forms), decided from the key named in the URL. django-cors-headers serves the rest of the site.
"""

from collections.abc import Mapping

from django.conf import settings

from keys.origins import origin_allowed
from proxy.policy import KeyPolicy

EXPOSED = "X-Request-Id, Retry-After, RateLimit, RateLimit-Policy, X-Would-Reject"
DEFAULT_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def cors_allowed(key: KeyPolicy | None, origin: str | None) -> bool:
    """True when the answer may carry Access-Control-Allow-Origin for this origin: an allowed one, or any
    while the key's origin check only reports (the app must keep working while its origins are learnt)."""
    if key is None or origin is None:
        return False
    return origin_allowed(origin, key.origins) or "allowed_origins" in key.report_only


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """`headers` looked up case-insensitively, as request.headers does."""
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def cors_headers(origin: str, allowed: bool) -> dict[str, str]:
    """The CORS grant of an answer: the allow headers only for an allowed origin (every answer carries
    Vary: Origin, proxy.responses.answer_headers)."""
    if not allowed:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSED}


def preflight_headers(key: KeyPolicy, origin: str, requested_headers: str) -> dict[str, str]:
    headers = cors_headers(origin, True)
    headers["Access-Control-Allow-Methods"] = ", ".join(sorted(key.http_methods)) or DEFAULT_METHODS
    if requested_headers:
        headers["Access-Control-Allow-Headers"] = requested_headers
    headers["Access-Control-Max-Age"] = str(settings.PROXY_CORS_MAX_AGE)
    return headers

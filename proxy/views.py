"""The proxy's own answers to requests that never reach the relay's checks (proxy/gateway.py)."""

from django.http import HttpRequest, HttpResponse

from keys.request_ids import request_id
from proxy import checks, hosts
from proxy.responses import answer_headers, refuse


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

"""The proxy's fast path: /proxy/ requests go straight from the WSGI server to the relay view.

The relay needs none of the site's middleware (sessions, authentication, CSRF, messages, HTML security
headers), nor URL resolution through the whole site, nor the request signals that manage database
connections (it makes no query in steady state; the policy loader manages its own connection). Each of
those costs time on every request, measured in bench/. Requests and answers are still Django's
WSGIRequest and HttpResponse, and the relay is an ordinary Django view, also routed in proxy/urls.py for
Django's test client.
"""

import logging
import re
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse, StreamingHttpResponse

from keys.log_context import bind_request_id, unbind_request_id
from keys.request_ids import request_id
from proxy import access_log, hosts, views
from proxy.hosts import PROXY_PREFIX
from proxy.urls import RELAY_PATH

logger = logging.getLogger(__name__)

# DOTALL: a path with a (decoded) line break still names an upstream and a key, and the relay refuses
# it as a path with a control character (400 invalid_path) rather than as an unknown URL.
_RELAY = re.compile(PROXY_PREFIX[1:] + RELAY_PATH.removeprefix("^"), re.DOTALL)


def proxy_application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI application for /proxy/ paths."""
    request = WSGIRequest(environ)
    match = _RELAY.match(request.path_info[1:])
    access = access_log.begin(request, match["upstream_slug"] if match else None)
    bound = bind_request_id(request_id(request))  # every log line of this request carries its id
    try:
        response = _proxy_response(request, match)
    finally:
        unbind_request_id(bound)
    access_log.finish(access, response)  # now, or when a streamed answer is closed
    return _answer(response, start_response)


def _proxy_response(
    request: WSGIRequest, match: re.Match[str] | None
) -> HttpResponse | StreamingHttpResponse:
    try:
        request.get_host()  # the site's rule (DJANGO_ALLOWED_HOSTS) holds here too; never sent upstream
    except DisallowedHost:
        return views.bad_host(request)
    try:
        return views.relay(request, **match.groupdict("")) if match else views.not_found(request)
    except Exception:
        logger.exception("proxy: unexpected error")
        return views.internal_error(request)


def _answer(response: HttpResponse | StreamingHttpResponse, start_response: StartResponse) -> Iterable[bytes]:
    start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
    if isinstance(response, HttpResponse):
        # An answer already in memory goes back as a list: WSGI servers write a list in one go,
        # while any other iterable is drained chunk by chunk (granian: through a channel).
        return [response.content]
    return response  # streaming: the server calls close(), which closes the upstream answer


def with_proxy_fast_path(site: WSGIApplication) -> WSGIApplication:
    """Serve /proxy/ with proxy_application and everything else with `site`, each only on its own
    hosts when PROXY_HOSTS is set (proxy/hosts.py)."""

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        route = hosts.route_for(environ.get("HTTP_HOST", ""), path)
        if route == "proxy":
            return proxy_application(environ, start_response)
        if route == "wrong_host":
            return _answer(views.wrong_host(WSGIRequest(environ)), start_response)
        return site(environ, start_response)

    return application

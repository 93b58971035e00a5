"""PROXY_HOSTS for requests that reach the proxy through the site's own handler (the ASGI entry point,
Django's test client): the WSGI fast path applies the same rule before any middleware."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from proxy import hosts, views


class ProxyHostsMiddleware:
    """Refuse the proxy on site hosts and the site on proxy hosts (proxy/hosts.py)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if hosts.route_for(request.META.get("HTTP_HOST", ""), request.path_info) == "wrong_host":
            return views.wrong_host(request)
        return self.get_response(request)

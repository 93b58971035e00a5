"""The proxy's fast path through Django: /proxy/ requests skip the site's middleware.

The relay needs none of sessions, authentication, CSRF, messages or the HTML security headers, and
on the hot path each costs time per request. Django still parses the request, resolves the URL and
calls the view, so the relay stays an ordinary Django view; the rest of the site is untouched.
"""

from collections.abc import Callable, Iterable

from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponse

PROXY_PREFIX = "/proxy/"

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class ProxyHandler(WSGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        response = super().__call__(environ, start_response)
        if isinstance(response, HttpResponse):
            # An answer already in memory goes back as a list: WSGI servers write a list in one go,
            # while any other iterable is drained chunk by chunk (granian: through a channel).
            content = response.content
            response.close()
            return [content]
        return response


def with_proxy_fast_path(site: WSGIApp) -> WSGIApp:
    """Serve /proxy/ with ProxyHandler and everything else with `site`."""
    proxy = ProxyHandler()

    def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(PROXY_PREFIX):
            return proxy(environ, start_response)
        return site(environ, start_response)

    return application

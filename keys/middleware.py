"""Site middleware: every answer of the site (the proxy's fast path aside) carries X-Request-Id."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from keys.request_ids import request_id


class RequestIdMiddleware:
    """Choose the request's id before any view runs, so the error body and the header agree."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id(request)
        response = self.get_response(request)
        if "X-Request-Id" not in response:
            response["X-Request-Id"] = rid
        return response

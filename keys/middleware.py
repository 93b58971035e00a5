"""Site middleware: every answer of the site (the proxy's fast path aside) carries X-Request-Id."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from keys.log_context import bind_request_id, unbind_request_id
from keys.request_ids import request_id


class RequestIdMiddleware:
    """Choose the request's id before any view runs, so the error body, the header and the log lines agree."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id(request)
        bound = bind_request_id(rid)  # every log line of this request carries its id
        try:
            response = self.get_response(request)
        finally:
            unbind_request_id(bound)
        if "X-Request-Id" not in response:
            response["X-Request-Id"] = rid
        return response

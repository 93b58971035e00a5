"""The answer that shows a secret (a key's secret, a management or access token) in clear, once: only its
hash is kept, so this answer is the only place it ever appears, and no cache may keep a copy."""

from typing import TypeVar

from django.http import HttpResponseBase

SHOWN_ONCE_HEADERS = {"Cache-Control": "no-store"}

Response = TypeVar("Response", bound=HttpResponseBase)


def shown_once(response: Response) -> Response:
    """Mark `response`, which holds a secret in clear, as never to be stored."""
    for name, value in SHOWN_ONCE_HEADERS.items():
        response[name] = value
    return response

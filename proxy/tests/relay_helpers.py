"""Helpers for the tests that call the real proxy over HTTP (fixtures: proxy/tests/conftest.py)."""

import base64
import http.client
import json
from dataclasses import dataclass

UPSTREAM_CREDENTIAL = "upstream-credential-value"


@dataclass(frozen=True)
class RawAnswer:
    """An answer read whole, with urllib3's names (status, headers, data), so error_code reads either."""

    status: int
    headers: http.client.HTTPMessage
    data: bytes


def raw_get(site, target: str, headers=None) -> RawAnswer:
    """A request with the target exactly as written (no client-side normalisation)."""
    host, port = site.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", target, headers=headers or {})
    response = connection.getresponse()
    answer = RawAnswer(response.status, response.headers, response.read())
    connection.close()
    return answer


def error_code(response) -> str:
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.data)
    assert body["error"]["request_id"] == response.headers["X-Request-Id"]
    return body["error"]["code"]


def basic(secret: str, user: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()

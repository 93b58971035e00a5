"""Helpers for the tests that call the real proxy over HTTP (fixtures: proxy/tests/conftest.py)."""

import base64
import http.client
import json

UPSTREAM_CREDENTIAL = "upstream-credential-value"


def raw_get(site, target: str, headers=None) -> http.client.HTTPResponse:
    """A request with the target exactly as written (no client-side normalisation)."""
    host, port = site.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", target, headers=headers or {})
    response = connection.getresponse()
    response.data = response.read()
    connection.close()
    return response


def error_code(response) -> str:
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.data)
    assert body["error"]["request_id"] == response.headers["X-Request-Id"]
    return body["error"]["code"]


def basic(secret: str, user: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()

"""/healthz under bin/serve: the server's event loop answers it, as the site would, without the site."""

import asyncio

import pytest
from django.test import Client

from ops.liveness import with_liveness


async def _site_never_called(scope, receive, send):
    raise AssertionError("the site was asked")


async def _site_answers_418(scope, receive, send):
    await send({"type": "http.response.start", "status": 418, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _call(app, method="GET", path="/healthz", host=b"127.0.0.1:8000"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"host", host)]}
    asyncio.run(app(scope, receive, send))
    headers = {name.decode(): value.decode() for name, value in sent[0].get("headers", [])}
    return sent[0]["status"], headers, b"".join(message.get("body", b"") for message in sent[1:])


@pytest.fixture
def allowed_hosts(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]


def test_healthz_is_answered_without_the_site_as_the_site_answers_it(allowed_hosts, db):
    status, headers, body = _call(with_liveness(_site_never_called))
    site = Client().get("/healthz", HTTP_HOST="127.0.0.1")
    assert (status, body) == (site.status_code, site.content)
    for name in ("Content-Type", "X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy"):
        assert headers[name.lower()] == site.headers[name]
    assert len(headers["x-request-id"]) == 32


def test_a_head_request_gets_the_headers_only(allowed_hosts):
    status, headers, body = _call(with_liveness(_site_never_called), method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == str(len(b'{"status": "ok"}'))


@pytest.mark.parametrize(
    "method, path, host",
    [
        ("POST", "/healthz", b"127.0.0.1:8000"),  # the site's answer to other methods stays the site's
        ("GET", "/healthz/", b"127.0.0.1:8000"),
        ("GET", "/readyz", b"127.0.0.1:8000"),  # readiness checks the database: the site's view
        ("GET", "/healthz", b"evil.test"),  # a Host the site refuses is still refused by the site
        ("GET", "/healthz", b""),
    ],
)
def test_everything_else_goes_to_the_site(allowed_hosts, method, path, host):
    status, _, _ = _call(with_liveness(_site_answers_418), method=method, path=path, host=host)
    assert status == 418

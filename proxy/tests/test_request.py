"""proxy.request.ProxyRequest reads an ASGI request as Django's ASGIRequest does: the helpers the relay
shares with the site (client address, request id, host check, trace context) get the same answers."""

import io

import pytest
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.test import override_settings

from proxy.request import ProxyRequest


def scope(headers: list[tuple[bytes, bytes]], **extra: object) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "scheme": "https",
        "method": "post",
        "path": "/proxy/rpc/pk_x/a b",
        "raw_path": b"/proxy/rpc/pk_x/a%20b",
        "root_path": "",
        "query_string": b"a=1&b=%C3%A9",
        "client": ("203.0.113.7", 51000),
        "server": ("127.0.0.1", 8000),
        "headers": headers,
        **extra,
    }


HEADERS = [
    (b"host", b"api.example:8000"),
    (b"content-type", b"application/json"),
    (b"content-length", b"12"),
    (b"x-forwarded-for", b"198.51.100.1"),
    (b"x-forwarded-for", b"198.51.100.2"),  # repeated: one comma-joined value, as Django joins it
    (b"x_forwarded_for", b"10.0.0.1"),  # an underscore name: dropped, never read as the dashed one
    (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    (b"user-agent", b"caf\xe9"),  # latin-1, as sent
]


@pytest.mark.parametrize("root_path", ["", "/gateway"])
def test_it_reads_what_asgirequest_reads(root_path):
    raw = scope(HEADERS, root_path=root_path, path=f"{root_path}/proxy/rpc/pk_x/a b")
    ours, django = ProxyRequest(raw), ASGIRequest(raw, io.BytesIO(b""))
    meta = {name: value for name, value in django.META.items() if not name.startswith("wsgi.")}
    assert ours.META == meta
    assert dict(ours.headers.items()) == dict(django.headers.items())
    assert ours.headers.get("X-Forwarded-For") == "198.51.100.1,198.51.100.2"
    assert ours.headers.get("x_forwarded_for") == django.headers.get("x_forwarded_for")
    assert ours.headers.get("X-Missing", "none") == "none"
    assert ours.proxy_headers.lines() == list(django.headers.items())
    for attribute in ("path", "path_info", "method", "scheme", "script_name"):
        assert getattr(ours, attribute) == getattr(django, attribute), attribute


@override_settings(ALLOWED_HOSTS=["api.example"])
def test_the_host_check_is_djangos():
    assert ProxyRequest(scope(HEADERS)).get_host() == ASGIRequest(scope(HEADERS), io.BytesIO(b"")).get_host()
    for host in (b"evil.example", b"api.example.evil", b"", b"api.example:bad port"):
        headers = [(b"host", host)]
        with pytest.raises(DisallowedHost):
            ASGIRequest(scope(headers), io.BytesIO(b"")).get_host()
        with pytest.raises(DisallowedHost):
            ProxyRequest(scope(headers)).get_host()


def test_the_host_check_follows_the_setting_it_was_cached_under():
    request = ProxyRequest(scope([(b"host", b"api.example")]))
    with override_settings(ALLOWED_HOSTS=["api.example"]):
        assert request.get_host() == "api.example"
    with override_settings(ALLOWED_HOSTS=["other.example"]), pytest.raises(DisallowedHost):
        request.get_host()

"""Outbound URL, headers and answer headers (proxy/outbound.py), as pure functions."""

from dataclasses import replace

import pytest

from proxy import outbound
from proxy.tests.test_checks import make_upstream

UPSTREAM = make_upstream(base_path="/v1")


def answer_fields(lines: list[tuple[str, str]]) -> outbound.RawFields:
    """Answer header lines as the upstream client hands them over (bytes, as received)."""
    return outbound.RawFields([(name.encode("latin-1"), value.encode("latin-1")) for name, value in lines])


@pytest.mark.parametrize(
    "path, expected",
    [
        ("", "/v1"),
        ("blocks", "/v1/blocks"),
        ("blocks/", "/v1/blocks/"),
        ("a/b c/ü", "/v1/a/b%20c/%C3%BC"),
        ("a:b@c", "/v1/a:b@c"),
    ],
)
def test_outbound_path_stays_under_the_base_path(path, expected):
    assert outbound.outbound_path(UPSTREAM, path) == expected


def test_outbound_path_of_an_upstream_at_the_root():
    root = replace(UPSTREAM, base_path="")
    assert outbound.outbound_path(root, "") == "/"
    assert outbound.outbound_path(root, "x") == "/x"


# The server decodes the path once; these are the forms an escape attempt takes after that.
@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../admin",
        "a/../../admin",
        "./a",
        "a/./b",
        "%2e%2e/admin",  # %252e%252e on the wire
        "%2E%2E/admin",
        "..%2fadmin",  # ..%252f on the wire
        "a%5c..%5cb",
        "/host/x",  # //host/x
        "http://evil.test/x",
        "a//b",
        "a\\..\\b",
        "a\x00b",
        "a\nb",
        "%00",
        "%25",
        # Matrix parameters: Tomcat, Jetty and Spring cut `;...` off a segment, then resolve the dots.
        "..;/admin",
        "..;",
        "a;/..;/..;/admin",
        ".;/x",
        "..;jsessionid=1/admin",
        ";/admin",
    ],
)
def test_outbound_path_refuses_escapes(path):
    assert outbound.outbound_path(UPSTREAM, path) is None


def test_query_credential_replaces_the_clients_parameter():
    upstream = replace(UPSTREAM, auth_type="query", auth_name="apikey", auth_value="s3cret&x=1")
    query = outbound.outbound_query(upstream, "a=1&apikey=mine&b=2")
    assert query == "a=1&b=2&apikey=s3cret%26x%3D1"
    assert outbound.outbound_query(UPSTREAM, "a=1") == "a=1"


def test_outbound_headers_drop_client_credentials_and_hop_by_hop_and_add_the_upstreams():
    upstream = replace(
        UPSTREAM, auth_type="header", auth_name="X-Api-Key", auth_value="upstream-secret", port=8080
    )
    client = [
        ("Authorization", "Basic abc"),
        ("Cookie", "session=1"),
        ("Proxy-Authorization", "x"),
        ("Proxy-Foo", "x"),
        ("Connection", "keep-alive, X-Custom-Hop"),
        ("X-Custom-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Upgrade", "websocket"),
        ("X-Api-Key", "client-chosen"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("Host", "proxy.example"),
        ("Content-Type", "application/json"),
        ("Accept", "*/*"),
    ]
    headers = outbound.outbound_headers(upstream, client, forwarded={"X-Forwarded-For": "203.0.113.7"})
    lower = {name.lower(): value for name, value in headers.items()}
    for dropped in (
        "authorization",
        "cookie",
        "proxy-authorization",
        "proxy-foo",
        "connection",
        "x-custom-hop",
    ):
        assert dropped not in lower
    for dropped in ("keep-alive", "te", "upgrade"):
        assert dropped not in lower
    assert lower["x-api-key"] == "upstream-secret"
    assert lower["x-forwarded-for"] == "203.0.113.7"
    assert lower["host"] == "127.0.0.1:8080"
    assert lower["content-type"] == "application/json" and lower["accept"] == "*/*"


@pytest.mark.parametrize(
    "auth_type, name, value, header",
    [
        ("bearer", "", "tok", ("Authorization", "Bearer tok")),
        ("basic", "user", "pw", ("Authorization", "Basic dXNlcjpwdw==")),
        ("header", "X-Key", "v", ("X-Key", "v")),
        ("query", "key", "v", None),
        ("none", "", "", None),
    ],
)
def test_credential_header(auth_type, name, value, header):
    upstream = replace(UPSTREAM, auth_type=auth_type, auth_name=name, auth_value=value)
    assert outbound.credential_header(upstream) == header


def test_answer_headers_drop_hop_by_hop_set_cookie_and_upstream_cors():
    upstream_headers = answer_fields(
        [
            ("Content-Type", "application/json"),
            ("Set-Cookie", "a=1"),
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Credentials", "true"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Keep-Alive", "timeout=5"),
            ("X-Kept", "yes"),
            ("Location", "https://elsewhere.test/"),
        ]
    )
    kept = dict(outbound.response_headers(upstream_headers, UPSTREAM))
    assert kept == {
        "Content-Type": "application/json",
        "X-Kept": "yes",
        "Location": "https://elsewhere.test/",
    }


def test_a_semicolon_inside_an_ordinary_segment_is_relayed():
    assert outbound.outbound_path(UPSTREAM, "a;v=1/b..c;x") == "/v1/a;v=1/b..c;x"


CREDENTIAL = "upstream-secret-value"


@pytest.mark.parametrize(
    "location, expected",
    [
        (f"https://api.test/next?page=2&api_key={CREDENTIAL}", "https://api.test/next?page=2"),
        (f"/v1/next?api_key={CREDENTIAL}&page=2", "/v1/next?page=2"),
        ("/v1/next?api%5Fkey=anything&page=2", "/v1/next?page=2"),
        ("/v1/next?page=2", "/v1/next?page=2"),
    ],
)
def test_a_query_credential_is_taken_out_of_a_passed_back_location(location, expected):
    upstream = replace(UPSTREAM, auth_type="query", auth_name="api_key", auth_value=CREDENTIAL)
    headers = answer_fields([("Location", location), ("Content-Location", location)])
    kept = dict(outbound.response_headers(headers, upstream))
    assert kept == {"Location": expected, "Content-Location": expected}


@pytest.mark.parametrize(
    "auth_type, auth_name, echoed",
    [
        ("header", "X-Api-Key", [("X-Api-Key", CREDENTIAL)]),
        ("header", "X-Api-Key", [("X-Debug", f"sent key={CREDENTIAL}")]),
        ("bearer", "", [("X-Echo-Authorization", f"Bearer {CREDENTIAL}")]),
        ("basic", "user", [("X-Seen", "Basic dXNlcjp1cHN0cmVhbS1zZWNyZXQtdmFsdWU=")]),
        ("query", "key", [("Link", f"</v1/next?key={CREDENTIAL}>; rel=next")]),
    ],
)
def test_an_answer_header_echoing_the_upstream_credential_is_dropped(auth_type, auth_name, echoed):
    upstream = replace(UPSTREAM, auth_type=auth_type, auth_name=auth_name, auth_value=CREDENTIAL)
    headers = answer_fields([("Content-Type", "text/plain"), *echoed])
    assert outbound.response_headers(headers, upstream) == [("Content-Type", "text/plain")]


def test_a_percent_encoded_credential_is_recognised_too():
    upstream = replace(UPSTREAM, auth_type="header", auth_name="X-Api-Key", auth_value="a/b+c=d&e")
    headers = answer_fields([("X-Next", "/v1?k=a%2Fb%2Bc%3Dd%26e"), ("X-Other", "a+b")])
    assert outbound.response_headers(headers, upstream) == [("X-Other", "a+b")]


def test_obs_fold_becomes_a_space_and_fields_no_server_can_send_are_dropped():
    headers = answer_fields(
        [
            ("X-Folded", "first\r\n  second"),
            ("X-Nul", "a\x00b"),
            ("X-Bare-Cr", "a\rb"),
            ("Bad Name", "x"),
            ("X-Tab", "a\tb"),
        ]
    )
    assert outbound.response_headers(headers, UPSTREAM) == [("X-Folded", "first second"), ("X-Tab", "a\tb")]


def test_content_length_is_dropped_when_the_answer_is_chunked():
    headers = answer_fields([("Transfer-Encoding", "chunked"), ("Content-Length", "10")])
    assert outbound.response_headers(headers, UPSTREAM) == []

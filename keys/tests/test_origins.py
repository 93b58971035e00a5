"""Origin allowlist entries (DESIGN.md "Origin allowlist entries"): parsing, matching, narrowing."""

import pytest

from keys.origins import OriginError, OriginPattern, origin_allowed, parse_pattern, patterns_within


def allowed(origin_header: str, *entries: str) -> bool:
    return origin_allowed(origin_header, [parse_pattern(entry) for entry in entries])


def uncovered(narrow: list[str], wide: list[str]) -> list[str]:
    return [
        str(entry)
        for entry in patterns_within([parse_pattern(e) for e in narrow], [parse_pattern(e) for e in wide])
    ]


# --- parse_pattern: the accepted forms ---------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("https://app.example.com", OriginPattern(scheme="https", host="app.example.com", port=None)),
        ("https://app.example.com:8443", OriginPattern(scheme="https", host="app.example.com", port=8443)),
        ("app.example.com", OriginPattern(scheme=None, host="app.example.com", port=None)),
        ("*.example.com", OriginPattern(scheme=None, host="example.com", port=None, wildcard=True)),
        (
            "https://*.example.com",
            OriginPattern(scheme="https", host="example.com", port=None, wildcard=True),
        ),
        ("http://localhost:3000", OriginPattern(scheme="http", host="localhost", port=3000)),
        ("http://192.0.2.10", OriginPattern(scheme="http", host="192.0.2.10", port=None)),
        ("http://192.0.2.10:8080", OriginPattern(scheme="http", host="192.0.2.10", port=8080)),
        ("https://[2001:db8::1]", OriginPattern(scheme="https", host="[2001:db8::1]", port=None)),
        ("https://[2001:db8::1]:8443", OriginPattern(scheme="https", host="[2001:db8::1]", port=8443)),
        ("[2001:db8::1]", OriginPattern(scheme=None, host="[2001:db8::1]", port=None)),
    ],
)
def test_parse_pattern_accepts_the_documented_forms(entry, expected):
    assert parse_pattern(entry) == expected


@pytest.mark.parametrize(
    ("entry", "normalised"),
    [
        ("HTTPS://APP.Example.COM", "https://app.example.com"),
        ("*.EXAMPLE.com", "*.example.com"),
        ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:80", "http://app.example.com"),
        ("  https://app.example.com  ", "https://app.example.com"),
        ("https://app.example.com.", "https://app.example.com"),
    ],
)
def test_parse_pattern_normalises_case_default_port_and_padding(entry, normalised):
    assert str(parse_pattern(entry)) == normalised


def test_a_non_default_port_for_the_scheme_is_kept():
    assert str(parse_pattern("http://app.example.com:443")) == "http://app.example.com:443"


def test_an_internationalised_host_is_stored_as_punycode():
    assert parse_pattern("https://bücher.example").host == "xn--bcher-kva.example"


@pytest.mark.parametrize("entry", ["https://app.example.com", "app.example.com", "*.example.com"])
def test_a_parsed_pattern_reads_back_as_the_same_entry(entry):
    assert parse_pattern(str(parse_pattern(entry))) == parse_pattern(entry)


# --- parse_pattern: hostile and malformed forms ------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "https://*.*.com",
        "*.com",
        "*.*.example.com",
        "javascript:alert(1)",
        "data:",
        "data:text/html,<script>alert(1)</script>",
        "file://",
        "file:///etc/passwd",
        "ftp://x",
        "ws://app.example.com",
        "https://example.com/path",
        "https://example.com/",
        "https://example.com?q=1",
        "https://example.com#frag",
        "https://user@example.com",
        "https://user:pass@example.com",
        "https://example.com\\@evil.test",
        "//example.com",
        "example.com:8443",
        "*",
        "https://*",
        "*.",
        "**.example.com",
        "ex*ample.com",
        "app.*.example.com",
        "https://example.*",
        "*.127.0.0.1",
        "https://*.[2001:db8::1]",
        "",
        " ",
        "\t\n",
        "https://exa mple.com",
        "https://example.com\r\nSet-Cookie: x=1",
        "https://example.com:0",
        "https://example.com:65536",
        "https://example.com:99999",
        "https://example.com:",
        "https://example.com:-1",
        "https://example.com:abc",
        "https://",
        "https://-app.example.com",
        "https://app-.example.com",
        "https://app..example.com",
        "https://ex%41mple.com",
        "https://ex_ample.com",
        "http://127.1",
        "http://2130706433",
        "http://[::1",
        "http://[not-ipv6]",
        "https://" + "a" * 64 + ".example.com",
    ],
)
def test_parse_pattern_refuses_hostile_or_malformed_entries(entry):
    with pytest.raises(OriginError):
        parse_pattern(entry)


@pytest.mark.parametrize("entry", [None, 42, ["https://app.example.com"], b"https://app.example.com"])
def test_parse_pattern_refuses_values_that_are_not_text(entry):
    with pytest.raises(OriginError):
        parse_pattern(entry)


# --- origin_allowed ------------------------------------------------------------------------------


def test_exact_origin_matches():
    assert allowed("https://app.example.com", "https://app.example.com")


def test_origin_with_explicit_default_port_matches_entry_without_port():
    assert allowed("https://app.example.com:443", "https://app.example.com")


def test_origin_with_port_not_in_allowlist_does_not_match():
    assert not allowed("https://app.example.com:8443", "https://app.example.com")


def test_entry_with_port_matches_only_that_port():
    assert allowed("https://app.example.com:8443", "https://app.example.com:8443")
    assert not allowed("https://app.example.com", "https://app.example.com:8443")
    assert not allowed("https://app.example.com:9443", "https://app.example.com:8443")


def test_origin_with_other_scheme_does_not_match():
    assert not allowed("http://app.example.com", "https://app.example.com")
    assert not allowed("https://app.example.com", "http://app.example.com")


@pytest.mark.parametrize("origin", ["http://app.example.com", "https://app.example.com"])
def test_entry_without_scheme_matches_any_scheme_on_its_default_port(origin):
    assert allowed(origin, "app.example.com")


def test_entry_without_scheme_does_not_match_other_ports():
    assert not allowed("https://app.example.com:8443", "app.example.com")
    assert not allowed("http://app.example.com:443", "app.example.com")


@pytest.mark.parametrize(
    "origin", ["https://app.example.com", "http://a.example.com", "https://a.b.example.com"]
)
def test_wildcard_origin_matches_subdomains(origin):
    assert allowed(origin, "*.example.com")


def test_wildcard_origin_does_not_match_apex():
    assert not allowed("https://example.com", "*.example.com")
    assert not allowed("https://example.com", "https://*.example.com")
    assert not allowed("https://example.com.", "*.example.com")


def test_wildcard_with_scheme_matches_only_that_scheme():
    assert allowed("https://app.example.com", "https://*.example.com")
    assert not allowed("http://app.example.com", "https://*.example.com")


@pytest.mark.parametrize(
    ("origin", "entry"),
    [
        ("https://APP.EXAMPLE.COM", "https://app.example.com"),
        ("https://app.example.com", "https://APP.Example.com"),
        ("HTTPS://App.Example.Com", "*.example.com"),
    ],
)
def test_hosts_compare_case_insensitively(origin, entry):
    assert allowed(origin, entry)


@pytest.mark.parametrize("entry", ["example.com", "https://example.com", "*.example.com"])
@pytest.mark.parametrize(
    "origin",
    [
        "https://evil-example.com",
        "https://evilexample.com",
        "https://example.com.evil.test",
        "https://app.example.com.evil.test",
        "https://example.co",
        "https://xample.com",
    ],
)
def test_lookalike_hosts_never_match(origin, entry):
    assert not allowed(origin, entry)


@pytest.mark.parametrize("entries", [["example.com"], ["*.example.com"], ["http://localhost:3000"], ["null"]])
def test_null_origin_matches_nothing(entries):
    assert not allowed("null", *entries)


@pytest.mark.parametrize(
    "origin",
    [
        "",
        "null",
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://user@app.example.com",
        "javascript://app.example.com",
        "file://app.example.com",
        "https://app.example.com, https://evil.test",
        "https://app.example.com\nx",
        "https://*.example.com",
        "https://app.example.com:99999",
    ],
)
def test_malformed_origin_headers_never_match(origin):
    assert not allowed(origin, "app.example.com", "*.example.com")


@pytest.mark.parametrize("origin", ["https://evil.test", "null", "", "garbage"])
def test_empty_allowlist_allows_every_origin(origin):
    assert origin_allowed(origin, [])


def test_origin_matches_when_any_entry_matches():
    assert allowed("https://b.test", "https://a.test", "https://b.test")
    assert not allowed("https://c.test", "https://a.test", "https://b.test")


def test_ip_origins_match_exactly():
    assert allowed("http://192.0.2.10:8080", "http://192.0.2.10:8080")
    assert allowed("https://[2001:db8::1]", "https://[2001:db8::1]")
    assert not allowed("http://192.0.2.11:8080", "http://192.0.2.10:8080")


# --- patterns_within: a token narrows its key, never widens it ---------------------------------


@pytest.mark.parametrize(
    ("narrow", "wide"),
    [
        (["https://app.example.com"], ["https://app.example.com"]),
        (["https://app.example.com"], ["app.example.com"]),
        (["http://app.example.com"], ["app.example.com"]),
        (["https://app.example.com"], ["*.example.com"]),
        (["https://a.b.example.com"], ["*.example.com"]),
        (["*.a.example.com"], ["*.example.com"]),
        (["https://*.example.com"], ["*.example.com"]),
        (["*.example.com"], ["*.example.com"]),
        (["https://app.example.com:8443"], ["https://app.example.com:8443"]),
        (["https://a.example.com", "https://b.example.com"], ["*.example.com"]),
        (["https://b.test"], ["https://a.test", "https://b.test"]),
        (["https://anything.test"], []),
        ([], ["https://app.example.com"]),
    ],
)
def test_narrowing_is_accepted(narrow, wide):
    assert uncovered(narrow, wide) == []


@pytest.mark.parametrize(
    ("narrow", "wide", "widening"),
    [
        (["https://evil.test"], ["https://app.example.com"], ["https://evil.test"]),
        (["*.example.com"], ["https://app.example.com"], ["*.example.com"]),
        (["app.example.com"], ["https://app.example.com"], ["app.example.com"]),
        (["*.example.com"], ["https://*.example.com"], ["*.example.com"]),
        (["https://example.com"], ["*.example.com"], ["https://example.com"]),
        (["https://evil-example.com"], ["*.example.com"], ["https://evil-example.com"]),
        (["https://app.example.com:8443"], ["https://app.example.com"], ["https://app.example.com:8443"]),
        (["https://app.example.com"], ["https://app.example.com:8443"], ["https://app.example.com"]),
        (["http://app.example.com:443"], ["https://app.example.com"], ["http://app.example.com:443"]),
        (["http://app.example.com"], ["https://*.example.com"], ["http://app.example.com"]),
        (
            ["https://app.example.com", "https://evil.test"],
            ["*.example.com"],
            ["https://evil.test"],
        ),
    ],
)
def test_widening_is_refused(narrow, wide, widening):
    assert uncovered(narrow, wide) == widening

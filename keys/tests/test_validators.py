"""Allowlist entries, rates and upstream URLs, and the SSRF guard on upstream destinations."""

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from keys import services, validators
from keys.tests.fixtures import make_resolver
from keys.validators import (
    address_is_public,
    check_public_destination,
    clean_http_methods,
    clean_networks,
    clean_origins,
    clean_rate,
    clean_rpc_methods,
    clean_upstream_url,
    clean_user_agents,
    rate_parts,
)

# --- list-valued allowlists ----------------------------------------------------------------------


ALLOWLIST_CLEANERS = [clean_origins, clean_networks, clean_user_agents, clean_http_methods, clean_rpc_methods]


@pytest.mark.parametrize("clean", ALLOWLIST_CLEANERS)
def test_no_allowlist_means_an_empty_list(clean):
    assert clean(None) == []
    assert clean([]) == []


@pytest.mark.parametrize("clean", ALLOWLIST_CLEANERS)
@pytest.mark.parametrize("value", ["GET", "10.0.0.0/8", {"a": 1}, 3])
def test_allowlist_must_be_a_list(clean, value):
    with pytest.raises(ValidationError, match="must be a list"):
        clean(value)


@pytest.mark.parametrize("clean", ALLOWLIST_CLEANERS)
@pytest.mark.parametrize("item", [None, 1, ["GET"], {"a": 1}])
def test_allowlist_entries_must_be_strings(clean, item):
    with pytest.raises(ValidationError, match="must be a string"):
        clean([item])


@override_settings(KEYS_MAX_ALLOWLIST_ENTRIES=2)
@pytest.mark.parametrize(
    ("clean", "entries"),
    [
        (clean_origins, ["a.test", "b.test", "c.test"]),
        (clean_networks, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        (clean_user_agents, ["a", "b", "c"]),
        (clean_http_methods, ["GET", "PUT", "POST"]),
        (clean_rpc_methods, ["a", "b", "c"]),
    ],
)
def test_allowlist_longer_than_the_limit_is_refused(clean, entries):
    with pytest.raises(ValidationError, match="At most 2"):
        clean(entries)
    assert len(clean(entries[:2])) == 2


def test_clean_origins_normalises_and_drops_duplicates():
    assert clean_origins(["HTTPS://App.Example.com:443", "https://app.example.com", "*.Example.com"]) == [
        "https://app.example.com",
        "*.example.com",
    ]


def test_clean_origins_reports_every_bad_entry():
    with pytest.raises(ValidationError) as excinfo:
        clean_origins(["https://ok.example.com", "javascript:alert(1)", "*.com"])
    assert len(excinfo.value.messages) == 2
    assert "javascript:alert(1)" in excinfo.value.messages[0]
    assert "*.com" in excinfo.value.messages[1]


@pytest.mark.parametrize(
    ("entry", "normalised"),
    [
        ("203.0.113.0/24", "203.0.113.0/24"),
        ("203.0.113.7", "203.0.113.7/32"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:DB8:0:0::/64", "2001:db8::/64"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("::/0", "::/0"),
    ],
)
def test_clean_networks_accepts_ipv4_and_ipv6_addresses_and_networks(entry, normalised):
    assert clean_networks([entry]) == [normalised]


@pytest.mark.parametrize(
    "entry",
    [
        "10.0.0.1/8",
        "203.0.113.7/24",
        "2001:db8::1/32",
        "10.0.0.0/33",
        "2001:db8::/129",
        "10.0.0.0/-1",
        "256.0.0.1",
        "10.0.0",
        "bogus",
        "",
        "10.0.0.0/8,10.1.0.0/16",
        "example.com",
        "10.0.0.0/8 10.1.0.0/16",
    ],
)
def test_clean_networks_refuses_host_bits_and_non_networks(entry):
    with pytest.raises(ValidationError, match="is not an IP address or a CIDR network"):
        clean_networks([entry])


def test_clean_user_agents_strips_and_keeps_patterns():
    assert clean_user_agents([" curl/* ", "Mozilla/5.0 *", "curl/*"]) == ["curl/*", "Mozilla/5.0 *"]


@pytest.mark.parametrize(
    "entry", ["", "   ", "a" * 257, "bad\x00agent", "tab\tinside", "line\nbreak", "\x7f"]
)
def test_clean_user_agents_refuses_empty_overlong_and_control_characters(entry):
    with pytest.raises(ValidationError):
        clean_user_agents([entry])


def test_clean_user_agents_accepts_the_longest_allowed_pattern():
    assert clean_user_agents(["a" * 256]) == ["a" * 256]


def test_clean_http_methods_upper_cases_and_drops_duplicates():
    assert clean_http_methods(["get", "POST", "GET", "m-search"]) == ["GET", "POST", "M-SEARCH"]


@pytest.mark.parametrize("entry", ["", "G E T", "GET/1", "1GET", "GET;DROP", "A" * 33, "GÉT", "-GET"])
def test_clean_http_methods_refuses_non_methods(entry):
    with pytest.raises(ValidationError):
        clean_http_methods([entry])


def test_clean_rpc_methods_accepts_method_names():
    names = ["eth_blockNumber", "net.version", "rpc:call-1", "_private", "a" * 128]
    assert clean_rpc_methods(names) == names


def test_clean_rpc_methods_trims_surrounding_white_space():
    assert clean_rpc_methods([" eth_call\n"]) == ["eth_call"]


@pytest.mark.parametrize(
    "entry", ["", "eth blockNumber", "eth_*", "-x", ".x", "a" * 129, "eth\ncall", "métode"]
)
def test_clean_rpc_methods_refuses_non_names(entry):
    with pytest.raises(ValidationError):
        clean_rpc_methods([entry])


# --- rates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "parts"),
    [
        ("100/m", (100, 60)),
        ("10/5s", (10, 5)),
        ("1/s", (1, 1)),
        ("5/h", (5, 3600)),
        ("7/d", (7, 86400)),
        ("30/15m", (30, 900)),
        ("999999999/d", (999999999, 86400)),
    ],
)
def test_rates_in_django_ratelimit_form_are_accepted(rate, parts):
    assert clean_rate(rate) == rate
    assert rate_parts(rate) == parts


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_rate_means_no_limit(value):
    assert clean_rate(value) is None


def test_clean_rate_trims_white_space():
    assert clean_rate(" 100/m ") == "100/m"


@pytest.mark.parametrize(
    "rate",
    [
        "0/m",
        "m",
        "100/x",
        "-1/m",
        "1.5/m",
        "100",
        "/m",
        "100/",
        "100/M",
        "100/0s",
        "100/ m",
        "100 /m",
        "1e3/m",
        "1000000000/m",
        "100/m/s",
        "100/min",
        "١٠٠/m",
        100,
        1.5,
        ["100/m"],
    ],
)
def test_malformed_rates_are_refused(rate):
    with pytest.raises(ValidationError) as excinfo:
        clean_rate(rate)
    assert excinfo.value.code == "invalid_rate"


@pytest.mark.parametrize("rate", ["0/m", "bogus", ""])
def test_rate_parts_refuses_what_clean_rate_refuses(rate):
    with pytest.raises(ValueError):
        rate_parts(rate)


# --- upstream URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://api.example.com", "https://api.example.com"),
        ("https://api.example.com/v1/", "https://api.example.com/v1"),
        ("HTTPS://api.example.com/v3", "https://api.example.com/v3"),
        ("http://api.example.com:8080/x", "http://api.example.com:8080/x"),
        ("  https://api.example.com  ", "https://api.example.com"),
        ("http://[2606:4700::1111]:8545/", "http://[2606:4700::1111]:8545"),
    ],
)
def test_clean_upstream_url_accepts_http_and_https(url, normalised):
    assert clean_upstream_url(url) == normalised


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "ftp://files.example.com",
        "dict://127.0.0.1:11211/",
        "ws://api.example.com",
        "data:text/plain,hello",
        "//api.example.com",
        "api.example.com",
        "https://user:pass@api.example.com",
        "https://user@api.example.com",
        "https://:pass@api.example.com",
        "https://api.example.com\\@evil.test",
        "https://api.example.com/?key=1",
        "https://api.example.com?",
        "https://api.example.com/#frag",
        "https://api.example.com#",
        "https://api.example.com/a b",
        "https://api.example.com/a\tb",
        "https://api.example.com/a\nb",
        "https://api.example.com/\r\nHost: evil.test",
        "https://api.example.com/\x00",
        "https://api.example.com/\x7f",
        "https://api.example.com/\x9b",
        "https://api.exa\x00mple.com",
        "https://",
        "https:///path",
        "http://:80/",
        "https://api.example.com:0",
        "https://api.example.com:65536",
        "https://api.example.com:port",
        "http://[::1/",
        "",
        "   ",
        None,
        42,
    ],
)
def test_clean_upstream_url_refuses_other_schemes_credentials_queries_and_control_characters(url):
    with pytest.raises(ValidationError):
        clean_upstream_url(url)


# --- SSRF: public addresses only ------------------------------------------------------------------


NON_PUBLIC_ADDRESSES = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",  # noqa: S104 - an address refused, not one bound to
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "2001:db8::1",
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo wrapping 127.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "not-an-address",
    "",
]


@pytest.mark.parametrize("address", NON_PUBLIC_ADDRESSES)
def test_non_public_addresses_are_not_public(address):
    assert not address_is_public(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700::1111", "2001:4860::8888"]
)
def test_globally_routable_addresses_are_public(address):
    assert address_is_public(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8000/admin",
        "http://localhost/",
        "http://LOCALHOST:6379/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        # Numeric spellings of 127.0.0.1 that the resolver reads, as curl and browsers do.
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://0/",
    ],
)
def test_check_public_destination_refuses_loopback_private_and_reserved_destinations(url):
    with pytest.raises(ValidationError) as excinfo:
        check_public_destination(url)
    assert excinfo.value.code == "private_address"


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("https://8.8.8.8/", ["8.8.8.8"]),
        ("https://8.8.8.8:8443/v1", ["8.8.8.8"]),
        ("https://[2606:4700::1111]/", ["2606:4700::1111"]),
    ],
)
def test_check_public_destination_accepts_public_literal_addresses(url, addresses):
    assert check_public_destination(url) == addresses


def test_literal_address_is_checked_itself_never_resolved():
    lying_dns = make_resolver({"10.0.0.1": ["8.8.8.8"]})
    with pytest.raises(ValidationError):
        check_public_destination("http://10.0.0.1/", resolve=lying_dns)


def test_host_name_resolving_to_public_addresses_is_accepted_with_every_address():
    dns = make_resolver({"api.example.com": ["8.8.8.8", "2606:4700::1111"]})
    assert check_public_destination("https://API.example.com:8443/v1", resolve=dns) == [
        "8.8.8.8",
        "2606:4700::1111",
    ]


@pytest.mark.parametrize(
    "addresses",
    [
        ["8.8.8.8", "10.0.0.1"],  # DNS rebinding shape: one public, one private
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["2606:4700::1111", "::1"],
        ["::ffff:192.168.0.1"],
        ["fd00::1"],
        [],
    ],
)
def test_host_name_with_any_non_public_address_is_refused(addresses):
    dns = make_resolver({"api.example.com": addresses})
    with pytest.raises(ValidationError) as excinfo:
        check_public_destination("https://api.example.com/", resolve=dns)
    assert excinfo.value.code == "private_address"


def test_unresolvable_host_is_refused():
    with pytest.raises(ValidationError):
        check_public_destination("https://api.example.com/", resolve=make_resolver({}))


def test_localhost_resolves_through_the_real_resolver_to_loopback():
    assert "127.0.0.1" in validators.resolve_host("localhost")


# --- user-agent patterns: bounded, so the proxy's matching stays cheap ----------------------------


def test_clean_user_agents_collapses_runs_of_wildcards():
    assert clean_user_agents(["MyApp/***", "**bot**x"]) == ["MyApp/*", "*bot*x"]


def test_clean_user_agents_refuses_a_pattern_with_too_many_wildcards():
    with pytest.raises(ValidationError, match="has 13 wildcards; a user-agent pattern may have at most 8"):
        clean_user_agents(["*a*a*a*a*a*a*a*a*a*a*a*a*b"])


def test_clean_user_agents_accepts_the_most_wildcards_allowed():
    assert clean_user_agents(["*a*b*c*d*e*f*g*h"]) == ["*a*b*c*d*e*f*g*h"]


def test_wildcards_collapsed_do_not_count_twice():
    assert clean_user_agents(["**a**b**c**d**"]) == ["*a*b*c*d*"]


def test_clean_user_agents_refuses_more_patterns_than_allowed():
    with pytest.raises(ValidationError, match="At most 20 user-agent patterns are allowed"):
        clean_user_agents([f"app-{n}/*" for n in range(21)])
    assert len(clean_user_agents([f"app-{n}/*" for n in range(20)])) == 20


@override_settings(KEYS_USER_AGENT_MAX_LENGTH=10, KEYS_USER_AGENT_MAX_WILDCARDS=1, KEYS_MAX_USER_AGENTS=2)
def test_user_agent_bounds_follow_the_settings():
    assert clean_user_agents(["a" * 10, "*b"]) == ["a" * 10, "*b"]
    for too_much in (["a" * 11], ["*b*"], ["a", "b", "c"]):
        with pytest.raises(ValidationError):
            clean_user_agents(too_much)


def test_api_refuses_a_catastrophic_user_agent_pattern_with_a_field_error(tenant, loopback_upstream):
    from rest_framework.test import APIClient

    _, clear = services.management_token_create(tenant=tenant, name="api", actor="test")
    api = APIClient(HTTP_AUTHORIZATION=f"Bearer {clear}")
    answer = api.post(
        "/api/v1/keys",
        {"name": "k", "upstreams": ["local"], "allowed_user_agents": ["*a*a*a*a*a*a*a*a*a*a*a*a*b"]},
        format="json",
    )
    assert answer.status_code == 400
    assert "wildcards" in answer.json()["error"]["fields"]["allowed_user_agents"][0]

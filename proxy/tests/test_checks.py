"""The check table's pure functions, many cases each (DESIGN.md "The proxy")."""

import base64
import time
from dataclasses import replace

import pytest

from keys import crypto
from keys.origins import parse_pattern
from proxy import checks
from proxy.policy import KeyPolicy, TokenPolicy, UpstreamPolicy

NOW = time.time()
SECRET = crypto.new_secret()
OLD_SECRET = crypto.new_secret()


def make_key(**fields) -> KeyPolicy:
    base = KeyPolicy(
        key_id="pk_test",
        tenant_id=1,
        tenant_active=True,
        secret_hash=crypto.hash_secret(SECRET),
        previous_secret_hash="",
        previous_secret_until=None,
        secret_required=False,
        origins=(),
        networks=(),
        user_agents=(),
        http_methods=frozenset(),
        rpc_methods=frozenset(),
        rate=None,
        daily_quota=None,
        expires_at=None,
        revoked_at=None,
        upstreams=frozenset({"api"}),
    )
    return replace(base, **fields)


def make_upstream(**fields) -> UpstreamPolicy:
    base = UpstreamPolicy(
        slug="api",
        tenant_id=None,
        is_active=True,
        scheme="http",
        host="127.0.0.1",
        port=80,
        base_path="/v1",
        auth_type="none",
        auth_name="",
        auth_value="",
        timeout=5.0,
        allow_private_network=True,
    )
    return replace(base, **fields)


def facts(**fields) -> checks.Facts:
    base = checks.Facts(
        method="GET",
        origin=None,
        authorization="",
        client_address="203.0.113.7",
        user_agent="curl/8",
        now=NOW,
    )
    return replace(base, **fields)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def no_tokens(token: str) -> None:
    return None


def code(rejection) -> str | None:
    return rejection.code if rejection else None


def test_missing_or_inactive_upstream_is_unknown_upstream():
    assert code(checks.check_upstream(None, "nope")) == "unknown_upstream"
    assert code(checks.check_upstream(make_upstream(is_active=False), "api")) == "unknown_upstream"
    assert checks.check_upstream(make_upstream(), "api") is None


@pytest.mark.parametrize(
    "key, expected",
    [
        (None, "invalid_key"),
        (make_key(tenant_active=False), "tenant_suspended"),
        (make_key(revoked_at=NOW - 1), "key_revoked"),
        (make_key(expires_at=NOW - 1), "key_expired"),
        (make_key(expires_at=NOW + 60), None),
        (make_key(), None),
    ],
)
def test_key_state(key, expected):
    assert code(checks.check_key(key, "pk_test", NOW)) == expected


def test_key_may_only_call_its_upstreams_and_not_another_tenants():
    assert checks.check_upstream_allowed(make_key(), make_upstream()) is None
    assert code(checks.check_upstream_allowed(make_key(upstreams=frozenset()), make_upstream())) == (
        "upstream_not_allowed"
    )
    assert (
        code(checks.check_upstream_allowed(make_key(), make_upstream(tenant_id=2))) == "upstream_not_allowed"
    )


@pytest.mark.parametrize("user", ["", "pk_test"])
def test_basic_auth_with_the_secret_passes(user):
    rejection, credential = checks.check_credentials(
        make_key(), facts(authorization=basic(user, SECRET)), no_tokens
    )
    assert rejection is None and credential == checks.SECRET


@pytest.mark.parametrize(
    "authorization",
    [
        basic("someone-else", SECRET),
        basic("", crypto.new_secret()),
        basic("", SECRET[:-1] + ("A" if SECRET[-1] != "A" else "B")),
        basic("", ""),
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"\xff\xfe").decode(),
    ],
)
def test_bad_basic_credentials_are_invalid_secret(authorization):
    rejection, _ = checks.check_credentials(make_key(), facts(authorization=authorization), no_tokens)
    assert code(rejection) == "invalid_secret"


def test_previous_secret_works_only_during_grace():
    key = make_key(previous_secret_hash=crypto.hash_secret(OLD_SECRET), previous_secret_until=NOW + 10)
    assert checks.check_credentials(key, facts(authorization=basic("", OLD_SECRET)), no_tokens)[0] is None
    later = facts(authorization=basic("", OLD_SECRET), now=NOW + 11)
    assert code(checks.check_credentials(key, later, no_tokens)[0]) == "invalid_secret"


def test_secret_required_refuses_a_request_without_credentials():
    assert (
        code(checks.check_credentials(make_key(secret_required=True), facts(), no_tokens)[0])
        == "secret_required"
    )
    assert checks.check_credentials(make_key(), facts(), no_tokens) == (None, None)


def test_bearer_tokens():
    token = crypto.new_access_token()
    live = TokenPolicy(key_id="pk_test", expires_at=NOW + 60, revoked=False, origins=())
    tokens = {token: live}

    def lookup(value):
        return tokens.get(value)

    bearer = facts(authorization=f"Bearer {token}")
    assert checks.check_credentials(make_key(), bearer, lookup) == (None, live)
    tokens[token] = replace(live, expires_at=NOW - 1)
    assert code(checks.check_credentials(make_key(), bearer, lookup)[0]) == "token_expired"
    tokens[token] = replace(live, revoked=True)
    assert code(checks.check_credentials(make_key(), bearer, lookup)[0]) == "invalid_token"
    tokens[token] = replace(live, key_id="pk_other")
    assert code(checks.check_credentials(make_key(), bearer, lookup)[0]) == "invalid_token"
    malformed = facts(authorization="Bearer at_notavalidtoken")
    assert code(checks.check_credentials(make_key(), malformed, lookup)[0]) == "invalid_token"


ORIGINS = tuple(parse_pattern(entry) for entry in ["https://app.example.com", "*.example.org"])


@pytest.mark.parametrize(
    "origin, credential, expected",
    [
        ("https://app.example.com", None, None),
        ("https://x.example.org", None, None),
        ("https://example.org", None, "origin_not_allowed"),
        ("https://app.example.com:8443", None, "origin_not_allowed"),
        ("http://app.example.com", None, "origin_not_allowed"),
        ("https://evil-example.com", None, "origin_not_allowed"),
        ("null", None, "origin_not_allowed"),
        ("https://evil.test", checks.SECRET, "origin_not_allowed"),
        (None, None, "origin_required"),
        (None, checks.SECRET, None),
    ],
)
def test_origin_allowlist(origin, credential, expected):
    assert code(checks.check_origin(make_key(origins=ORIGINS), facts(origin=origin), credential)) == expected


def test_token_origins_narrow_the_key():
    token = TokenPolicy(key_id="pk_test", expires_at=NOW + 60, revoked=False, origins=(ORIGINS[0],))
    key = make_key(origins=ORIGINS)
    assert checks.check_origin(key, facts(origin="https://app.example.com"), token) is None
    assert (
        code(checks.check_origin(key, facts(origin="https://x.example.org"), token)) == "origin_not_allowed"
    )
    assert checks.check_origin(key, facts(origin=None), token) is None


def test_empty_origin_allowlist_allows_every_origin():
    assert checks.check_origin(make_key(), facts(origin="https://anything.test"), None) is None


@pytest.mark.parametrize(
    "ip, expected",
    [
        ("203.0.113.7", None),
        ("::ffff:203.0.113.7", None),
        ("198.51.100.1", "ip_not_allowed"),
        ("2001:db8::1", None),
        ("2001:db9::1", "ip_not_allowed"),
        ("not-an-ip", "ip_not_allowed"),
    ],
)
def test_ip_allowlist(ip, expected):
    import ipaddress

    key = make_key(networks=(ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8::/32")))
    assert code(checks.check_client(key, facts(client_address=ip))) == expected


@pytest.mark.parametrize(
    "agent, expected",
    [
        ("MyApp/1.2 (iOS)", None),
        ("myapp/9", None),
        ("curl/8", "user_agent_not_allowed"),
        ("", "user_agent_not_allowed"),
    ],
)
def test_user_agent_allowlist_with_wildcard(agent, expected):
    from proxy.policy import _user_agent_pattern

    key = make_key(user_agents=(_user_agent_pattern("MyApp/*"),))
    assert code(checks.check_client(key, facts(user_agent=agent))) == expected


def test_http_method_allowlist():
    key = make_key(http_methods=frozenset({"GET", "POST"}))
    assert checks.check_client(key, facts(method="POST")) is None
    assert code(checks.check_client(key, facts(method="DELETE"))) == "http_method_not_allowed"


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}', None),
        (b'[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"id":2,"method":"eth_chainId"}]', None),
        (b'{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction"}', "rpc_method_not_allowed"),
        (b'[{"method":"eth_blockNumber"},{"method":"admin_peers"}]', "rpc_method_not_allowed"),
        (b"[]", "invalid_rpc_request"),
        (b'{"id":1}', "invalid_rpc_request"),
        (b'{"method":5}', "invalid_rpc_request"),
        (b"not json", "invalid_rpc_request"),
        (b"", "invalid_rpc_request"),
        (b"\xff\xfe", "invalid_rpc_request"),
        (b'[1, {"method":"eth_blockNumber"}]', "invalid_rpc_request"),
    ],
)
def test_json_rpc_method_allowlist_single_and_batch(body, expected):
    key = make_key(rpc_methods=frozenset({"eth_blockNumber", "eth_chainId"}))
    rejection = checks.check_rpc_methods(key, body)
    assert code(rejection) == expected
    if rejection:
        assert rejection.status == (403 if expected == "rpc_method_not_allowed" else 400)


def _ip_and_agent_key(**fields) -> KeyPolicy:
    import ipaddress

    from proxy.policy import _user_agent_pattern

    return make_key(
        networks=(ipaddress.ip_network("203.0.113.0/24"),),
        user_agents=(_user_agent_pattern("MyApp/*"),),
        http_methods=frozenset({"GET"}),
        **fields,
    )


@pytest.mark.parametrize(
    "rejection, detail",
    [
        (
            lambda: checks.check_upstream_allowed(make_key(upstreams=frozenset()), make_upstream()),
            "api",
        ),
        (
            lambda: checks.check_origin(make_key(origins=ORIGINS), facts(origin="https://evil|x.test"), None),
            "https://evil|x.test",
        ),
        (
            lambda: checks.check_client(_ip_and_agent_key(), facts(client_address="198.51.100.1")),
            "198.51.100.1",
        ),
        (lambda: checks.check_client(_ip_and_agent_key(), facts(user_agent="curl/8")), "curl/8"),
        (
            lambda: checks.check_client(_ip_and_agent_key(), facts(user_agent="MyApp/1", method="PATCH")),
            "PATCH",
        ),
        (
            lambda: checks.check_rpc_methods(
                make_key(rpc_methods=frozenset({"ok"})),
                b'[{"method":"ok"},{"method":"a"},{"method":"b"},{"method":"a"}]',
            ),
            "a, b",
        ),
        (
            lambda: checks.check_rpc_methods(
                make_key(rpc_methods=frozenset({"ok"})),
                ("[" + ",".join(f'{{"method":"m{n}"}}' for n in range(50)) + "]").encode(),
            ),
            ", ".join(f"m{n}" for n in range(checks.RPC_DETAIL_METHODS)),
        ),
    ],
    ids=["upstream", "origin", "ip", "user-agent", "http-method", "rpc-batch", "rpc-many"],
)
def test_allowlist_rejections_say_what_they_refused(rejection, detail):
    assert rejection().detail == detail


@pytest.mark.parametrize(
    "rejection",
    [
        lambda: checks.check_key(None, "pk_x", NOW),
        lambda: checks.check_origin(make_key(origins=ORIGINS), facts(origin=None), None),
        lambda: checks.check_credentials(make_key(secret_required=True), facts(), no_tokens)[0],
        lambda: checks.check_rpc_methods(make_key(rpc_methods=frozenset({"ok"})), b"not json"),
    ],
    ids=["invalid-key", "origin-required", "secret-required", "invalid-rpc"],
)
def test_other_rejections_have_no_detail(rejection):
    assert rejection().detail == ""


def test_method_override_headers_are_held_to_the_http_method_allowlist():
    key = make_key(http_methods=frozenset({"GET"}))
    refused = checks.check_client(key, facts(method="GET", method_overrides=("DELETE",)))
    assert refused is not None
    assert (refused.code, refused.detail) == ("http_method_not_allowed", "DELETE")
    assert checks.check_client(key, facts(method="GET", method_overrides=("GET",))) is None
    assert checks.check_client(make_key(), facts(method="GET", method_overrides=("DELETE",))) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc": "2.0", "method": "eth_blockNumber", "method": "admin_peers", "id": 1}',
        b'[{"jsonrpc": "2.0", "method": "eth_blockNumber", "id": 1, "id": 2}]',
        b'{"jsonrpc": "2.0", "method": "eth_blockNumber", "params": [{"a": 1, "a": 2}], "id": 1}',
        b'{"jsonrpc": "2.0", "method": "eth_blockNumber", "Method": "debug_traceTransaction", "id": 1}',
        '{"jsonrpc": "2.0", "method": "eth_blockNumber", "\u212aey": 1, "key": 2, "id": 1}'.encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=[
        "duplicate-method",
        "duplicate-id-in-batch",
        "duplicate-inside-params",
        "method-in-another-case",  # Go's encoding/json would run debug_traceTransaction
        "kelvin-sign-folds-to-k",
        "nested-arrays",
        "nested-objects",
    ],
)
def test_ambiguous_or_bottomless_json_rpc_is_invalid_rpc_request(body):
    key = make_key(rpc_methods=frozenset({"eth_blockNumber", "admin_peers"}))
    assert code(checks.check_rpc_methods(key, body)) == "invalid_rpc_request"


# --- user-agent globs: the old regex's meaning, in linear time ------------------------------------


def _glob_as_regex(entry: str):
    """The regex the matcher replaced (backtracking): the meaning user-agent entries always had."""
    import re

    return re.compile("^" + ".*".join(re.escape(part) for part in entry.split("*")) + "$", re.IGNORECASE)


UA_PATTERNS = ["MyApp/*", "*", "curl/8", "*Bot", "*bot*", "a*b*c", "a*a", "*a*", "ab*ba", "**", "a**b"]
UA_PATTERNS += ["A*B*", "*b*b"]
UA_AGENTS = ["", "a", "aa", "ab", "aba", "abba", "abcabc", "ac", "cab", "myapp/1", "MyApp/1.2 (iOS)"]
UA_AGENTS += ["curl/8", "CURL/8", "curl/8.1", "GoogleBot", "googlebot/2.1", "xbotx", "bo", "aXbXc", "acb"]
UA_AGENTS += ["aab", "baab", "bb", "bbb", "abab"]


@pytest.mark.parametrize("entry", UA_PATTERNS)
def test_user_agent_glob_means_what_it_always_meant(entry):
    from proxy.policy import _user_agent_pattern, user_agent_allowed

    for agent in UA_AGENTS:
        expected = _glob_as_regex(entry).match(agent) is not None
        assert user_agent_allowed(agent, (_user_agent_pattern(entry),)) is expected, (entry, agent)


class _TooSlow(Exception):
    pass


def _run_for_at_most(seconds: float, work):
    """Run `work`, interrupted (by a signal, which even a regex match heeds) after `seconds`."""
    import signal

    def stop(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        started = time.perf_counter()
        result = work()
        return result, time.perf_counter() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Hostile patterns: nested wildcards (catastrophic for a backtracking regex), long needles that nearly
# match everywhere, many small parts, and a suffix that fails only at the very end.
HOSTILE_UA_PATTERNS = [
    "*a*a*a*a*a*a*a*a*a*a*a*a*b",
    "*" + "a" * 253 + "b*",
    "*" + "*".join(["aab"] * 60) + "*",
    "*" + ("ab" * 60) + "c*",
    "a*" + "a" * 120 + "*" + "a" * 120 + "b",
    "*a*b*a*b*a*b*a*b*a*b*a*b*a*b*c",
]
HOSTILE_UA_PATTERN_IDS = ["nested", "long-needle", "many-parts", "periodic", "two-long-parts", "alternating"]
HOSTILE_USER_AGENTS = ["a" * 8192, "ab" * 4096, ("a" * 99 + "b") * 82]


@pytest.mark.parametrize("entry", HOSTILE_UA_PATTERNS, ids=HOSTILE_UA_PATTERN_IDS)
@pytest.mark.parametrize("agent", HOSTILE_USER_AGENTS, ids=["a", "ab", "a99b"])
def test_worst_user_agent_patterns_decide_an_8_kib_user_agent_within_milliseconds(entry, agent):
    from proxy.policy import _user_agent_pattern

    key = make_key(user_agents=(_user_agent_pattern(entry),) * 20)  # the most patterns a key may list
    try:
        _, elapsed = _run_for_at_most(2.0, lambda: checks.check_client(key, facts(user_agent=agent)))
    except _TooSlow:
        pytest.fail(f"{entry[:40]!r} against {len(agent)} characters took over 2 s")
    assert elapsed < 0.05, f"{entry[:40]!r}: {elapsed * 1000:.1f} ms"

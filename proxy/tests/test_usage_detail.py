"""What a rejection refused (its detail: the origin, address, user agent, method, upstream) reaches
UsageRecord and the portal's "rejections by reason", through the real proxy over HTTP, the counter,
its store and the roll-up job; hostile and numerous details stay bounded."""

import base64
import http.client
import json
import secrets
import time
from datetime import timedelta

import pytest
import urllib3
from django.utils import timezone

from keys import selectors, services
from keys.models import UsageRecord
from keys.usage import roll_up
from keys.usage import store as usage_store
from keys.usage.store import (
    DETAIL_MAX_CHARS,
    DETAILS_PER_KEY_MINUTE,
    OTHER_DETAIL,
    LocalUsageStore,
    usage_field,
    usage_key,
)
from proxy.usage import RedisUsageStore, UsageCounter, usage

pytestmark = pytest.mark.django_db(transaction=True)

APP = "https://app.example.com"


@pytest.fixture
def echo(upstream_server):
    return services.upstream_create(
        tenant=None,
        slug="echo",
        base_url=f"{upstream_server.url}/echo",
        allow_private_network=True,
        timeout_seconds=2,
        actor="test",
        actor_is_staff=True,
    )


@pytest.fixture
def make_key(tenant, echo):
    def make(**fields):
        fields.setdefault("upstreams", [echo])
        return services.api_key_create(tenant=tenant, name="app", actor="test", **fields)[0]

    return make


@pytest.fixture
def pool():
    manager = urllib3.PoolManager(retries=False, timeout=10)
    yield manager
    manager.clear()


class _Proxy:
    """proxy(key, method=..., headers=..., body=...) calls the proxy and returns the error code it answered;
    proxy.url(key) is the URL it calls."""

    def __init__(self, site, pool) -> None:
        self._site, self._pool = site, pool

    def __call__(self, key, *, method="GET", headers=None, body=None, upstream="echo") -> str:
        response = self._pool.request(
            method, self.url(key, upstream), headers=headers, body=body, redirect=False
        )
        return json.loads(response.data)["error"]["code"]

    def url(self, key, upstream="echo") -> str:
        return f"{self._site.url}/proxy/{upstream}/{key.key_id}/"


@pytest.fixture
def proxy(site, pool):
    """Call the proxy and return the error code it answered: proxy(key, method=..., headers=..., body=...)."""
    return _Proxy(site, pool)


def raw_request(site, method: str, target: str, headers: dict[str, bytes]) -> int:
    """A request whose header values are sent as these exact bytes (no client-side checks)."""
    host, port = site.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest(method, target)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status


def rolled_up(key) -> dict[tuple[str, str], int]:
    """Flush what the proxy counted and roll it up; the key's rejections as {(code, detail): count}."""
    usage.flush()
    roll_up.usage_roll_up(now=time.time() + 60)  # the minute just counted is complete by then
    return {
        (row.code, row.detail): row.count
        for row in UsageRecord.objects.filter(api_key=key, outcome="rejected")
    }


def rejections(tenant) -> set[tuple[str, str, str, int]]:
    found = selectors.usage_rejections(tenant=tenant, since=timezone.now() - timedelta(days=1))
    return {(row["key_id"], row["code"], row["detail"], row["count"]) for row in found}


def within_one_minute(seconds_needed: float = 10) -> None:
    """Wait for the next minute if this one ends within `seconds_needed` (the bound is per minute)."""
    left = 60 - time.time() % 60
    if left < seconds_needed:
        time.sleep(left + 0.05)


def rpc(*methods: str) -> bytes:
    calls = [{"jsonrpc": "2.0", "id": index, "method": method} for index, method in enumerate(methods)]
    return json.dumps(calls[0] if len(calls) == 1 else calls).encode()


# --- Each allowlist's refusal is recorded with what it refused ------------------------------------


def test_refused_origin_is_recorded_with_the_origin(proxy, make_key, tenant):
    key = make_key(allowed_origins=[APP])
    for _ in range(2):
        assert proxy(key, headers={"Origin": "https://evil.example"}) == "origin_not_allowed"
    assert proxy(key, headers={"Origin": "https://other.example:8443"}) == "origin_not_allowed"
    assert rolled_up(key) == {
        ("origin_not_allowed", "https://evil.example"): 2,
        ("origin_not_allowed", "https://other.example:8443"): 1,
    }
    assert rejections(tenant) == {
        (key.key_id, "origin_not_allowed", "https://evil.example", 2),
        (key.key_id, "origin_not_allowed", "https://other.example:8443", 1),
    }


def test_refused_preflight_is_recorded_with_the_origin_and_an_allowed_one_is_not(proxy, make_key, tenant):
    # A browser's JSON POST from a wrong origin stops at its preflight: that is all the proxy sees.
    key = make_key(allowed_origins=[APP])
    asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    assert (
        proxy(key, method="OPTIONS", headers={**asks, "Origin": "https://evil.example"})
        == "origin_not_allowed"
    )
    granted = urllib3.request("OPTIONS", proxy.url(key), headers={**asks, "Origin": APP}, retries=False)

    assert granted.status == 204
    assert rolled_up(key) == {("origin_not_allowed", "https://evil.example"): 1}
    assert not UsageRecord.objects.filter(api_key=key, outcome="allowed").exists()


def test_refused_http_method_is_recorded_with_the_method(proxy, make_key, tenant):
    key = make_key(allowed_http_methods=["GET"])
    assert proxy(key, method="DELETE") == "http_method_not_allowed"
    assert proxy(key, method="PUT", body=b"x") == "http_method_not_allowed"
    assert rolled_up(key) == {("http_method_not_allowed", "DELETE"): 1, ("http_method_not_allowed", "PUT"): 1}
    assert rejections(tenant) == {
        (key.key_id, "http_method_not_allowed", "DELETE", 1),
        (key.key_id, "http_method_not_allowed", "PUT", 1),
    }


def test_refused_rpc_methods_are_recorded_by_name_once_each(proxy, make_key, tenant):
    key = make_key(allowed_rpc_methods=["eth_blockNumber"])
    json_body = {"Content-Type": "application/json"}
    assert proxy(key, method="POST", headers=json_body, body=rpc("eth_sendRawTransaction")) == (
        "rpc_method_not_allowed"
    )
    batch = rpc("eth_blockNumber", "eth_sign", "eth_accounts", "eth_sign")
    assert proxy(key, method="POST", headers=json_body, body=batch) == "rpc_method_not_allowed"
    assert rolled_up(key) == {
        ("rpc_method_not_allowed", "eth_sendRawTransaction"): 1,
        ("rpc_method_not_allowed", "eth_sign, eth_accounts"): 1,
    }
    assert (key.key_id, "rpc_method_not_allowed", "eth_sendRawTransaction", 1) in rejections(tenant)


def test_refused_client_address_is_recorded_with_the_address(proxy, make_key, tenant):
    key = make_key(allowed_ips=["203.0.113.0/24"])
    assert proxy(key) == "ip_not_allowed"
    assert rolled_up(key) == {("ip_not_allowed", "127.0.0.1"): 1}
    assert rejections(tenant) == {(key.key_id, "ip_not_allowed", "127.0.0.1", 1)}


def test_refused_user_agent_is_recorded_with_the_user_agent(proxy, make_key, tenant):
    key = make_key(allowed_user_agents=["MyApp/*"])
    assert proxy(key, headers={"User-Agent": "curl/8.5.0"}) == "user_agent_not_allowed"
    assert rolled_up(key) == {("user_agent_not_allowed", "curl/8.5.0"): 1}
    assert rejections(tenant) == {(key.key_id, "user_agent_not_allowed", "curl/8.5.0", 1)}


def test_refused_upstream_is_recorded_with_its_slug(proxy, make_key, tenant, loopback_upstream):
    key = make_key()
    assert proxy(key, upstream=loopback_upstream.slug) == "upstream_not_allowed"
    assert rolled_up(key) == {("upstream_not_allowed", loopback_upstream.slug): 1}


def test_rejections_without_an_allowlist_have_no_detail(proxy, make_key, tenant):
    key = make_key(secret_required=True)
    assert proxy(key) == "secret_required"
    bad = "Basic " + base64.b64encode(b":sk_wrong").decode()
    assert proxy(key, headers={"Authorization": bad}) == "invalid_secret"
    assert rolled_up(key) == {("secret_required", ""): 1, ("invalid_secret", ""): 1}


# --- Bounded and safe ------------------------------------------------------------------------------


def test_random_origins_are_bounded_per_key_and_minute_and_still_all_counted(proxy, make_key, tenant):
    key = make_key(allowed_origins=[APP])
    within_one_minute()
    for _ in range(50):
        assert (
            proxy(key, headers={"Origin": f"https://{secrets.token_hex(8)}.example"}) == "origin_not_allowed"
        )
    counts = rolled_up(key)
    assert len(counts) == DETAILS_PER_KEY_MINUTE + 1
    assert counts[("origin_not_allowed", OTHER_DETAIL)] == 50 - DETAILS_PER_KEY_MINUTE
    assert sum(counts.values()) == 50
    assert sum(row[3] for row in rejections(tenant)) == 50


def test_the_bound_is_per_key(proxy, make_key):
    first, second = make_key(allowed_origins=[APP]), make_key(allowed_origins=[APP])
    within_one_minute()
    for index in range(DETAILS_PER_KEY_MINUTE):
        assert proxy(first, headers={"Origin": f"https://a{index}.example"}) == "origin_not_allowed"
    assert proxy(second, headers={"Origin": "https://b.example"}) == "origin_not_allowed"
    assert proxy(first, headers={"Origin": "https://a0.example"}) == "origin_not_allowed"  # seen: kept
    assert OTHER_DETAIL not in {detail for _, detail in rolled_up(first)}
    assert rolled_up(second) == {("origin_not_allowed", "https://b.example"): 1}


@pytest.mark.parametrize(
    ("method", "detail"),
    [
        ("a|b||c", "a|b||c"),
        ("x|rejected|code|y", "x|rejected|code|y"),
        ("nul\x00tab\tnewline\ndel\x7f", "nul\ufffdtab\ufffdnewline\ufffddel\ufffd"),
        ("bidi\u202eoverride\u200bzero-width", "bidi\ufffdoverride\ufffdzero-width"),
        ("lone\ud800surrogate", "lone\ufffdsurrogate"),
        ("m" * 5000, "m" * (DETAIL_MAX_CHARS - 1) + "\u2026"),
    ],
    ids=["pipes", "a-field", "controls", "invisible", "surrogate", "long"],
)
def test_hostile_rpc_method_names_are_recorded_cleaned(proxy, make_key, tenant, method, detail):
    key = make_key(allowed_rpc_methods=["eth_blockNumber"])
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()  # \ud800 escaped in JSON
    assert proxy(key, method="POST", headers={"Content-Type": "application/json"}, body=body) == (
        "rpc_method_not_allowed"
    )
    assert rolled_up(key) == {("rpc_method_not_allowed", detail): 1}
    assert rejections(tenant) == {(key.key_id, "rpc_method_not_allowed", detail, 1)}


def test_hostile_origin_and_user_agent_bytes_are_recorded_cleaned(site, make_key):
    key = make_key(allowed_origins=[APP], allowed_user_agents=["MyApp/*"])
    target = f"/proxy/echo/{key.key_id}/"
    assert raw_request(site, "GET", target, {"Origin": b"https://a|b.example\x01\x7f\xe9"}) == 403
    long_agent = b"Agent|" + b"\x9b" * 300
    assert raw_request(site, "GET", target, {"Origin": APP.encode(), "User-Agent": long_agent}) == 403
    assert rolled_up(key) == {
        ("origin_not_allowed", "https://a|b.example\ufffd\ufffd\u00e9"): 1,  # WSGI reads latin-1
        ("user_agent_not_allowed", "Agent|" + "\ufffd" * (DETAIL_MAX_CHARS - 7) + "\u2026"): 1,
    }


# --- The store's formats ---------------------------------------------------------------------------


def _store_raw(minute: int, field: str, count: int) -> None:
    """Put a counter into the store the roll-up reads, as a process of any version could have."""
    source = usage_store.usage_source()
    if isinstance(source, LocalUsageStore):
        with source.lock:
            source.minutes[minute][field] += count
    else:
        source.client.hincrby(usage_key(minute), field, count)


def test_a_counter_in_the_format_from_before_details_still_rolls_up(api_key, tenant):
    minute = usage_store.minute_of(time.time()) - 120
    _store_raw(minute, f"{api_key.key_id}|rejected|origin_not_allowed", 4)  # flushed by an older process
    _store_raw(minute, f"{api_key.key_id}|allowed|", 7)
    _store_raw(minute, usage_field(api_key.key_id, "rejected", "origin_not_allowed", "https://x.example"), 1)
    roll_up.usage_roll_up(now=time.time())
    counts = {
        (row.outcome, row.code, row.detail): row.count for row in UsageRecord.objects.filter(api_key=api_key)
    }
    assert counts == {
        ("rejected", "origin_not_allowed", ""): 4,
        ("allowed", "", ""): 7,
        ("rejected", "origin_not_allowed", "https://x.example"): 1,
    }
    assert rejections(tenant) == {
        (api_key.key_id, "origin_not_allowed", "", 4),
        (api_key.key_id, "origin_not_allowed", "https://x.example", 1),
    }


def test_fields_without_a_detail_keep_the_format_from_before_details():
    assert usage_field("pk_a", "allowed") == "pk_a|allowed|"
    assert usage_field("pk_a", "rejected", "rate_limited") == "pk_a|rejected|rate_limited"
    assert (
        usage_field("pk_a", "rejected", "origin_not_allowed", "o|x") == "pk_a|rejected|origin_not_allowed|o|x"
    )
    assert usage_store.usage_field_parts("pk_a|rejected|origin_not_allowed|o|x") == (
        "pk_a",
        "rejected",
        "origin_not_allowed",
        "o|x",
    )
    assert usage_store.usage_field_parts("pk_a|allowed|") == ("pk_a", "allowed", "", "")
    assert usage_store.usage_field_parts("pk_a|allowed") is None


# --- The counter itself ----------------------------------------------------------------------------


def test_the_counter_bounds_details_per_key_and_minute_and_starts_afresh_each_minute(monkeypatch):
    counter = UsageCounter(LocalUsageStore())
    now = [1_800_000_000.0]
    monkeypatch.setattr("proxy.usage.time.time", lambda: now[0])
    for index in range(DETAILS_PER_KEY_MINUTE + 5):
        counter.count("pk_a", "rejected", "origin_not_allowed", f"https://{index}.example")
    counter.count("pk_a", "rejected", "ip_not_allowed", "10.0.0.1")
    counter.count("pk_a", "rejected", "origin_not_allowed", "https://0.example")  # already counted
    counter.count("pk_b", "rejected", "ip_not_allowed", "10.0.0.1")
    counter.count("pk_a", "allowed")
    minute = 1_800_000_000 // 60 * 60
    pending = counter.pending()
    assert pending[(minute, "pk_a", "rejected", "origin_not_allowed", OTHER_DETAIL)] == 5
    assert pending[(minute, "pk_a", "rejected", "ip_not_allowed", OTHER_DETAIL)] == 1
    assert pending[(minute, "pk_a", "rejected", "origin_not_allowed", "https://0.example")] == 2
    assert pending[(minute, "pk_b", "rejected", "ip_not_allowed", "10.0.0.1")] == 1
    assert pending[(minute, "pk_a", "allowed", "", "")] == 1
    assert sum(pending.values()) == DETAILS_PER_KEY_MINUTE + 9
    counter.flush()  # a flush within the minute does not reset the bound
    counter.count("pk_a", "rejected", "origin_not_allowed", "https://new.example")
    assert counter.pending() == {(minute, "pk_a", "rejected", "origin_not_allowed", OTHER_DETAIL): 1}
    now[0] += 60
    counter.count("pk_a", "rejected", "origin_not_allowed", "https://new.example")
    assert (
        counter.pending()[(minute + 60, "pk_a", "rejected", "origin_not_allowed", "https://new.example")] == 1
    )


class _RecordingPipeline:
    """Stands in for a redis-py pipeline: records the commands (the real one is tested with REDIS_URL)."""

    def __init__(self) -> None:
        self.fields: dict[tuple[str, str], int] = {}
        self.sets = 0

    def hincrby(self, name, field, count):
        self.fields[(name, field)] = self.fields.get((name, field), 0) + count

    def expire(self, name, seconds):
        pass

    def set(self, name, value, nx, ex):
        self.sets += 1

    def execute(self):
        return [True] * self.sets


def test_the_redis_writer_writes_the_detail_into_the_field():
    pipeline = _RecordingPipeline()
    store = RedisUsageStore.__new__(RedisUsageStore)
    store._client = type("Client", (), {"pipeline": lambda self, transaction: pipeline})()
    counts = {
        (60, "pk_a", "rejected", "origin_not_allowed", "https://a|b.example"): 2,
        (60, "pk_a", "allowed", "", ""): 5,
    }
    assert store.add(counts, {"pk_a"}, time.time()) == ["pk_a"]
    assert pipeline.fields == {
        (usage_key(60), "pk_a|rejected|origin_not_allowed|https://a|b.example"): 2,
        (usage_key(60), "pk_a|allowed|"): 5,
    }

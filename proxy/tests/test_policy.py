"""The policy cache: made-up key ids never reach the database, hot entries survive floods, and an entry
is trusted for long only while the push channel vouches for it (DESIGN.md: one second everywhere)."""

import http.client
import json
import secrets
import types

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from keys import crypto
from proxy import policy as policy_module
from proxy.policy import PushChannel, _Store, policies

pytestmark = pytest.mark.django_db


def made_up_key_id() -> str:
    """Looks like a key id (prefix, length, alphabet), but its checksum is wrong."""
    while True:
        value = crypto.KEY_ID_PREFIX + "".join(secrets.choice(crypto.BASE62) for _ in range(30))
        if not crypto.well_formed(value, crypto.KEY_ID_PREFIX):
            return value


# --- made-up ids: refused before any lookup -------------------------------------------------------


def test_a_thousand_checksum_invalid_key_ids_cost_no_query_and_no_cache_entry(client, echo):
    ids = [made_up_key_id() for _ in range(1000)]
    with CaptureQueriesContext(connection) as queries:
        answers = [client.get(f"/proxy/echo/{key_id}/x") for key_id in ids]
    # Only the upstream is looked up (once a second without a push channel): never a key, never a token.
    key_lookups = [query for query in queries.captured_queries if "keys_upstream" not in query["sql"]]
    assert key_lookups == []
    assert {(answer.status_code, answer.json()["error"]["code"]) for answer in answers} == {
        (401, "invalid_key")
    }
    assert not any(key_id in policies.keys for key_id in ids)


@pytest.mark.parametrize(
    "target",
    ["pk_%00abc", "pk_%00abc/x", "%00", "pk_" + "a" * 5000, "pk_%C3%A9" + "a" * 28, "pk_%FF%FE", "sk_abc"],
)
def test_malformed_key_ids_are_401_invalid_key_through_the_server(site, echo, target):
    assert raw_get(site, f"/proxy/echo/{target}") == (401, "invalid_key")


def test_an_unknown_upstream_is_still_404_before_a_malformed_key_id(site):
    assert raw_get(site, "/proxy/nope/pk_%00abc/x") == (404, "unknown_upstream")


def raw_get(site, target: str) -> tuple[int, str]:
    """(status, error code) of a GET with the target exactly as written (no client-side normalisation)."""
    host, port = site.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, json.loads(response.read())["error"]["code"]
    finally:
        connection.close()


# --- least recently used eviction -----------------------------------------------------------------


class Rows:
    """A loader over a fixed table, counting its lookups (what the database would see)."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.lookups: list[str] = []

    def __call__(self, name: str):
        self.lookups.append(name)
        return f"policy of {name}" if name in self.existing else None


@override_settings(PROXY_POLICY_CACHE_ENTRIES=50)
def test_a_hot_key_survives_a_flood_of_made_up_ids_larger_than_the_cache():
    rows = Rows({"hot"})
    store = _Store(rows, PushChannel())
    assert store.get("hot") == "policy of hot"
    for n in range(500):
        assert store.get(f"made-up-{n}") is None
    assert store.get("hot") == "policy of hot"
    assert rows.lookups.count("hot") == 1


@override_settings(PROXY_POLICY_CACHE_ENTRIES=50)
def test_a_key_in_use_survives_a_flood_of_other_real_keys_larger_than_the_cache():
    rows = Rows({"hot"} | {f"cold-{n}" for n in range(500)})
    store = _Store(rows, PushChannel())
    for n in range(500):
        if n % 10 == 0:
            assert store.get("hot") == "policy of hot"
        assert store.get(f"cold-{n}") == f"policy of cold-{n}"
    assert rows.lookups.count("hot") == 1  # used every tenth request: never the least recently used
    assert store.get("cold-0") == "policy of cold-0" and rows.lookups.count("cold-0") == 2  # evicted


@override_settings(PROXY_POLICY_CACHE_ENTRIES=50)
def test_a_hot_key_survives_a_flood_of_unknown_well_formed_key_ids(api_key, django_assert_num_queries):
    assert policies.key(api_key.key_id) is not None
    for _ in range(200):
        assert policies.key(crypto.new_key_id()) is None  # checksum right, no such key: one lookup each
    with django_assert_num_queries(0):
        policy = policies.key(api_key.key_id)
        assert policy is not None and policy.key_id == api_key.key_id


# --- freshness, judged when read ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(policy_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    return clock


def _live_store(clock):
    channel = PushChannel()
    channel.answered(clock.now)
    rows = Rows({"key"})
    return channel, rows, _Store(rows, channel)


def _keep_answering(channel, clock, seconds: float) -> None:
    for _ in range(int(seconds / 0.25)):
        clock.now += 0.25
        channel.answered(clock.now)


def test_an_entry_is_trusted_long_while_the_channel_answers(clock):
    channel, rows, store = _live_store(clock)
    clock.now += 0.1
    store.get("key")
    _keep_answering(channel, clock, 60)
    store.get("key")
    assert rows.lookups == ["key"]


def test_an_entry_loaded_while_the_channel_was_live_is_reloaded_within_a_second_of_losing_it(clock):
    channel, rows, store = _live_store(clock)
    clock.now += 0.1
    store.get("key")
    _keep_answering(channel, clock, 10)
    channel.lost()
    store.get("key")
    assert rows.lookups == ["key", "key"]


def test_an_entry_is_reloaded_when_the_channel_falls_silent_before_anyone_notices(clock):
    channel, rows, store = _live_store(clock)
    clock.now += 0.1
    store.get("key")
    _keep_answering(channel, clock, 10)
    clock.now += 0.4  # pings late, within the silence allowed
    store.get("key")
    assert rows.lookups == ["key"]
    clock.now += 0.2  # no answer for 0.6 s: Redis may be gone, a change may have been lost
    store.get("key")
    assert rows.lookups == ["key", "key"]


def test_an_entry_loaded_before_the_channel_came_back_lives_one_second(clock):
    channel, rows, store = _live_store(clock)
    channel.lost()
    store.get("key")  # loaded while nothing vouches for later changes
    clock.now += 0.5
    channel.answered(clock.now)  # a new subscription: it cannot vouch for what happened before it
    _keep_answering(channel, clock, 0.5)
    store.get("key")
    assert rows.lookups == ["key", "key"]


def test_a_load_that_raced_a_drop_of_its_name_is_trusted_one_second_only(clock):
    channel = PushChannel()
    channel.answered(clock.now)
    clock.now += 0.1

    def load_while_the_key_changes(name):
        store.drop([name])  # the change commits and is announced while this read is in flight
        return "policy read before the change"

    store = _Store(load_while_the_key_changes, channel)
    assert store.get("key") == "policy read before the change"
    loads = []

    def load_after_the_change(name):
        loads.append(name)
        return "policy after the change"

    store._loader = load_after_the_change
    _keep_answering(channel, clock, 1.25)
    assert store.get("key") == "policy after the change"
    assert loads == ["key"]

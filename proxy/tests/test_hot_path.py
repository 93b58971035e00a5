"""What the hot path costs and how it degrades: no database query in steady state, Redis down
fails open, the database down keeps cached keys working."""

import base64
import json
import time

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings

from keys import services
from keys.models import ApiKey
from proxy import invalidation
from proxy import usage as usage_module
from proxy.policy import policies
from proxy.ratelimit import Limiter, LocalCounters, RedisCounters
from proxy.usage import LocalUsageStore, RedisUsageStore, UsageCounter


@pytest.fixture
def echo(upstream_server, db):
    return services.upstream_create(
        tenant=None,
        slug="echo",
        base_url=f"{upstream_server.url}/echo",
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
    )


@pytest.fixture
def key_and_secret(tenant, echo):
    return services.api_key_create(
        tenant=tenant,
        name="app",
        upstreams=[echo],
        allowed_origins=["https://app.example.com"],
        rate_limit="1000/m",
        actor="test",
    )


def _get(client, key, secret=None, **headers):
    if secret:
        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f":{secret}".encode()).decode()
    response = client.get(f"/proxy/echo/{key.key_id}/x", HTTP_ORIGIN="https://app.example.com", **headers)
    b"".join(response.streaming_content) if response.streaming else response.content
    return response


def test_a_steady_state_proxied_request_makes_no_database_query(
    client, key_and_secret, django_assert_num_queries
):
    key, secret = key_and_secret
    assert _get(client, key).status_code == 200  # loads and caches the policy
    with django_assert_num_queries(0):
        response = _get(client, key)
    assert response.status_code == 200


def test_a_token_request_in_steady_state_makes_no_database_query(
    client, key_and_secret, django_assert_num_queries
):
    key, _ = key_and_secret
    _, token = services.access_token_issue(api_key=key, ttl=60)
    assert _get(client, key, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    with django_assert_num_queries(0):
        assert _get(client, key, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    "sqlite" in settings.DATABASES["default"]["ENGINE"],
    reason="an in-memory SQLite database cannot be taken down; runs on PostgreSQL",
)
def test_database_down_keeps_cached_keys_working_and_others_answer_503(client, key_and_secret, tenant, echo):
    key, secret = key_and_secret
    other, _ = services.api_key_create(tenant=tenant, name="other", upstreams=[echo], actor="test")
    assert _get(client, key).status_code == 200
    time.sleep(1.1)  # past the entry's lifetime: the next request tries the database again
    settings_dict = connection.settings_dict
    saved = dict(settings_dict)
    connection.close()
    settings_dict["PORT"] = "1"  # nothing listens there: every query fails to connect
    try:
        assert _get(client, key).status_code == 200
        response = _get(client, other)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"
    finally:
        connection.close()
        settings_dict.update(saved)
        connection.connect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    "sqlite" in settings.DATABASES["default"]["ENGINE"],
    reason="an in-memory SQLite database cannot be taken down; runs on PostgreSQL",
)
def test_database_down_an_uncached_access_token_answers_503_not_500(client, key_and_secret):
    key, _ = key_and_secret
    _, token = services.access_token_issue(api_key=key, ttl=60)
    assert _get(client, key).status_code == 200  # the key is cached; the token is not
    settings_dict = connection.settings_dict
    saved = dict(settings_dict)
    connection.close()
    settings_dict["PORT"] = "1"  # nothing listens there: every query fails to connect
    try:
        response = _get(client, key, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"
    finally:
        connection.close()
        settings_dict.update(saved)
        connection.connect()


def test_redis_down_fails_open_and_counts_it():
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    limiter = Limiter(RedisCounters(client=dead))
    from proxy.tests.test_checks import make_key

    key = make_key(rate=(1, 60))
    started = time.monotonic()
    verdicts = [limiter.check(key, time.time()) for _ in range(50)]
    assert all(verdict.rejection is None for verdict in verdicts)
    assert limiter.fail_open_count == 50
    assert time.monotonic() - started < 1.0  # one failed attempt, then Redis is skipped for a second


def test_local_limiter_never_lets_more_than_the_limit_through():
    from proxy.tests.test_checks import make_key

    limiter = Limiter(LocalCounters())
    key = make_key(rate=(100, 3600))
    now = time.time()
    allowed = sum(limiter.check(key, now).rejection is None for _ in range(250))
    assert allowed == 100


def test_a_new_daily_quota_counter_resumes_from_the_recorded_day_total_off_the_request_path(
    api_key, django_assert_num_queries
):
    """A counter Redis lost (or a restarted embedded process's) starts again at what the usage records
    say was spent today, not at zero; the request itself makes no query."""
    from proxy.tests.test_checks import make_key

    now = time.time()
    usage_module.usage.count(api_key.key_id, usage_module.ALLOWED)
    for _ in range(6):
        usage_module.usage.count(api_key.key_id, usage_module.UPSTREAM_ERROR)
    usage_module.usage.flush()  # 7 spent today, durable
    limiter = Limiter(LocalCounters())
    key = make_key(key_id=api_key.key_id, daily_quota=10)
    with django_assert_num_queries(0):
        assert limiter.check(key, now).rejection is None  # the new counter: its seeding is queued
    assert limiter.seed_pending() == 1
    allowed = 1 + sum(limiter.check(key, now).rejection is None for _ in range(20))
    assert allowed == 3  # 10 - 7, not 10


def test_usage_is_counted_per_key_minute_outcome_and_code_and_last_used_is_touched_once_a_minute(api_key):
    store = LocalUsageStore()
    counter = UsageCounter(store)
    counter.count(api_key.key_id, usage_module.ALLOWED)
    counter.count(api_key.key_id, usage_module.ALLOWED)
    counter.count(api_key.key_id, usage_module.REJECTED, "origin_not_allowed")
    counter.flush()
    minute = int(time.time() // 60) * 60
    counts = store.minutes[minute]
    assert counts[f"{api_key.key_id}|allowed|"] == 2
    assert counts[f"{api_key.key_id}|rejected|origin_not_allowed"] == 1
    first = ApiKey.objects.get(pk=api_key.pk).last_used_at
    assert first is not None
    counter.count(api_key.key_id, usage_module.ALLOWED)
    counter.flush()
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == first


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")
def test_usage_counters_land_in_redis(api_key):
    counter = UsageCounter(RedisUsageStore())
    counter.count(api_key.key_id, usage_module.REJECTED, "rate_limited")
    counter.flush()
    minute = int(time.time() // 60) * 60
    client = RedisUsageStore()._client
    assert int(client.hget(f"usage:{minute}", f"{api_key.key_id}|rejected|rate_limited")) >= 1


def test_policy_cache_is_dropped_when_the_key_changes(
    client, key_and_secret, django_capture_on_commit_callbacks
):
    key, _ = key_and_secret
    assert _get(client, key).status_code == 200
    assert key.key_id in policies.keys
    with django_capture_on_commit_callbacks(execute=True):
        services.api_key_update(api_key=key, allowed_origins=["https://other.example"], actor="test")
    assert key.key_id not in policies.keys
    assert _get(client, key).status_code == 403


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://127.0.0.1:6379/15", "keyportal:policy-changed:15"),
        ("redis://127.0.0.1:6379/2", "keyportal:policy-changed:2"),
        ("redis://127.0.0.1:6379", "keyportal:policy-changed:0"),
        ("redis://127.0.0.1:6379?db=3", "keyportal:policy-changed:3"),
    ],
)
def test_each_redis_database_has_its_own_policy_channel(url, expected):
    """Redis pub/sub ignores databases: deployments sharing a server must not drop each other's caches."""
    with override_settings(REDIS_URL=url):
        assert invalidation.channel() == expected


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL), as CI has")
def test_the_listener_subscribes_and_a_published_change_drops_the_entry_within_milliseconds(api_key):
    """The push channel is live (long-lived entries are trusted) and another process's publish reaches
    this one: without it every entry would live one second only."""
    invalidation.start_listener()
    deadline = time.monotonic() + 5
    while not policies.channel.covers(time.monotonic() - 0.1, time.monotonic()):
        assert time.monotonic() < deadline, "the policy listener never subscribed"
        time.sleep(0.05)
    assert policies.key(api_key.key_id) is not None
    assert api_key.key_id in policies.keys
    message = json.dumps({"k": [api_key.key_id], "t": [], "u": False})
    redis.Redis.from_url(settings.REDIS_URL).publish(invalidation.channel(), message)
    deadline = time.monotonic() + 2
    while api_key.key_id in policies.keys:
        assert time.monotonic() < deadline, "a published change did not drop the cached entry"
        time.sleep(0.01)

"""Usage counted by the proxy reaches the database through the roll-up job (keys/jobs.py), from the
store the proxy flushes into: Redis when REDIS_URL is set, this process's local store otherwise."""

import time

from keys import services
from keys.models import UsageRecord
from keys.usage import roll_up
from keys.usage.store import local_store
from proxy.usage import usage


def test_the_proxy_counter_flushes_into_the_store_the_embedded_roll_up_reads(settings):
    if not settings.REDIS_URL:
        assert usage.store is local_store


def test_proxied_requests_land_in_usage_records_once(client, api_key_and_secret):
    key, _ = api_key_and_secret
    services.api_key_update(api_key=key, allowed_origins=["https://app.example.com"], actor="test")
    for _ in range(3):  # refused at the origin check, before any upstream call
        response = client.get(f"/proxy/local/{key.key_id}/x", HTTP_ORIGIN="https://evil.example")
        assert response.status_code == 403
    response = client.get(f"/proxy/local/{key.key_id}/x", HTTP_AUTHORIZATION="Basic bad")
    assert response.status_code == 401
    usage.flush()
    next_minute = time.time() + 60  # the minute just counted is complete by then
    roll_up.usage_roll_up(now=next_minute)
    roll_up.usage_roll_up(now=next_minute)
    counts = {(row.outcome, row.code): row.count for row in UsageRecord.objects.filter(api_key=key)}
    assert counts == {("rejected", "origin_not_allowed"): 3, ("rejected", "invalid_secret"): 1}

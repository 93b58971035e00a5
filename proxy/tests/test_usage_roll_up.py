"""Usage counted by the proxy reaches the database at its flush, itself (with or without Redis); the
roll-up job (keys/jobs.py) still adds the counters an older version left in Redis, and never adds a
flushed count twice."""

import time

from django.db import DatabaseError

from keys import services
from keys.models import UsageRecord
from keys.usage import roll_up
from proxy.usage import ALLOWED, DatabaseUsageStore, usage


def test_the_proxy_counter_flushes_into_the_database_itself_with_or_without_redis():
    assert isinstance(usage.store, DatabaseUsageStore)


def test_a_failed_flush_keeps_its_batch_and_applies_it_exactly_once_later(api_key_and_secret, monkeypatch):
    key, _ = api_key_and_secret
    for _ in range(5):
        usage.count(key.key_id, ALLOWED)
    calls = []
    real_apply = roll_up.usage_batch_apply

    def commit_then_lose_the_answer(*, name, counts):
        calls.append(name)
        real_apply(name=name, counts=counts)
        if len(calls) == 1:
            raise DatabaseError("connection lost during COMMIT")  # applied, but the flusher cannot know

    monkeypatch.setattr(roll_up, "usage_batch_apply", commit_then_lose_the_answer)
    usage.flush()
    assert sum(usage.pending().values()) == 0 and usage._pending_requests() == 5  # kept, not counted anew
    usage.count(key.key_id, ALLOWED)
    usage.flush()
    assert calls[0] == calls[1] and len(calls) == 3  # the same batch again, then the new one
    assert UsageRecord.objects.get(api_key=key, outcome=ALLOWED).count == 6
    assert usage._pending_requests() == 0


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

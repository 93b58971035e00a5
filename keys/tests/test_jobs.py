"""The background jobs as plain functions: purge, expire, roll-up, trim, their schedules and the
in-process runner. Concurrency tests run on PostgreSQL (and Redis), as CI has; the rest anywhere."""

import importlib
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connections
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from keys import jobs, services
from keys.models import AccessToken, ApiKey, AuditEvent, UsageRecord, UsageRollup
from keys.policy_changes import policy_changed
from keys.usage import roll_up
from keys.usage import store as usage_store
from keys.usage.store import LocalUsageStore, RedisUsageSource, usage_field, usage_key

on_postgresql = pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"], reason="needs PostgreSQL, as CI has"
)
with_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL), as CI has")

HOUR = 3600
# A whole hour well in the past, so every minute of it is complete.
PAST_HOUR = int(time.time() // HOUR) * HOUR - 5 * HOUR


def _in_threads(target, count: int = 2) -> list:
    """Run `target` in `count` threads started together; each closes its own database connection."""
    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = target()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def _counts(api_key) -> dict[tuple[datetime, str, str], int]:
    return {
        (row.hour, row.outcome, row.code): row.count for row in UsageRecord.objects.filter(api_key=api_key)
    }


# --- Purging access tokens -----------------------------------------------------------------------


def _token(api_key, *, ttl: int = 60, age: timedelta = timedelta(0)) -> AccessToken:
    return services.access_token_issue(api_key=api_key, ttl=ttl, now=timezone.now() - age)[0]


def test_purge_deletes_expired_and_revoked_tokens_and_keeps_live_ones(api_key):
    live = _token(api_key, ttl=600)
    expired = _token(api_key, ttl=60, age=timedelta(minutes=5))
    revoked = services.access_token_revoke(token=_token(api_key, ttl=600))
    assert jobs.access_tokens_purge() == 2
    assert list(AccessToken.objects.values_list("pk", flat=True)) == [live.pk]
    assert not AccessToken.objects.filter(pk__in=[expired.pk, revoked.pk]).exists()


def test_a_purge_of_fifty_tokens_announces_nothing(api_key, django_capture_on_commit_callbacks):
    for _ in range(50):
        _token(api_key, age=timedelta(hours=1))
    sent = []
    policy_changed.connect(
        lambda sender, **kwargs: sent.append(kwargs), dispatch_uid="purge-test", weak=False
    )
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert jobs.access_tokens_purge(batch_size=20) == 50
    finally:
        policy_changed.disconnect(dispatch_uid="purge-test")
    assert sent == []  # each token's expiry is in its own row: the proxy needs no word of its deletion
    assert not AccessToken.objects.exists()


def test_purge_works_in_batches_and_a_rerun_finds_nothing(api_key):
    for _ in range(7):
        _token(api_key, age=timedelta(hours=1))
    assert jobs.access_tokens_purge(batch_size=3) == 7
    assert not AccessToken.objects.exists()
    assert jobs.access_tokens_purge(batch_size=3) == 0


@pytest.mark.parametrize("purged", [False, True], ids=["before-purge", "after-purge"])
def test_an_expired_token_is_refused_whether_or_not_the_purge_has_run(client, api_key, purged):
    _, clear = services.access_token_issue(api_key=api_key, ttl=60, now=timezone.now() - timedelta(minutes=5))
    if purged:
        assert jobs.access_tokens_purge() == 1
    response = client.get(f"/proxy/local/{api_key.key_id}/x", HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == ("invalid_token" if purged else "token_expired")


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_two_purges_at_once_delete_each_token_once_without_error(api_key):
    for _ in range(50):
        _token(api_key, age=timedelta(hours=1))
    deleted = _in_threads(lambda: jobs.access_tokens_purge(batch_size=10))
    assert sum(deleted) == 50
    assert not AccessToken.objects.exists()


# --- Recording expired keys ----------------------------------------------------------------------


def _expired_events(api_key) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="api_key.expired", target_id=api_key.key_id))


def test_an_expired_key_gets_one_audit_event_however_often_the_job_runs(api_key):
    expires_at = timezone.now() - timedelta(minutes=1)
    services.api_key_update(api_key=api_key, expires_at=expires_at, actor="test")
    assert jobs.api_keys_expire() == 1
    assert jobs.api_keys_expire() == 0
    [event] = _expired_events(api_key)
    assert event.tenant == api_key.tenant
    assert event.data == {"expires_at": expires_at.isoformat()}
    assert event.actor_label == jobs.JOB_ACTOR


def test_keys_not_yet_expired_without_expiry_or_revoked_get_no_event(tenant, loopback_upstream):
    soon, _ = services.api_key_create(
        tenant=tenant, name="soon", expires_at=timezone.now() + timedelta(minutes=1), actor="test"
    )
    never, _ = services.api_key_create(tenant=tenant, name="never", actor="test")
    revoked, _ = services.api_key_create(
        tenant=tenant, name="revoked", expires_at=timezone.now() - timedelta(days=1), actor="test"
    )
    services.api_key_revoke(api_key=revoked, actor="test")
    assert jobs.api_keys_expire() == 0
    assert not AuditEvent.objects.filter(action="api_key.expired").exists()


def test_a_key_whose_expiry_is_extended_and_passed_again_gets_a_second_event(api_key):
    services.api_key_update(api_key=api_key, expires_at=timezone.now() - timedelta(hours=2), actor="test")
    assert jobs.api_keys_expire() == 1
    services.api_key_update(api_key=api_key, expires_at=timezone.now() - timedelta(hours=1), actor="test")
    assert jobs.api_keys_expire() == 1
    assert jobs.api_keys_expire() == 0
    assert len(_expired_events(api_key)) == 2


def test_expire_works_in_batches(tenant, loopback_upstream):
    for index in range(5):
        services.api_key_create(
            tenant=tenant, name=f"k{index}", expires_at=timezone.now() - timedelta(days=1), actor="test"
        )
    assert jobs.api_keys_expire(batch_size=2) == 5
    assert AuditEvent.objects.filter(action="api_key.expired").count() == 5


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_two_expire_runs_at_once_write_one_event_per_key(tenant, loopback_upstream):
    for index in range(20):
        services.api_key_create(
            tenant=tenant, name=f"k{index}", expires_at=timezone.now() - timedelta(days=1), actor="test"
        )
    recorded = _in_threads(jobs.api_keys_expire, count=3)
    assert sum(recorded) == 20
    assert AuditEvent.objects.filter(action="api_key.expired").count() == 20
    assert ApiKey.objects.filter(expiry_recorded_for__isnull=True).count() == 0


# --- Rolling usage up ----------------------------------------------------------------------------


def _local_store_with(counts: dict[tuple, int]) -> LocalUsageStore:
    """A store holding `counts`, keyed (minute, key_id, outcome, code[, detail])."""
    store = LocalUsageStore()
    store.add({(*bucket, "")[:5]: count for bucket, count in counts.items()}, set(), time.time())
    return store


def test_roll_up_adds_complete_minutes_into_hourly_records_by_outcome_and_code(api_key):
    key = api_key.key_id
    now = time.time()
    current_minute = usage_store.minute_of(now)
    store = _local_store_with(
        {
            (PAST_HOUR, key, "allowed", ""): 5,
            (PAST_HOUR + 60, key, "allowed", ""): 2,  # the same hour: added to the same record
            (PAST_HOUR + 120, key, "rejected", "origin_not_allowed"): 3,
            (PAST_HOUR + HOUR, key, "upstream_error", "upstream_timeout"): 1,  # the next hour
            (current_minute, key, "allowed", ""): 9,  # still counting: left for a later roll-up
        }
    )
    assert roll_up.usage_roll_up(source=store, now=now) == 11
    hour = datetime.fromtimestamp(PAST_HOUR, UTC)
    assert _counts(api_key) == {
        (hour, "allowed", ""): 7,
        (hour, "rejected", "origin_not_allowed"): 3,
        (hour + timedelta(hours=1), "upstream_error", "upstream_timeout"): 1,
    }
    assert UsageRecord.objects.get(api_key=api_key, outcome="allowed").tenant == api_key.tenant
    assert set(store.minutes) == {current_minute}
    assert roll_up.usage_roll_up(source=store, now=now) == 0  # a rerun counts nothing twice
    assert sum(_counts(api_key).values()) == 11


def test_roll_up_adds_counts_that_arrive_after_a_minute_was_rolled_up(api_key):
    store = _local_store_with({(PAST_HOUR, api_key.key_id, "allowed", ""): 4})
    roll_up.usage_roll_up(source=store)
    store.add({(PAST_HOUR, api_key.key_id, "allowed", "", ""): 1}, set(), time.time())  # a late flush
    assert roll_up.usage_roll_up(source=store) == 1
    assert UsageRecord.objects.get(api_key=api_key).count == 5


def test_roll_up_skips_counters_of_unknown_keys_and_malformed_fields(api_key):
    store = LocalUsageStore()
    store.minutes[PAST_HOUR].update(
        {
            usage_field(api_key.key_id, "allowed"): 2,
            usage_field("pk_deletedlongago000000000000", "allowed"): 40,
            "not-a-field": 7,
            usage_field(api_key.key_id, "rejected", "x" * 100): 1,
        }
    )
    assert roll_up.usage_roll_up(source=store) == 2
    assert UsageRecord.objects.get().count == 2


def _details(api_key) -> dict[tuple[str, str], int]:
    return {
        (row.code, row.detail): row.count
        for row in UsageRecord.objects.filter(api_key=api_key, outcome="rejected")
    }


def test_roll_up_keeps_details_apart_and_reads_fields_from_before_details(api_key):
    key = api_key.key_id
    store = LocalUsageStore()
    store.minutes[PAST_HOUR].update(
        {
            usage_field(key, "rejected", "origin_not_allowed", "https://a.example"): 2,
            usage_field(key, "rejected", "origin_not_allowed", "https://b|c.example"): 1,
            f"{key}|rejected|origin_not_allowed": 3,  # flushed by a process from before details
        }
    )
    store.minutes[PAST_HOUR + 60][usage_field(key, "rejected", "origin_not_allowed", "https://a.example")] = 4
    assert roll_up.usage_roll_up(source=store) == 10
    assert _details(api_key) == {
        ("origin_not_allowed", "https://a.example"): 6,
        ("origin_not_allowed", "https://b|c.example"): 1,
        ("origin_not_allowed", ""): 3,
    }


def test_roll_up_cleans_details_the_store_holds(api_key):
    store = LocalUsageStore()
    store.minutes[PAST_HOUR].update(
        {
            usage_field(api_key.key_id, "rejected", "user_agent_not_allowed", "nul\x00\u202e"): 1,
            usage_field(api_key.key_id, "rejected", "user_agent_not_allowed", "u" * 300): 1,
        }
    )
    assert roll_up.usage_roll_up(source=store) == 2
    assert _details(api_key) == {
        ("user_agent_not_allowed", "nul\ufffd\ufffd"): 1,
        ("user_agent_not_allowed", "u" * (usage_store.DETAIL_MAX_CHARS - 1) + "\u2026"): 1,
    }


def test_roll_up_bounds_distinct_details_per_key_and_hour_most_frequent_first(api_key, monkeypatch):
    monkeypatch.setattr(roll_up, "USAGE_DETAILS_PER_KEY_HOUR", 3)
    key, other = api_key.key_id, usage_store.OTHER_DETAIL
    store = LocalUsageStore()
    store.minutes[PAST_HOUR].update(
        {usage_field(key, "rejected", "ip_not_allowed", f"10.0.0.{n}"): n for n in (1, 2)}
    )
    roll_up.usage_roll_up(source=store)
    store.minutes[PAST_HOUR + 60].update(
        {usage_field(key, "rejected", "ip_not_allowed", f"10.0.0.{n}"): n for n in (1, 3, 4, 5)}
    )
    store.minutes[PAST_HOUR + 60][usage_field(key, "rejected", "ip_not_allowed", other)] = 10
    store.minutes[PAST_HOUR + HOUR][usage_field(key, "rejected", "ip_not_allowed", "10.0.0.4")] = 1
    roll_up.usage_roll_up(source=store)
    hour = datetime.fromtimestamp(PAST_HOUR, UTC)
    in_hour = {
        row.detail: row.count
        for row in UsageRecord.objects.filter(api_key=api_key, hour=hour, code="ip_not_allowed")
    }
    # 10.0.0.1 and .2 were recorded; of the new ones only the most frequent (.5) fits; the next hour
    # starts afresh.
    assert in_hour == {"10.0.0.1": 2, "10.0.0.2": 2, "10.0.0.5": 5, other: 10 + 3 + 4}
    assert UsageRecord.objects.get(api_key=api_key, hour=hour + timedelta(hours=1)).detail == "10.0.0.4"


def test_the_embedded_roll_up_reads_the_store_the_proxy_flushes_into(settings):
    settings.REDIS_URL = ""
    assert usage_store.usage_source() is usage_store.local_store


@with_redis
def test_roll_up_reads_the_proxys_redis_hashes_once(api_key):
    source = usage_store.usage_source()
    assert isinstance(source, RedisUsageSource)
    client = source.client
    now = time.time()
    client.hincrby(usage_key(PAST_HOUR), usage_field(api_key.key_id, "allowed"), 6)
    client.hincrby(usage_key(PAST_HOUR + 60), usage_field(api_key.key_id, "rejected", "rate_limited"), 2)
    current, field = usage_key(usage_store.minute_of(now)), usage_field(api_key.key_id, "allowed")
    client.hincrby(current, field, 1)
    try:
        assert roll_up.usage_roll_up(now=now) == 8
        assert roll_up.usage_roll_up(now=now) == 0
        hour = datetime.fromtimestamp(PAST_HOUR, UTC)
        assert _counts(api_key) == {(hour, "allowed", ""): 6, (hour, "rejected", "rate_limited"): 2}
        assert not client.exists(usage_key(PAST_HOUR), usage_key(PAST_HOUR + 60))
        assert int(cast(bytes, client.hget(current, field))) >= 1  # the current minute is not complete yet
        assert not list(client.scan_iter(match=f"{usage_store.CLAIMED_PREFIX}{PAST_HOUR}:*"))
    finally:
        client.hdel(current, field)


@with_redis
def test_a_roll_up_that_died_before_its_commit_is_finished_by_the_next_one_once(api_key):
    source = usage_store.usage_source()
    assert isinstance(source, RedisUsageSource)
    source.client.hincrby(usage_key(PAST_HOUR), usage_field(api_key.key_id, "allowed"), 3)
    source.claim(now=time.time(), stale_after=roll_up.USAGE_CLAIM_STALE_SECONDS)  # ... and then it died
    assert roll_up.usage_roll_up() == 0  # its claim is not stale yet
    assert roll_up.usage_roll_up(stale_after=0) == 3
    assert roll_up.usage_roll_up(stale_after=0) == 0
    assert UsageRecord.objects.get(api_key=api_key).count == 3


@with_redis
def test_a_roll_up_that_died_after_its_commit_is_not_counted_again(api_key):
    source = usage_store.usage_source()
    assert isinstance(source, RedisUsageSource)
    source.client.hincrby(usage_key(PAST_HOUR), usage_field(api_key.key_id, "allowed"), 3)
    claims = source.claim(now=time.time(), stale_after=roll_up.USAGE_CLAIM_STALE_SECONDS)
    for claim in claims:
        roll_up._usage_claim_apply(claim=claim)  # committed; died before deleting the claim from Redis
    assert roll_up.usage_roll_up(stale_after=0) == 0
    assert UsageRecord.objects.get(api_key=api_key).count == 3
    assert not any(source.client.exists(claim.name) for claim in claims)


@on_postgresql
@with_redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stale_after", [roll_up.USAGE_CLAIM_STALE_SECONDS, 0], ids=["claims", "recovery"])
def test_concurrent_roll_ups_count_every_request_exactly_once(tenant, loopback_upstream, stale_after):
    """Four roll-ups at once over 30 minutes of 5 keys; with stale_after=0 each also takes over the
    others' claims as if they had died, so they race on the same claims too."""
    api_keys = [
        services.api_key_create(tenant=tenant, name=f"k{index}", actor="test")[0] for index in range(5)
    ]
    source = usage_store.usage_source()
    assert isinstance(source, RedisUsageSource)
    client = source.client
    expected = 0
    for minute in range(30):
        for index, api_key in enumerate(api_keys):
            for outcome, code in (("allowed", ""), ("rejected", "rate_limited")):
                count = minute + index + 1
                client.hincrby(
                    usage_key(PAST_HOUR + 60 * minute), usage_field(api_key.key_id, outcome, code), count
                )
                expected += count
    added = _in_threads(lambda: roll_up.usage_roll_up(stale_after=stale_after), count=4)
    assert sum(added) == expected
    assert sum(UsageRecord.objects.values_list("count", flat=True)) == expected
    assert UsageRecord.objects.count() == 5 * 2  # one hour, two buckets per key
    assert UsageRollup.objects.count() == 30


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_roll_ups_of_the_local_store_count_every_request_once(tenant, loopback_upstream):
    api_key, _ = services.api_key_create(tenant=tenant, name="k", actor="test")
    store = _local_store_with(
        {(PAST_HOUR + 60 * minute, api_key.key_id, "allowed", ""): minute + 1 for minute in range(60)}
    )
    added = _in_threads(lambda: roll_up.usage_roll_up(source=store), count=3)
    assert sum(added) == UsageRecord.objects.get().count == sum(range(1, 61))


# --- Trimming ------------------------------------------------------------------------------------


def test_trim_deletes_usage_and_audit_events_past_their_retention(api_key):
    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    for age_days in (1, 89, 91, 200):
        UsageRecord.objects.create(
            tenant=api_key.tenant,
            api_key=api_key,
            hour=hour - timedelta(days=age_days),
            outcome="allowed",
            count=1,
        )
    old_event = services.audit_record(action="test.old", actor="test")
    AuditEvent.objects.filter(pk=old_event.pk).update(created_at=now - timedelta(days=366))
    UsageRollup.objects.create(claim="old", minute=now, created_at=now - timedelta(days=8))
    UsageRollup.objects.create(claim="recent", minute=now)
    events_before = AuditEvent.objects.count()

    trimmed = jobs.usage_trim(batch_size=1)

    assert trimmed == {"usage_records": 2, "audit_events": 1, "usage_rollups": 1}
    assert sorted((hour - row.hour).days for row in UsageRecord.objects.all()) == [1, 89]
    assert AuditEvent.objects.count() == events_before - 1
    assert list(UsageRollup.objects.values_list("claim", flat=True)) == ["recent"]
    assert jobs.usage_trim() == {"usage_records": 0, "audit_events": 0, "usage_rollups": 0}


@override_settings(KEYS_AUDIT_RETENTION_DAYS=0, KEYS_USAGE_RETENTION_DAYS=1)
def test_trim_keeps_audit_events_for_ever_when_their_retention_is_zero(api_key):
    old_event = services.audit_record(action="test.old", actor="test")
    AuditEvent.objects.filter(pk=old_event.pk).update(created_at=timezone.now() - timedelta(days=5000))
    UsageRecord.objects.create(
        tenant=api_key.tenant, api_key=api_key, hour=timezone.now() - timedelta(days=2), outcome="allowed"
    )
    assert jobs.usage_trim() == {"usage_records": 1, "audit_events": 0, "usage_rollups": 0}
    assert AuditEvent.objects.filter(pk=old_event.pk).exists()


# --- Schedules and the in-process runner ---------------------------------------------------------

SCHEDULES = importlib.import_module("keys.migrations.0003_background_job_schedules")
ALERT_SCHEDULES = importlib.import_module("keys.migrations.0007_alert_job_schedules")


def test_beat_runs_purge_expire_and_roll_up_every_minute_and_trim_daily(db):
    SCHEDULES.create_schedules(apps, None)
    SCHEDULES.create_schedules(apps, None)  # idempotent
    mine = PeriodicTask.objects.filter(task__in=[task for _, task, _, _ in SCHEDULES.JOBS])
    tasks = {task.task: (task.interval.every, task.interval.period) for task in mine}
    assert tasks == {
        "keys.tasks.access_tokens_purge": (60, "seconds"),
        "keys.tasks.api_keys_expire": (60, "seconds"),
        "keys.tasks.usage_roll_up": (60, "seconds"),
        "keys.tasks.usage_trim": (1, "days"),
    }
    assert mine.count() == 4


def test_the_migration_keeps_a_schedule_staff_changed(db):
    SCHEDULES.create_schedules(apps, None)
    task = PeriodicTask.objects.get(task="keys.tasks.usage_roll_up")
    task.enabled = False
    task.save()
    SCHEDULES.create_schedules(apps, None)
    assert not PeriodicTask.objects.get(task="keys.tasks.usage_roll_up").enabled


def test_every_scheduled_task_is_a_registered_celery_task():
    from config.celery import app

    app.loader.import_default_modules()
    for _, task, _, _ in SCHEDULES.JOBS + ALERT_SCHEDULES.JOBS:
        assert task in app.tasks


def test_beat_evaluates_alerts_and_retries_webhooks_every_minute(db):
    ALERT_SCHEDULES.create_schedules(apps, None)
    ALERT_SCHEDULES.create_schedules(apps, None)  # idempotent
    mine = PeriodicTask.objects.filter(task__in=[task for _, task, _, _ in ALERT_SCHEDULES.JOBS])
    tasks = {task.task: (task.interval.every, task.interval.period) for task in mine}
    assert tasks == {
        "keys.tasks.alerts_evaluate": (60, "seconds"),
        "keys.tasks.webhook_deliveries_retry": (60, "seconds"),
    }
    assert mine.count() == 2


def test_tasks_run_the_jobs(api_key):
    from keys import tasks

    _token(api_key, age=timedelta(hours=1))
    assert tasks.access_tokens_purge() == 1
    assert tasks.access_tokens_purge() == 0
    assert tasks.api_keys_expire() == 0
    assert tasks.usage_trim() == {"usage_records": 0, "audit_events": 0, "usage_rollups": 0}


def test_the_in_process_runner_runs_each_job_at_its_interval(db):
    last_runs: dict[str, float] = {}
    minutely = ["alerts_evaluate", "webhook_deliveries_retry"]
    assert jobs.run_due_jobs(last_runs=last_runs, now=1_000_000) == [
        "access_tokens_purge",
        "api_keys_expire",
        "usage_roll_up",
        "sharing_roll_up",
        "usage_trim",
        *minutely,
    ]
    assert jobs.run_due_jobs(last_runs=last_runs, now=1_000_030) == []
    assert jobs.run_due_jobs(last_runs=last_runs, now=1_000_060) == [
        "access_tokens_purge",
        "api_keys_expire",
        "usage_roll_up",
        "sharing_roll_up",
        *minutely,
    ]
    assert jobs.run_due_jobs(last_runs=last_runs, now=1_000_000 + 86400) == [
        "access_tokens_purge",
        "api_keys_expire",
        "usage_roll_up",
        "sharing_roll_up",
        "usage_trim",
        *minutely,
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        {"KEYS_INPROCESS_JOBS": False, "REDIS_URL": ""},
        {"KEYS_INPROCESS_JOBS": True, "REDIS_URL": "redis://x"},
    ],
)
def test_no_in_process_job_thread_with_redis_or_when_switched_off(overrides):
    with override_settings(**overrides):
        assert jobs.inprocess_jobs_start() is False


def test_in_process_runner_survives_a_failing_job(db, caplog):
    calls = []

    def broken() -> None:
        raise RuntimeError("boom")

    schedule = (("broken", broken, 60), ("ok", lambda: calls.append(1), 60))
    assert jobs.run_due_jobs(last_runs={}, now=0, schedule=schedule) == ["ok"]
    assert calls == [1]
    assert "in-process job broken failed" in caplog.text

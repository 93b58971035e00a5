"""Alerts and webhooks with a real HTTP receiver on loopback (KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK on, as
a test or a private deployment sets it; production needs https to public addresses)."""

import hashlib
import hmac
import json
import time
from datetime import UTC, timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import TestCase, override_settings
from django.utils import timezone

from keys import alerting, services
from keys.alert_models import AlertEvent, DeliveryStatus, WebhookDelivery
from keys.models import KeySharingDay, UsageRecord
from keys.services import alerts, webhooks
from keys.tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

LOOPBACK_ALLOWED = override_settings(KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK=True)


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance: int = 300) -> dict:
    """What a receiver does (Stripe's scheme): parse t and v1, refuse an old t, compare the HMAC."""
    parts = dict(item.split("=", 1) for item in headers["webhook-signature"].split(","))
    assert abs(time.time() - int(parts["t"])) <= tolerance
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, parts["v1"])
    return json.loads(body)


def use(key, count, *, outcome="allowed", code="", now=None):
    hour = (now or timezone.now()).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    row, _ = UsageRecord.objects.get_or_create(
        tenant=key.tenant, api_key=key, hour=hour, outcome=outcome, code=code, defaults={"count": 0}
    )
    UsageRecord.objects.filter(pk=row.pk).update(count=row.count + count)


@pytest.fixture(autouse=True)
def no_worker(monkeypatch):
    """The first attempt that a worker makes after commit is left to webhook_deliveries_retry, which the
    tests call, so every attempt is made and counted in one place."""
    monkeypatch.setattr(webhooks, "_deliver_later", lambda ids: None)


def committed(job):
    """Run `job` and then what it left for after commit (the e-mails), as a real transaction would."""

    def run(*args, **kwargs):
        with TestCase.captureOnCommitCallbacks(execute=True):
            return job(*args, **kwargs)

    return run


evaluate = committed(alerting.alerts_evaluate)
retry = committed(webhooks.webhook_deliveries_retry)
sharing = committed(alerts.alert_signal_key_sharing)


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def quota_key(tenant, loopback_upstream):
    key, _ = services.api_key_create(
        tenant=tenant, name="metered", upstreams=[loopback_upstream], daily_quota=100, actor="test"
    )
    return key


def owner(tenant):
    return tenant.memberships.get(role="owner").user


@LOOPBACK_ALLOWED
def test_quota_crossing_80_percent_sends_exactly_one_signed_webhook_and_one_email(
    tenant, quota_key, receiver
):
    endpoint, secret = webhooks.webhook_endpoint_create(
        tenant=tenant, url=receiver.url, events=["quota.threshold"]
    )
    assert secret.startswith("whsec_") and secret not in endpoint.secret_encrypted
    alerts.alert_rule_create(
        tenant=tenant, event="quota.threshold", levels=[50, 80, 100], recipients=[owner(tenant)], actor="test"
    )
    use(quota_key, 40)
    assert evaluate() == 0
    use(quota_key, 45)  # 85 % of 100: past 50 and 80 at once
    assert evaluate() == 1
    assert evaluate() == 0  # the same level in the same day: no second alert
    retry()
    retry()

    assert len(receiver.received) == 1
    request = receiver.received[0]
    event = verify(secret, request.headers, request.body)
    assert event["type"] == "quota.threshold" and event["id"].startswith("evt_")
    assert event["data"]["key"] == quota_key.key_id and event["data"]["level"] == 80
    assert request.headers["webhook-id"] == event["id"]
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempt_log[0]["status_code"] == 200
    assert [m.to for m in mail.outbox] == [[owner(tenant).email]]
    assert quota_key.key_id in mail.outbox[0].subject


@LOOPBACK_ALLOWED
def test_a_tampered_body_fails_the_signature(tenant, receiver):
    endpoint, secret = webhooks.webhook_endpoint_create(tenant=tenant, url=receiver.url)
    webhooks.webhook_endpoint_test(endpoint=endpoint)
    retry()
    request = receiver.received[0]
    verify(secret, request.headers, request.body)
    with pytest.raises(AssertionError):
        verify(secret, request.headers, request.body.replace(b"test", b"tost"))
    with pytest.raises(AssertionError):
        verify("whsec_other", request.headers, request.body)


@LOOPBACK_ALLOWED
@override_settings(KEYS_WEBHOOK_DISABLE_AFTER_FAILURES=3, KEYS_WEBHOOK_RETRY_BASE_SECONDS=60)
def test_failing_endpoint_is_retried_with_backoff_then_disabled_with_an_email(tenant, quota_key, receiver):
    receiver.status = 500
    endpoint, _ = webhooks.webhook_endpoint_create(tenant=tenant, url=receiver.url)
    alerts.alert_rule_create(tenant=tenant, event="key.revoked", actor="test")
    services.api_key_revoke(api_key=quota_key, actor="test")
    now = timezone.now()
    assert evaluate(now=now) == 1
    delivery = WebhookDelivery.objects.get()

    assert retry(now=now) == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at == now + timedelta(
        seconds=60
    )
    assert retry(now=now + timedelta(seconds=30)) == 0  # not due yet
    assert retry(now=now + timedelta(seconds=61)) == 1
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == now + timedelta(seconds=61 + 120)  # doubled
    assert retry(now=now + timedelta(seconds=200)) == 1

    delivery.refresh_from_db()
    endpoint.refresh_from_db()
    assert len(receiver.received) == 3
    assert [a["status_code"] for a in delivery.attempt_log] == [500, 500, 500]
    assert delivery.status == DeliveryStatus.FAILED and not endpoint.is_active
    assert "3 failed attempts" in endpoint.disabled_reason
    assert any("disabled" in m.subject and m.to == [owner(tenant).email] for m in mail.outbox)
    assert retry(now=now + timedelta(hours=2)) == 0
    webhooks.webhook_endpoint_enable(endpoint=endpoint, actor="test")
    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.consecutive_failures == 0


@LOOPBACK_ALLOWED
@override_settings(KEYS_WEBHOOK_RETRY_FOR_SECONDS=100, KEYS_WEBHOOK_RETRY_BASE_SECONDS=60)
def test_a_delivery_gives_up_after_its_retry_period(tenant, receiver):
    receiver.status = 503
    endpoint, _ = webhooks.webhook_endpoint_create(tenant=tenant, url=receiver.url)
    now = timezone.now()
    webhooks.event_emit(tenant=tenant, event_type="key.revoked", data={"key": "pk_x"}, now=now)
    retry(now=now)
    retry(now=now + timedelta(seconds=61))
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "ftp://example.com/",
        "https://user:pw@example.com/",
        "https://127.0.0.1/",
        "https://10.0.0.1/x",
        "https://[::1]/",
        "https://2130706433/",
        "https://example.com/#frag",
        "javascript:x",
    ],
)
def test_webhook_urls_follow_the_upstream_ssrf_rules_and_need_https(tenant, url):
    with pytest.raises(ValidationError) as error:
        webhooks.webhook_endpoint_create(tenant=tenant, url=url)
    assert "url" in error.value.message_dict


@LOOPBACK_ALLOWED
def test_with_private_networks_allowed_a_public_host_still_needs_https(tenant):
    with pytest.raises(ValidationError):
        webhooks.webhook_endpoint_create(tenant=tenant, url="http://93.184.215.14/hook")


@LOOPBACK_ALLOWED
def test_error_share_fires_once_per_window_then_waits_its_renotify_delay(tenant, quota_key, receiver):
    webhooks.webhook_endpoint_create(tenant=tenant, url=receiver.url)
    alerts.alert_rule_create(
        tenant=tenant, event="upstream_errors.share", threshold=10, min_calls=10, renotify_minutes=120
    )
    now = timezone.now()
    use(quota_key, 80, now=now)
    use(quota_key, 20, outcome="upstream_error", code="upstream_timeout", now=now)
    assert evaluate(now=now) == 1
    assert evaluate(now=now + timedelta(hours=1)) == 0  # new window, inside the delay
    use(quota_key, 30, outcome="upstream_error", code="upstream_timeout", now=now + timedelta(hours=3))
    assert evaluate(now=now + timedelta(hours=3)) == 1


def test_few_calls_never_fire_a_share_rule(tenant, quota_key):
    alerts.alert_rule_create(tenant=tenant, event="rate_limited.share", threshold=10, min_calls=20)
    use(quota_key, 3, outcome="rejected", code="rate_limited")
    assert evaluate() == 0


def test_expiring_and_unused_keys_alert_once(tenant, quota_key, loopback_upstream):
    services.api_key_update(api_key=quota_key, expires_at=timezone.now() + timedelta(days=3), actor="test")
    services.api_key_create(tenant=tenant, name="forgotten", upstreams=[loopback_upstream], actor="test")
    alerts.alert_rule_create(tenant=tenant, event="key.expiring", days=7, recipients=[owner(tenant)])
    alerts.alert_rule_create(tenant=tenant, event="key.unused", days=30)
    assert evaluate() == 1
    assert evaluate(now=timezone.now() + timedelta(days=31)) == 1  # the other one, unused
    assert evaluate(now=timezone.now() + timedelta(days=31)) == 0
    assert "expires" in mail.outbox[0].subject.lower()


def test_rejection_spike_against_the_day_before(tenant, quota_key):
    alerts.alert_rule_create(tenant=tenant, event="rejections.spike", threshold=300, min_calls=20)
    now = timezone.now()
    for hours in range(1, 25):
        use(quota_key, 5, outcome="rejected", code="origin_not_allowed", now=now - timedelta(hours=hours))
    use(quota_key, 14, outcome="rejected", code="origin_not_allowed", now=now)
    assert evaluate(now=now) == 0  # fewer than min_calls
    use(quota_key, 10, outcome="rejected", code="ip_not_allowed", now=now)
    assert evaluate(now=now) == 1  # 24 rejections, over 3 × 5 an hour


def test_key_sharing_hook_fires_its_rules(tenant, quota_key):
    alerts.alert_rule_create(tenant=tenant, event="key.sharing_suspected", recipients=[owner(tenant)])
    assert sharing(api_key=quota_key, data={"distinct_ips": 40}) == 1
    assert sharing(api_key=quota_key, data={"distinct_ips": 41}) == 0
    assert "distinct_ips: 40" in mail.outbox[0].body


def test_a_key_whose_distinct_addresses_jump_above_its_baseline_alerts_once(tenant, quota_key):
    alerts.alert_rule_create(tenant=tenant, event="key.sharing_suspected", recipients=[owner(tenant)])
    now = timezone.now()
    today = now.astimezone(UTC).date()
    for days_ago in range(1, 8):  # a week of the app's usual 5 addresses
        KeySharingDay.objects.create(
            tenant=tenant, api_key=quota_key, day=today - timedelta(days=days_ago), addresses=5, origins=1
        )
    KeySharingDay.objects.create(tenant=tenant, api_key=quota_key, day=today, addresses=6, origins=1)
    assert evaluate(now=now) == 0  # an ordinary day
    KeySharingDay.objects.filter(api_key=quota_key, day=today).update(addresses=400)
    assert evaluate(now=now) == 1
    assert evaluate(now=now) == 0  # once per window
    assert "addresses_jump" in mail.outbox[0].body


@pytest.mark.parametrize(
    "fields",
    [
        {"event": "nope"},
        {"event": "quota.threshold", "levels": [70]},
        {"event": "quota.threshold", "days": 3},
        {"event": "upstream_errors.share", "threshold": 101},
        {"event": "key.unused", "days": 0},
        {"event": "key.expiring", "renotify_minutes": -1},
        {"event": "key.revoked", "levels": "x"},
    ],
)
def test_bad_rules_are_refused(tenant, fields):
    with pytest.raises(ValidationError):
        alerts.alert_rule_create(tenant=tenant, **fields)


def test_recipients_must_be_members_and_keys_the_tenants(tenant, other_tenant, quota_key):
    with pytest.raises(ValidationError):
        alerts.alert_rule_create(tenant=other_tenant, event="key.revoked", recipients=[owner(tenant)])
    with pytest.raises(ValidationError):
        alerts.alert_rule_create(tenant=other_tenant, event="key.revoked", api_key=quota_key)


@LOOPBACK_ALLOWED
def test_another_tenants_events_never_reach_an_endpoint(tenant, other_tenant, receiver):
    webhooks.webhook_endpoint_create(tenant=other_tenant, url=receiver.url)
    assert webhooks.event_emit(tenant=tenant, event_type="key.revoked", data={}) == []


def test_event_types_are_checked():
    assert "quota.threshold" in AlertEvent.values


def test_the_readmes_scanner_patterns_match_every_kind_and_nothing_cut_short():
    import re
    from pathlib import Path

    from keys import crypto

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    pattern = r"\b(?:sk|mt|at)_[0-9A-Za-z]{38}\b"
    assert pattern in readme
    for token in (crypto.new_secret(), crypto.new_management_token(), crypto.new_access_token()):
        assert re.fullmatch(pattern, token)
        assert not re.search(pattern, token[:-1])
    assert not re.search(pattern, crypto.new_key_id())  # a key id is public: not a leak

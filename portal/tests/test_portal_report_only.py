"""The key page's report mode: the banner, what each report-mode check would have refused (24 h and
30 days), adding a value to the allowlist, switching a check to enforce; and the sharing signals."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from keys import services
from keys.models import ApiKey, AuditEvent, KeySharingDay, Role, UsageRecord
from portal.tests.portal_helpers import key_form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def report_key(tenant):
    api_key, _ = services.api_key_create(
        tenant=tenant,
        name="web",
        actor="test",
        allowed_origins=["https://app.example.com"],
        allowed_rpc_methods=["eth_call"],
        report_only=["allowed_origins", "allowed_rpc_methods"],
    )
    return api_key


def _would(api_key, code, detail, count, hours_ago):
    hour = (timezone.now() - timedelta(hours=hours_ago)).replace(minute=0, second=0, microsecond=0)
    UsageRecord.objects.create(
        tenant=api_key.tenant,
        api_key=api_key,
        hour=hour,
        outcome="would_reject",
        code=code,
        detail=detail,
        count=count,
    )


def test_a_key_created_for_a_browser_app_can_start_in_report_mode_with_a_banner(portal_client):
    client = portal_client(Role.DEVELOPER)
    data = key_form_data(allowed_origins="https://app.example.com", report_only=["allowed_origins"])
    assert client.post(reverse("portal:key_create"), data).status_code == 200
    api_key = ApiKey.objects.get(name="web app")
    assert api_key.report_only == ["allowed_origins"]
    page = client.get(reverse("portal:key_detail", args=[api_key.key_id])).content.decode()
    assert "Report mode:" in page and "origins only report what they would refuse" in page


def test_the_key_page_shows_would_be_refusals_over_24_hours_and_30_days(portal_client, report_key):
    _would(report_key, "origin_not_allowed", "https://evil.test", 3, hours_ago=1)
    _would(report_key, "origin_not_allowed", "https://evil.test", 5, hours_ago=24 * 10)
    page = portal_client(Role.VIEWER).get(reverse("portal:key_detail", args=[report_key.key_id]))
    rows = page.context["would_reject"]
    assert rows == [
        {
            "check": "allowed_origins",
            "code": "origin_not_allowed",
            "detail": "https://evil.test",
            "count": 8,
            "day": 3,
            "label": "Origins",
        }
    ]
    assert "Add <span" not in page.content.decode()  # a viewer gets no action
    assert "it was called from an origin outside its allowlist" in page.content.decode()


def test_add_to_allowlist_and_enforce_are_one_click_each_and_audited(portal_client, report_key):
    _would(report_key, "rpc_method_not_allowed", "eth_getLogs, eth_chainId", 2, hours_ago=0)
    client = portal_client(Role.DEVELOPER)
    page = client.get(reverse("portal:key_detail", args=[report_key.key_id])).content.decode()
    assert "to the allowlist</button>" in page and "Enforce origins</button>" in page
    url = reverse("portal:key_check", args=[report_key.key_id])
    client.post(url, {"check": "allowed_rpc_methods", "value": "eth_getLogs, eth_chainId"})
    client.post(url, {"check": "allowed_origins"})
    report_key.refresh_from_db()
    assert report_key.allowed_rpc_methods == ["eth_call", "eth_getLogs", "eth_chainId"]
    assert report_key.report_only == ["allowed_rpc_methods"]
    assert AuditEvent.objects.filter(action="api_key.updated", target_id=report_key.key_id).count() == 2


def test_a_bad_value_is_a_message_not_a_change(portal_client, report_key):
    client = portal_client(Role.DEVELOPER)
    answer = client.post(
        reverse("portal:key_check", args=[report_key.key_id]),
        {"check": "allowed_origins", "value": "javascript:alert(1)"},
        follow=True,
    )
    assert answer.status_code == 200
    report_key.refresh_from_db()
    assert report_key.allowed_origins == ["https://app.example.com"]
    bogus = client.post(reverse("portal:key_check", args=[report_key.key_id]), {"check": "secret_required"})
    assert bogus.status_code == 302
    report_key.refresh_from_db()
    assert report_key.report_only == ["allowed_origins", "allowed_rpc_methods"]


def test_the_sharing_chart_flags_a_jump_above_the_keys_baseline(portal_client, report_key):
    today = datetime.now(UTC).date()
    for back in range(1, 8):
        KeySharingDay.objects.create(
            tenant=report_key.tenant,
            api_key=report_key,
            day=today - timedelta(days=back),
            addresses=5,
            origins=1,
            user_agents=1,
        )
    KeySharingDay.objects.create(
        tenant=report_key.tenant,
        api_key=report_key,
        day=today,
        addresses=80,
        origins=1,
        user_agents=2,
        top={"addresses": [["203.0.113.9", 40]], "origins": [], "user_agents": []},
    )
    page = portal_client(Role.VIEWER).get(reverse("portal:key_detail", args=[report_key.key_id]))
    assert page.context["sharing_days"][-1]["flagged"] == ["addresses_jump"]
    assert page.context["sharing_days"][-1]["baseline_addresses"] == 5
    text = page.content.decode()
    assert "its distinct client addresses jumped above their usual level" in text
    assert "203.0.113.9" in text
    # 25 is under baseline 5 + KEYS_SHARING_JUMP_MIN (20): not a jump.
    KeySharingDay.objects.filter(day=today).update(addresses=25)
    page = portal_client(Role.VIEWER).get(reverse("portal:key_detail", args=[report_key.key_id]))
    assert page.context["sharing_days"][-1]["flagged"] == []


def test_the_usage_csv_carries_the_would_be_refusals(portal_client, report_key):
    from portal.tests.test_portal_usage import usage_csv

    _would(report_key, "origin_not_allowed", "https://evil.test", 3, hours_ago=1)
    _, rows = usage_csv(portal_client(Role.VIEWER), range="30d")
    assert [row[3:] for row in rows[1:]] == [["would_reject", "origin_not_allowed", "https://evil.test", "3"]]

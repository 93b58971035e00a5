"""In Chromium: the tenant sees what a report-mode check would have refused on the key page, adds a value
to the allowlist and switches the check to enforce; the page passes axe and fits a phone."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from keys import services
from keys.models import ApiKey, KeySharingDay, Role, UsageRecord
from portal.tests.browser import browser_page, needs_chromium, session_state
from portal.tests.test_portal_accessibility import AXE, AXE_RUN, OVERFLOW

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(not AXE.is_file(), reason="portal/tests/js/node_modules: make test installs axe-core"),
]


@pytest.fixture
def report_page(site, tenant, loopback_upstream, django_user_model):
    developer = django_user_model.objects.create_user(username="d@acme.example", email="d@acme.example")
    services.membership_set(tenant=tenant, user=developer, role=Role.DEVELOPER, actor="test")
    api_key, _ = services.api_key_create(
        tenant=tenant,
        name="web",
        upstreams=[loopback_upstream],
        allowed_origins=["https://app.example.com"],
        report_only=["allowed_origins", "rate_limit"],
        rate_limit="10/s",
    )
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for code, detail, count in [
        ("origin_not_allowed", "https://staging.example.net", 7),
        ("rate_limited", "", 2),
    ]:
        UsageRecord.objects.create(
            tenant=tenant,
            api_key=api_key,
            hour=hour,
            outcome="would_reject",
            code=code,
            detail=detail,
            count=count,
        )
    today = datetime.now(UTC).date()
    for back, addresses in [(2, 4), (1, 5), (0, 90)]:
        KeySharingDay.objects.create(
            tenant=tenant,
            api_key=api_key,
            day=today - timedelta(days=back),
            addresses=addresses,
            origins=2,
            user_agents=3,
            top={"addresses": [["198.51.100.7", 50]], "origins": [["https://staging.example.net", 7]]},
        )
    client = Client()
    client.force_login(developer)
    return client.cookies[settings.SESSION_COOKIE_NAME].value, api_key


def test_the_tenant_sees_would_be_refusals_adds_the_origin_and_enforces(site, report_page):
    cookie, api_key = report_page
    url = f"{site.url}/portal/keys/{api_key.key_id}"
    with browser_page(storage_state=session_state(site.url, cookie)) as page:
        page.goto(url)
        assert page.get_by_role("status").filter(has_text="Report mode:").count() == 1
        table = page.get_by_role("table", name="Would have been refused")
        assert table.get_by_role("row", name="https://staging.example.net").count() == 1
        assert "7" in table.get_by_role("row", name="https://staging.example.net").inner_text()
        assert page.get_by_text("This key may be shared").count() == 1

        page.get_by_role("button", name="Add https://staging.example.net to the allowlist").click()
        page.get_by_text("is added to the origins allowlist").wait_for()
        page.get_by_role("button", name="Enforce origins").click()
        page.get_by_text("Origins are now enforced").wait_for()
        assert page.get_by_role("button", name="Enforce origins").count() == 0
        assert page.get_by_role("button", name="Enforce rate limit").count() == 1

    api_key = ApiKey.objects.get(pk=api_key.pk)
    assert api_key.allowed_origins == ["https://app.example.com", "https://staging.example.net"]
    assert api_key.report_only == ["rate_limit"]


@pytest.mark.parametrize("width", [1280, 390])
def test_the_key_page_in_report_mode_passes_axe_and_fits_a_phone(site, report_page, width):
    cookie, api_key = report_page
    with browser_page(
        storage_state=session_state(site.url, cookie), viewport={"width": width, "height": 800}
    ) as page:
        page.goto(f"{site.url}/portal/keys/{api_key.key_id}")
        page.add_script_tag(path=str(AXE))
        found = {"axe": page.evaluate(AXE_RUN), "overflow": page.evaluate(OVERFLOW)}
    assert found == {"axe": [], "overflow": []}, json.dumps(found, indent=1)

"""The portal's key create page (portal/): every field the edit page has, service errors on their
fields, nothing created on error, the expiry read as UTC."""

import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from keys.models import ApiKey, AuditEvent, Role
from portal.tests.portal_helpers import found, key_form_data

SECRET_RE = re.compile(r"sk_[0-9A-Za-z]{20,}")


def create_data(**overrides) -> dict:
    return key_form_data(**overrides)


def test_create_page_has_every_key_field_and_says_the_expiry_is_utc(portal_client):
    answer = portal_client(Role.DEVELOPER).get(reverse("portal:key_create"))
    assert answer.status_code == 200
    assert list(answer.context["form"].fields) == [
        "name",
        "upstreams",
        "secret_required",
        "allowed_origins",
        "allowed_ips",
        "allowed_user_agents",
        "allowed_http_methods",
        "allowed_rpc_methods",
        "rate_limit",
        "daily_quota",
        "report_only",
        "expires_at",
    ]
    page = answer.content.decode()
    assert '<label for="id_expires_at">Expires at (UTC)</label>' in page
    assert "in UTC, not your local time" in page


def test_create_with_every_allowlist_stores_normalised_values_and_shows_them(
    portal_client, tenant, loopback_upstream, tenant_upstream
):
    client = portal_client(Role.DEVELOPER)
    answer = client.post(
        reverse("portal:key_create"),
        create_data(
            name="backend",
            upstreams=[loopback_upstream.slug, tenant_upstream.slug],
            secret_required="on",
            allowed_origins="HTTPS://App.Example.COM:443\r\n\r\n*.Example.org\r\n",
            allowed_ips=" 203.0.113.7 \r\n2001:db8::/32",
            allowed_user_agents="curl/*\r\nmy-app/1.0",
            allowed_http_methods="get\r\npost\r\nGET",
            allowed_rpc_methods="eth_blockNumber\r\neth_call",
            rate_limit=" 10/s ",
            daily_quota="1000",
            expires_at="2031-01-02T03:04:05",
        ),
    )
    assert answer.status_code == 200 and SECRET_RE.search(answer.content.decode())
    key = ApiKey.objects.get(tenant=tenant)
    assert key.name == "backend" and key.secret_required
    assert key.allowed_origins == ["https://app.example.com", "*.example.org"]
    assert key.allowed_ips == ["203.0.113.7/32", "2001:db8::/32"]
    assert key.allowed_user_agents == ["curl/*", "my-app/1.0"]
    assert key.allowed_http_methods == ["GET", "POST"]
    assert key.allowed_rpc_methods == ["eth_blockNumber", "eth_call"]
    assert key.rate_limit == "10/s" and key.daily_quota == 1000
    assert key.expires_at == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert {u.slug for u in key.upstreams.all()} == {"local", "acme-api"}
    event = AuditEvent.objects.get(action="api_key.created", target_id=key.key_id)
    assert sorted(event.data["upstreams"]) == ["acme-api", "local"]

    page = client.get(reverse("portal:key_detail", args=[key.key_id])).content.decode()
    for shown in (
        "https://app.example.com",
        "*.example.org",
        "203.0.113.7/32",
        "2001:db8::/32",
        "curl/*",
        "my-app/1.0",
        "<code>GET</code>, <code>POST</code>",
        "eth_blockNumber",
        "eth_call",
        "10/s",
        "1000",
        "2031-01-02 03:04 UTC",
    ):
        assert shown in page, shown


def test_create_reads_the_expiry_as_utc_whatever_the_sites_time_zone(portal_client, tenant, settings):
    settings.TIME_ZONE = "America/New_York"
    answer = portal_client(Role.DEVELOPER).post(
        reverse("portal:key_create"), create_data(expires_at="2031-07-01T12:00:00")
    )
    assert answer.status_code == 200
    assert ApiKey.objects.get(tenant=tenant).expires_at == datetime(2031, 7, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("allowed_ips", "10.0.0.1/8"),
        ("allowed_ips", "203.0.113.7\r\nnot-an-ip"),
        ("allowed_user_agents", "x" * 257),
        ("allowed_http_methods", "get it"),
        ("allowed_rpc_methods", "eth call"),
        ("daily_quota", "-1"),
        ("daily_quota", "many"),
        ("expires_at", "next tuesday"),
        ("expires_at", "2031-13-01T00:00"),
    ],
)
def test_bad_value_in_a_create_field_shows_its_error_keeps_the_input_and_creates_nothing(
    portal_client, loopback_upstream, field, value
):
    typed = create_data(
        name="kept name",
        upstreams=[loopback_upstream.slug],
        allowed_origins="https://kept.example.com",
        rate_limit="7/m",
        **{field: value},
    )
    answer = portal_client(Role.DEVELOPER).post(reverse("portal:key_create"), typed)
    assert answer.status_code == 200
    form = answer.context["form"]
    assert form.errors.get(field) and set(form.errors) == {field}
    content = answer.content.decode()
    assert not SECRET_RE.search(content)
    assert f'id="id_{field}_error"' in content
    widget = found(rf'<(?:input|textarea)[^>]*\bid="id_{field}"[^>]*>', content)
    assert re.search(rf'aria-describedby="[^"]*\bid_{field}_error\b', widget)
    # What the person typed is still there, in every field.
    assert form[field].value() == value
    assert 'value="kept name"' in content and "https://kept.example.com" in content
    assert 'value="7/m"' in content and 'value="local" selected' in content
    assert ApiKey.objects.count() == 0
    assert not AuditEvent.objects.filter(action="api_key.created").exists()

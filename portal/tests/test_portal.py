"""The tenant web portal (portal/): accounts, keys, roles, tenant scope, CSRF."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from keys import crypto, services
from keys.models import ApiKey, AuditEvent, Membership, Role, Tenant, UsageRecord
from portal.tests.portal_helpers import found

User = get_user_model()
STRONG = "correct-horse-battery-staple-42"
SECRET_RE = re.compile(r"sk_[0-9A-Za-z]{20,}")


pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


def signup_data(**overrides) -> dict:
    return {
        "email": "ada@lovelace.example",
        "password1": STRONG,
        "password2": STRONG,
        "organisation": "Analytical Engines Ltd",
        **overrides,
    }


# --- Accounts ---------------------------------------------------------------------------------------


def test_signup_creates_tenant_with_owner_and_logs_in(client, db):
    answer = client.post(reverse("portal:signup"), signup_data())
    assert answer.status_code == 302
    assert answer["Location"] == reverse("portal:key_list")
    user = User.objects.get(email="ada@lovelace.example")
    assert user.check_password(STRONG)
    tenant = Tenant.objects.get(slug="analytical-engines-ltd")
    assert tenant.name == "Analytical Engines Ltd"
    assert Membership.objects.get(tenant=tenant, user=user).role == Role.OWNER
    assert client.get(reverse("portal:key_list")).status_code == 200


def test_signup_slug_is_made_unique(client, tenant):
    answer = client.post(reverse("portal:signup"), signup_data(organisation="ACME"))
    assert answer.status_code == 302
    assert Tenant.objects.filter(slug="acme-2", name="ACME").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"password2": STRONG + "x"}, "password2"),
        ({"password1": "password", "password2": "password"}, "password2"),
        ({"password1": "12345678901", "password2": "12345678901"}, "password2"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "owner@acme.example"}, "email"),
        ({"email": "OWNER@ACME.EXAMPLE"}, "email"),
        ({"organisation": "   "}, "organisation"),
    ],
)
def test_bad_signup_shows_form_errors_and_creates_nothing(client, tenant, overrides, field):
    users, tenants = User.objects.count(), Tenant.objects.count()
    answer = client.post(reverse("portal:signup"), signup_data(**overrides))
    assert answer.status_code == 200
    assert answer.context["form"].errors.get(field)
    assert (User.objects.count(), Tenant.objects.count()) == (users, tenants)
    assert "_auth_user_id" not in client.session


def test_login_and_logout(client, member):
    answer = client.post(reverse("portal:login"), {"username": "DEV@tenant.example", "password": "pw"})
    assert answer.status_code == 302
    assert client.get(reverse("portal:key_list")).status_code == 200
    assert client.get(reverse("portal:logout")).status_code == 405
    assert client.post(reverse("portal:logout")).status_code == 302
    assert client.get(reverse("portal:key_list")).status_code == 302


def test_pages_need_login(client, api_key):
    for url in (reverse("portal:key_list"), reverse("portal:key_detail", args=[api_key.key_id])):
        answer = client.get(url)
        assert answer.status_code == 302
        assert answer["Location"].startswith(reverse("portal:login"))


def test_login_is_rate_limited_per_username(client, member, settings):
    settings.PORTAL_LOGIN_RATE = "3/m"
    for _ in range(3):
        answer = client.post(reverse("portal:login"), {"username": member.username, "password": "wrong"})
        assert "rate_limited" not in answer.context["form"].errors.as_data().__repr__()
    # Limited now: even the right password is refused, with a form error.
    answer = client.post(reverse("portal:login"), {"username": member.username, "password": "pw"})
    assert answer.status_code == 200
    assert "Too many login attempts" in answer.content.decode()
    assert "_auth_user_id" not in client.session


def test_login_is_rate_limited_per_address(client, member, settings):
    settings.PORTAL_LOGIN_RATE = "3/m"
    for n in range(3):
        client.post(reverse("portal:login"), {"username": f"guess{n}@x.example", "password": "wrong"})
    answer = client.post(reverse("portal:login"), {"username": member.username, "password": "pw"})
    assert "Too many login attempts" in answer.content.decode()
    assert "_auth_user_id" not in client.session


def test_behind_a_trusted_balancer_login_is_limited_per_client_not_per_balancer(client, member, settings):
    settings.PORTAL_LOGIN_RATE = "3/m"
    settings.PROXY_TRUSTED_PROXIES = ["10.0.0.0/8"]
    through_balancer = {"REMOTE_ADDR": "10.0.0.5"}
    for n in range(5):  # five other visitors, one wrong guess each
        client.post(
            reverse("portal:login"),
            {"username": f"guess{n}@x.example", "password": "wrong"},
            HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
            **through_balancer,
        )
    answer = client.post(
        reverse("portal:login"),
        {"username": member.username, "password": "pw"},
        HTTP_X_FORWARDED_FOR="203.0.113.7",
        **through_balancer,
    )
    assert "_auth_user_id" in client.session, answer.content.decode()[-400:]

    client = Client()
    for n in range(3):  # one visitor guessing: limited by their own address, whatever names they try
        client.post(
            reverse("portal:login"),
            {"username": f"other{n}@x.example", "password": "wrong"},
            HTTP_X_FORWARDED_FOR="198.51.100.99",
            **through_balancer,
        )
    limited = client.post(
        reverse("portal:login"),
        {"username": "last@x.example", "password": "wrong"},
        HTTP_X_FORWARDED_FOR="198.51.100.99",
        **through_balancer,
    )
    assert "Too many login attempts" in limited.content.decode()


# --- Keys ---------------------------------------------------------------------------------------------


def test_key_create_shows_secret_once_and_stores_only_its_hash(portal_client, tenant, loopback_upstream):
    client = portal_client(Role.DEVELOPER)
    answer = client.post(
        reverse("portal:key_create"),
        {
            "name": "web app",
            "upstreams": [loopback_upstream.slug],
            "allowed_origins": "https://app.example.com\n\n*.example.org\n",
            "rate_limit": "100/m",
            "secret_required": "on",
        },
    )
    assert answer.status_code == 200
    assert "no-store" in answer["Cache-Control"]
    secret = found(SECRET_RE, answer.content.decode())
    key = ApiKey.objects.get(tenant=tenant)
    assert key.secret_hash == crypto.hash_secret(secret)
    assert key.allowed_origins == ["https://app.example.com", "*.example.org"]
    assert key.secret_required and key.rate_limit == "100/m"
    assert list(key.upstreams.all()) == [loopback_upstream]
    assert key.key_id in answer.content.decode()
    for url in (reverse("portal:key_list"), reverse("portal:key_detail", args=[key.key_id])):
        page = client.get(url).content.decode()
        assert key.key_id in page
        assert secret not in page and not SECRET_RE.search(page)
    assert not ApiKey.objects.filter(secret_hash=secret).exists()


BAD_ORIGINS = ["ftp://app.example.com", "https://app.example.com/path", "*", "http://a.*.com", "http://"]


@pytest.mark.parametrize("origin", BAD_ORIGINS)
def test_key_create_with_bad_origin_shows_field_error_and_creates_nothing(portal_client, origin):
    client = portal_client(Role.DEVELOPER)
    answer = client.post(reverse("portal:key_create"), {"name": "web", "allowed_origins": origin})
    assert answer.status_code == 200
    assert answer.context["form"].errors["allowed_origins"]
    assert not SECRET_RE.search(answer.content.decode())
    assert ApiKey.objects.count() == 0


def test_key_create_with_bad_rate_shows_field_error(portal_client):
    answer = portal_client(Role.DEVELOPER).post(
        reverse("portal:key_create"), {"name": "web", "rate_limit": "lots"}
    )
    assert answer.context["form"].errors["rate_limit"]
    assert ApiKey.objects.count() == 0


def test_key_create_refuses_another_tenants_upstream(portal_client, other_tenant_upstream):
    answer = portal_client(Role.DEVELOPER).post(
        reverse("portal:key_create"), {"name": "web", "upstreams": [other_tenant_upstream.slug]}
    )
    assert answer.context["form"].errors["upstreams"]
    assert ApiKey.objects.count() == 0


def test_key_list_shows_state(portal_client, api_key):
    services.api_key_revoke(api_key=api_key, actor="test")
    page = portal_client(Role.VIEWER).get(reverse("portal:key_list")).content.decode()
    assert api_key.key_id in page and "revoked" in page


def test_key_list_counts_each_keys_requests_since_midnight_utc(portal_client, tenant, api_key):
    other_key, _ = services.api_key_create(tenant=tenant, name="quiet", actor="test")
    midnight = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for hour, outcome, count in [
        (midnight, "allowed", 40),
        (midnight, "rejected", 2),
        (midnight - timedelta(hours=1), "allowed", 500),
    ]:
        UsageRecord.objects.create(tenant=tenant, api_key=api_key, hour=hour, outcome=outcome, count=count)

    answer = portal_client(Role.VIEWER).get(reverse("portal:key_list"))

    assert dict((key.key_id, n) for key, n in answer.context["keys"]) == {
        api_key.key_id: 42,
        other_key.key_id: 0,
    }
    assert "42 requests today" in answer.content.decode()


def test_key_page_tells_a_rotation_grace_and_hides_snippets_when_they_cannot_work(
    portal_client, tenant, api_key
):
    client = portal_client(Role.VIEWER)
    services.api_key_rotate(api_key=api_key, grace=timedelta(hours=1), actor="test")
    page = client.get(reverse("portal:key_detail", args=[api_key.key_id])).content.decode()
    assert "previous secret still works until" in page and 'id="snippet-curl"' in page

    no_upstream, _ = services.api_key_create(tenant=tenant, name="bare", actor="test")
    page = client.get(reverse("portal:key_detail", args=[no_upstream.key_id])).content.decode()
    assert "may call no upstream yet" in page and "snippet-" not in page and "UPSTREAM" not in page

    services.api_key_revoke(api_key=api_key, actor="test")
    page = client.get(reverse("portal:key_detail", args=[api_key.key_id])).content.decode()
    assert "This key is revoked" in page and "snippet-" not in page


@pytest.mark.parametrize(
    ("restriction", "warned"),
    [
        ({}, True),
        ({"secret_required": True}, False),
        ({"allowed_origins": ["https://a.example"]}, False),
        ({"allowed_ips": ["203.0.113.0/24"]}, False),
    ],
)
def test_an_open_key_is_called_out_on_its_page(portal_client, tenant, restriction, warned):
    api_key, _ = services.api_key_create(tenant=tenant, name="k", actor="test", **restriction)
    page = (
        portal_client(Role.VIEWER).get(reverse("portal:key_detail", args=[api_key.key_id])).content.decode()
    )
    assert ("This key is open" in page) is warned


def test_the_only_upstream_is_chosen_for_a_new_key(portal_client, loopback_upstream):
    form = portal_client(Role.DEVELOPER).get(reverse("portal:key_create")).context["form"]
    assert form["upstreams"].value() == ["local"]


def test_a_wrong_password_says_so_in_words_that_fit_the_form(client, member):
    answer = client.post(reverse("portal:login"), {"username": member.username, "password": "nope"})
    assert "The e-mail or the password is wrong" in answer.content.decode()


def test_key_detail_shows_snippets_with_key_id(portal_client, api_key):
    client = portal_client(Role.VIEWER)
    page = client.get(reverse("portal:key_detail", args=[api_key.key_id])).content.decode()
    assert f"/proxy/local/{api_key.key_id}/" in page
    assert "curl" in page and "fetch(" in page


def test_key_detail_says_its_times_are_utc(portal_client, api_key):
    services.api_key_update(api_key=api_key, expires_at=datetime(2031, 5, 6, 12, 0, 59, tzinfo=UTC))
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=datetime(2026, 11, 24, 8, 30, 5, tzinfo=UTC))
    answer = portal_client(Role.VIEWER).get(reverse("portal:key_detail", args=[api_key.key_id]))
    page = answer.content.decode()
    assert '<dd><time datetime="2031-05-06T12:00:59+00:00">2031-05-06 12:00 UTC</time></dd>' in page
    assert '<dt>Last used</dt><dd><time datetime="2026-11-24T08:30:05+00:00">2026-11-24 08:30 UTC' in page


@pytest.mark.parametrize("role", [Role.VIEWER])
def test_viewer_may_not_create_or_revoke(portal_client, api_key, role):
    client = portal_client(role)
    assert client.get(reverse("portal:key_create")).status_code == 403
    assert client.post(reverse("portal:key_create"), {"name": "x"}).status_code == 403
    assert client.post(reverse("portal:key_revoke", args=[api_key.key_id])).status_code == 403
    assert ApiKey.objects.count() == 1
    api_key.refresh_from_db()
    assert api_key.revoked_at is None
    assert "New key" not in client.get(reverse("portal:key_list")).content.decode()


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.ADMIN, Role.OWNER])
def test_developer_and_above_may_create(portal_client, role):
    answer = portal_client(role).post(reverse("portal:key_create"), {"name": "x"})
    assert answer.status_code == 200
    assert ApiKey.objects.count() == 1


def test_another_tenants_key_is_404(portal_client, other_tenant):
    other_key, _ = services.api_key_create(tenant=other_tenant, name="theirs", actor="test")
    client = portal_client(Role.OWNER)
    assert client.get(reverse("portal:key_detail", args=[other_key.key_id])).status_code == 404
    assert client.get(reverse("portal:key_revoke", args=[other_key.key_id])).status_code == 404
    assert client.post(reverse("portal:key_revoke", args=[other_key.key_id])).status_code == 404
    assert other_key.key_id not in client.get(reverse("portal:key_list")).content.decode()
    other_key.refresh_from_db()
    assert other_key.revoked_at is None


def test_revoke_only_by_post(portal_client, api_key):
    client = portal_client(Role.DEVELOPER)
    url = reverse("portal:key_revoke", args=[api_key.key_id])
    confirm = client.get(url)
    assert confirm.status_code == 200 and "Revoke the key" in confirm.content.decode()
    assert client.put(url).status_code == 405
    api_key.refresh_from_db()
    assert api_key.revoked_at is None
    answer = client.post(url)
    assert answer.status_code == 302
    api_key.refresh_from_db()
    assert api_key.state == "revoked"
    assert AuditEvent.objects.filter(action="api_key.revoked").exists()


def test_tenant_switcher_scopes_pages(portal_client, tenant, other_tenant):
    client = portal_client(Role.DEVELOPER)
    services.membership_set(tenant=other_tenant, user=client.user, role=Role.VIEWER, actor="test")
    other_key, _ = services.api_key_create(tenant=other_tenant, name="theirs", actor="test")
    assert client.get(reverse("portal:key_detail", args=[other_key.key_id])).status_code == 404
    assert client.post(reverse("portal:tenant_switch"), {"tenant": other_tenant.slug}).status_code == 302
    assert client.get(reverse("portal:key_detail", args=[other_key.key_id])).status_code == 200
    assert client.get(reverse("portal:key_create")).status_code == 403  # a viewer there
    stranger, _ = services.tenant_create(slug="initech", owner_email="o@initech.example", actor="test")
    assert client.post(reverse("portal:tenant_switch"), {"tenant": stranger.slug}).status_code == 404


def test_csrf_is_enforced(portal_client, api_key):
    client = portal_client(Role.DEVELOPER, enforce_csrf_checks=True)
    assert client.post(reverse("portal:key_create"), {"name": "x"}).status_code == 403
    assert client.post(reverse("portal:key_revoke", args=[api_key.key_id])).status_code == 403
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post(reverse("portal:signup"), signup_data()).status_code == 403
    login = {"username": client.user.username, "password": "pw"}
    assert anonymous.post(reverse("portal:login"), login).status_code == 403
    assert ApiKey.objects.count() == 1 and not User.objects.filter(email="ada@lovelace.example").exists()
    # With the token from the form, the same post goes through.
    client.get(reverse("portal:key_create"))
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    answer = client.post(reverse("portal:key_create"), {"name": "x", "csrfmiddlewaretoken": token})
    assert answer.status_code == 200 and ApiKey.objects.count() == 2

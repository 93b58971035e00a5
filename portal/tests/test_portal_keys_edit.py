"""The portal's key edit and rotate pages (portal/): forms, service errors, roles, tenant scope, CSRF."""

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from keys import selectors, services
from keys.models import ApiKey, AuditEvent, Role
from portal.tests.portal_helpers import found, key_form_data

User = get_user_model()
SECRET_RE = re.compile(r"sk_[0-9A-Za-z]{20,}")


def edit_data(**overrides) -> dict:
    return key_form_data(**{"upstreams": ["local"], **overrides})


def _snapshot(key: ApiKey) -> tuple:
    key.refresh_from_db()
    return (*(getattr(key, name) for name in services.KEY_FIELDS), key.updated_at)


# --- Edit -------------------------------------------------------------------------------------------


def test_edit_form_starts_from_the_key(portal_client, api_key):
    services.api_key_update(
        api_key=api_key,
        allowed_origins=["https://app.example.com", "*.example.org"],
        allowed_ips=["203.0.113.0/24"],
        rate_limit="100/m",
        daily_quota=5000,
        actor="test",
    )
    answer = portal_client(Role.DEVELOPER).get(reverse("portal:key_edit", args=[api_key.key_id]))
    assert answer.status_code == 200
    form = answer.context["form"]
    assert form.initial["name"] == "web app"
    assert form.initial["upstreams"] == ["local"]
    assert form.initial["allowed_origins"] == "https://app.example.com\n*.example.org"
    assert form.initial["allowed_ips"] == "203.0.113.0/24"
    assert form.initial["rate_limit"] == "100/m" and form.initial["daily_quota"] == 5000
    page = answer.content.decode()
    assert "https://app.example.com\n*.example.org" in page and "203.0.113.0/24" in page


def test_edit_saves_normalised_values(portal_client, api_key, tenant_upstream):
    client = portal_client(Role.DEVELOPER)
    expires = (timezone.now() + timedelta(days=30)).replace(second=0, microsecond=0)
    answer = client.post(
        reverse("portal:key_edit", args=[api_key.key_id]),
        edit_data(
            name="renamed",
            upstreams=["local", tenant_upstream.slug],
            secret_required="on",
            allowed_origins="HTTPS://App.Example.COM:443\n\n*.Example.org\nhttps://app.example.com\n",
            allowed_ips=" 203.0.113.7 \n2001:db8::/32",
            allowed_user_agents="curl/*",
            allowed_http_methods="get\npost",
            allowed_rpc_methods="eth_blockNumber",
            rate_limit=" 10/s ",
            daily_quota="1000",
            expires_at=timezone.localtime(expires).strftime("%Y-%m-%dT%H:%M"),
        ),
    )
    assert answer.status_code == 302
    assert answer["Location"] == reverse("portal:key_detail", args=[api_key.key_id])
    api_key.refresh_from_db()
    assert api_key.name == "renamed" and api_key.secret_required
    assert api_key.allowed_origins == ["https://app.example.com", "*.example.org"]
    assert api_key.allowed_ips == ["203.0.113.7/32", "2001:db8::/32"]
    assert api_key.allowed_user_agents == ["curl/*"]
    assert api_key.allowed_http_methods == ["GET", "POST"]
    assert api_key.allowed_rpc_methods == ["eth_blockNumber"]
    assert api_key.rate_limit == "10/s" and api_key.daily_quota == 1000
    assert api_key.expires_at == expires
    assert {u.slug for u in api_key.upstreams.all()} == {"local", tenant_upstream.slug}
    assert AuditEvent.objects.filter(action="api_key.updated", target_id=api_key.key_id).exists()
    page = client.get(answer["Location"]).content.decode()
    assert "renamed" in page and "is saved" in page


def test_edit_clears_values(portal_client, api_key):
    services.api_key_update(api_key=api_key, allowed_origins=["https://a.example"], rate_limit="5/m")
    answer = portal_client(Role.DEVELOPER).post(
        reverse("portal:key_edit", args=[api_key.key_id]), edit_data(upstreams=[])
    )
    assert answer.status_code == 302
    api_key.refresh_from_db()
    assert api_key.allowed_origins == [] and api_key.rate_limit is None and api_key.daily_quota is None
    assert not api_key.secret_required and api_key.upstreams.count() == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"allowed_origins": "https://*.*.com"}, "allowed_origins"),
        ({"allowed_origins": "https://ok.example.com\nftp://app.example.com"}, "allowed_origins"),
        ({"allowed_ips": "10.0.0.1/8"}, "allowed_ips"),
        ({"allowed_ips": "not-an-ip"}, "allowed_ips"),
        ({"rate_limit": "lots"}, "rate_limit"),
        ({"allowed_http_methods": "get it"}, "allowed_http_methods"),
        ({"allowed_rpc_methods": "eth call"}, "allowed_rpc_methods"),
        ({"daily_quota": "-1"}, "daily_quota"),
        ({"daily_quota": "many"}, "daily_quota"),
        ({"name": ""}, "name"),
        ({"upstreams": ["globex-api"]}, "upstreams"),
    ],
)
def test_bad_edit_shows_field_error_and_changes_nothing(
    portal_client, api_key, other_tenant_upstream, overrides, field
):
    before = _snapshot(api_key)
    answer = portal_client(Role.DEVELOPER).post(
        reverse("portal:key_edit", args=[api_key.key_id]), edit_data(**{"name": "renamed", **overrides})
    )
    assert answer.status_code == 200
    assert answer.context["form"].errors.get(field)
    # The error is tied to its field for screen readers: the input names the error's element.
    content = answer.content.decode()
    assert f'id="id_{field}_error"' in content
    widget = found(rf'<(?:input|textarea|select)[^>]*\bid="id_{field}"[^>]*>', content)
    assert re.search(rf'aria-describedby="[^"]*\bid_{field}_error\b', widget)
    assert _snapshot(api_key) == before
    assert list(api_key.upstreams.values_list("slug", flat=True)) == ["local"]
    assert not AuditEvent.objects.filter(action="api_key.updated").exists()


def test_revoked_key_cannot_be_edited(portal_client, api_key):
    services.api_key_revoke(api_key=api_key, actor="test")
    client = portal_client(Role.OWNER)
    url = reverse("portal:key_edit", args=[api_key.key_id])
    answer = client.get(url)
    assert answer.status_code == 200 and answer.context["form"] is None
    page = answer.content.decode()
    assert "can no longer be edited" in page and "Save the key" not in page
    before = _snapshot(api_key)
    assert client.post(url, edit_data(name="renamed")).status_code == 200
    assert _snapshot(api_key) == before
    detail = client.get(reverse("portal:key_detail", args=[api_key.key_id])).content.decode()
    assert url not in detail and reverse("portal:key_rotate", args=[api_key.key_id]) not in detail


def test_detail_links_to_edit_and_rotate_for_developers_only(portal_client, api_key):
    url = reverse("portal:key_detail", args=[api_key.key_id])
    links = (
        reverse("portal:key_edit", args=[api_key.key_id]),
        reverse("portal:key_rotate", args=[api_key.key_id]),
    )
    page = portal_client(Role.DEVELOPER).get(url).content.decode()
    assert all(link in page for link in links)
    page = portal_client(Role.VIEWER).get(url).content.decode()
    assert not any(link in page for link in links)


class _FormAsSent(HTMLParser):
    """What a browser sends for the page's form as rendered: inputs' values, checked boxes, textareas
    with CRLF line ends (as browsers send them), selected options."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.data: dict[str | None, Any] = {}  # a field's value, or its list of values for a <select>
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        name = attributes.get("name")
        if tag == "input" and name and name != "csrfmiddlewaretoken":
            if attributes.get("type") != "checkbox":
                self.data[name] = attributes.get("value") or ""
            elif "checked" in attributes:
                self.data[name] = "on"
        elif tag == "textarea":
            self._textarea = name
            self.data[name] = ""
        elif tag == "select":
            self._select = name
            self.data[name] = []
        elif tag == "option" and self._select and "selected" in attributes:
            self.data[self._select].append(attributes["value"])

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea" and self._textarea:
            # Django drops the one newline after <textarea>; browsers send CRLF line ends.
            text = self.data[self._textarea].removeprefix("\n")
            self.data[self._textarea] = text.replace("\r\n", "\n").replace("\n", "\r\n")
            self._textarea = None
        elif tag == "select":
            self._select = None


def form_as_sent(client: Client, api_key: ApiKey, **overrides) -> dict:
    """The edit page's form as a browser would send it untouched, but for `overrides`."""
    parser = _FormAsSent()
    parser.feed(client.get(reverse("portal:key_edit", args=[api_key.key_id])).content.decode())
    return {**parser.data, **overrides}


def _set_up_every_field(api_key: ApiKey, tenant_upstream) -> None:
    services.api_key_update(
        api_key=api_key,
        upstreams=[*api_key.upstreams.all(), tenant_upstream],
        secret_required=True,
        allowed_origins=["https://app.example.com", "*.example.org"],
        allowed_ips=["203.0.113.0/24", "2001:db8::/32"],
        allowed_user_agents=["curl/*"],
        allowed_http_methods=["GET", "POST"],
        allowed_rpc_methods=["eth_blockNumber", "eth_call"],
        rate_limit="100/m",
        daily_quota=5000,
        # As the API may set it: seconds and a fraction, which the form's widget does not show.
        expires_at=datetime(2031, 5, 6, 12, 0, 59, 123456, tzinfo=UTC),
        actor="test",
    )
    AuditEvent.objects.filter(action="api_key.updated").delete()


def test_edit_page_says_the_expiry_is_utc_and_shows_it_in_utc(portal_client, api_key, settings):
    settings.TIME_ZONE = "Asia/Tokyo"
    services.api_key_update(api_key=api_key, expires_at=datetime(2031, 5, 6, 12, 0, 59, tzinfo=UTC))
    page = portal_client(Role.DEVELOPER).get(reverse("portal:key_edit", args=[api_key.key_id])).content
    page = page.decode()
    assert '<label for="id_expires_at">Expires at (UTC)</label>' in page
    assert "in UTC, not your local time" in page
    assert 'value="2031-05-06T12:00:59"' in page


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        ({"name": "renamed"}, ["name"]),
        ({"secret_required": None}, ["secret_required"]),
        ({"allowed_origins": "https://app.example.com"}, ["allowed_origins"]),
        ({"allowed_ips": "198.51.100.0/24", "daily_quota": "10"}, ["allowed_ips", "daily_quota"]),
        ({"allowed_user_agents": ""}, ["allowed_user_agents"]),
        ({"allowed_http_methods": "GET"}, ["allowed_http_methods"]),
        ({"allowed_rpc_methods": "eth_call\r\neth_blockNumber"}, ["allowed_rpc_methods"]),
        ({"rate_limit": "5/s"}, ["rate_limit"]),
        ({"expires_at": "2031-05-06T12:00:00"}, ["expires_at"]),
        ({"expires_at": ""}, ["expires_at"]),
        ({"upstreams": ["local"]}, ["upstreams"]),
        ({"name": "renamed", "upstreams": ["acme-api"]}, ["name", "upstreams"]),
    ],
)
def test_audit_names_exactly_the_changed_fields(portal_client, api_key, tenant_upstream, overrides, changed):
    _set_up_every_field(api_key, tenant_upstream)
    client = portal_client(Role.DEVELOPER)
    data = {k: v for k, v in form_as_sent(client, api_key, **overrides).items() if v is not None}
    answer = client.post(reverse("portal:key_edit", args=[api_key.key_id]), data)
    assert answer.status_code == 302
    event = AuditEvent.objects.get(action="api_key.updated", target_id=api_key.key_id)
    assert event.data == {"fields": changed}


def test_expiry_with_seconds_survives_an_edit_of_the_name(portal_client, api_key, tenant_upstream):
    _set_up_every_field(api_key, tenant_upstream)
    before = ApiKey.objects.get(pk=api_key.pk)
    client = portal_client(Role.DEVELOPER)
    answer = client.post(
        reverse("portal:key_edit", args=[api_key.key_id]), form_as_sent(client, api_key, name="renamed")
    )
    assert answer.status_code == 302
    after = ApiKey.objects.get(pk=api_key.pk)
    assert after.name == "renamed"
    assert after.expires_at == datetime(2031, 5, 6, 12, 0, 59, 123456, tzinfo=UTC)
    unchanged = [name for name in services.KEY_FIELDS if name != "name"]
    assert [getattr(after, n) for n in unchanged] == [getattr(before, n) for n in unchanged]
    assert set(after.upstreams.all()) == set(before.upstreams.all())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        # The same values as the key stores them, typed differently.
        {
            "name": "  web app ",
            "allowed_origins": "HTTPS://App.Example.COM:443\n*.Example.org\n\n",
            "allowed_ips": " 203.0.113.0/24 \n2001:db8::/32\n203.0.113.0/24",
            "allowed_http_methods": "get\npost",
            "rate_limit": " 100/m ",
            "upstreams": ["acme-api", "local"],
        },
    ],
)
def test_edit_that_changes_nothing_saves_nothing(portal_client, api_key, tenant_upstream, overrides):
    _set_up_every_field(api_key, tenant_upstream)
    before = _snapshot(api_key)
    client = portal_client(Role.DEVELOPER)
    answer = client.post(
        reverse("portal:key_edit", args=[api_key.key_id]), form_as_sent(client, api_key, **overrides)
    )
    assert answer.status_code == 302
    assert answer["Location"] == reverse("portal:key_detail", args=[api_key.key_id])
    assert _snapshot(api_key) == before
    assert not AuditEvent.objects.filter(action="api_key.updated").exists()
    page = client.get(answer["Location"]).content.decode()
    assert "Nothing changed." in page and "is saved" not in page


# --- Rotate -----------------------------------------------------------------------------------------


def test_rotate_get_asks_and_does_not_rotate(portal_client, api_key_and_secret):
    api_key, old = api_key_and_secret
    answer = portal_client(Role.DEVELOPER).get(reverse("portal:key_rotate", args=[api_key.key_id]))
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "Rotate the secret" in page and not SECRET_RE.search(page)
    assert answer.context["form"]["grace"].value() == "86400"
    api_key.refresh_from_db()
    assert api_key.previous_secret_hash == "" and selectors.api_key_secret_valid(api_key=api_key, secret=old)
    assert not AuditEvent.objects.filter(action="api_key.rotated").exists()


def _rotate(client: Client, api_key: ApiKey, data: dict) -> tuple[str, Any]:
    answer = client.post(reverse("portal:key_rotate", args=[api_key.key_id]), data)
    assert answer.status_code == 200
    assert "no-store" in answer["Cache-Control"]
    match = SECRET_RE.search(answer.content.decode())
    assert match, "the new secret is shown"
    return match.group(0), answer


def test_rotate_shows_a_new_secret_once_and_the_old_one_works_within_grace(portal_client, api_key_and_secret):
    api_key, old = api_key_and_secret
    client = portal_client(Role.DEVELOPER)
    new, answer = _rotate(client, api_key, {"grace": "86400"})  # the pre-selected choice
    assert new != old
    api_key.refresh_from_db()
    assert selectors.api_key_secret_valid(api_key=api_key, secret=new)
    assert selectors.api_key_secret_valid(api_key=api_key, secret=old)
    later = timezone.now() + timedelta(hours=23)
    assert selectors.api_key_secret_valid(api_key=api_key, secret=old, now=later)
    assert not selectors.api_key_secret_valid(api_key=api_key, secret=old, now=later + timedelta(hours=2))
    event = AuditEvent.objects.get(action="api_key.rotated", target_id=api_key.key_id)
    assert event.data == {"grace_seconds": 86400} and new not in str(event.data)
    assert new not in str(dict(client.session))
    for url in (
        reverse("portal:key_detail", args=[api_key.key_id]),
        reverse("portal:key_rotate", args=[api_key.key_id]),
        reverse("portal:key_list"),
    ):
        page = client.get(url).content.decode()
        assert new not in page and not SECRET_RE.search(page)


@pytest.mark.parametrize(("grace", "seconds"), [("3600", 3600), ("604800", 604800)])
def test_rotate_with_chosen_grace(portal_client, api_key_and_secret, grace, seconds):
    api_key, old = api_key_and_secret
    new, _ = _rotate(portal_client(Role.ADMIN), api_key, {"grace": grace})
    api_key.refresh_from_db()
    within = timezone.now() + timedelta(seconds=seconds - 60)
    assert selectors.api_key_secret_valid(api_key=api_key, secret=old, now=within)
    assert not selectors.api_key_secret_valid(api_key=api_key, secret=old, now=within + timedelta(minutes=2))
    assert selectors.api_key_secret_valid(api_key=api_key, secret=new, now=within + timedelta(minutes=2))


def test_rotate_with_no_grace_stops_the_old_secret_at_once(portal_client, api_key_and_secret):
    api_key, old = api_key_and_secret
    new, answer = _rotate(portal_client(Role.DEVELOPER), api_key, {"grace": "0"})
    api_key.refresh_from_db()
    assert selectors.api_key_secret_valid(api_key=api_key, secret=new)
    assert not selectors.api_key_secret_valid(api_key=api_key, secret=old)
    assert "no longer works" in answer.content.decode()


def test_rotate_refuses_an_unknown_grace(portal_client, api_key_and_secret):
    api_key, old = api_key_and_secret
    answer = portal_client(Role.DEVELOPER).post(
        reverse("portal:key_rotate", args=[api_key.key_id]), {"grace": "31536000"}
    )
    assert answer.status_code == 200 and answer.context["form"].errors["grace"]
    assert not SECRET_RE.search(answer.content.decode())
    api_key.refresh_from_db()
    assert selectors.api_key_secret_valid(api_key=api_key, secret=old) and api_key.previous_secret_hash == ""


def test_revoked_key_cannot_be_rotated(portal_client, api_key):
    services.api_key_revoke(api_key=api_key, actor="test")
    before = ApiKey.objects.get(pk=api_key.pk).secret_hash
    answer = portal_client(Role.DEVELOPER).post(reverse("portal:key_rotate", args=[api_key.key_id]), {})
    assert answer.status_code == 200 and not SECRET_RE.search(answer.content.decode())
    assert ApiKey.objects.get(pk=api_key.pk).secret_hash == before


# --- Roles, tenants, CSRF ---------------------------------------------------------------------------


def test_viewer_may_not_edit_or_rotate(portal_client, api_key):
    client = portal_client(Role.VIEWER)
    before = _snapshot(api_key)
    hash_before = api_key.secret_hash
    for name in ("portal:key_edit", "portal:key_rotate"):
        url = reverse(name, args=[api_key.key_id])
        for answer in (client.get(url), client.post(url, edit_data(name="renamed", grace="0"))):
            assert answer.status_code == 403
            assert "This needs the developer role" in answer.content.decode()
    assert _snapshot(api_key) == before and api_key.secret_hash == hash_before


def test_another_tenants_key_is_404(portal_client, other_tenant):
    other_key, _ = services.api_key_create(tenant=other_tenant, name="theirs", actor="test")
    client = portal_client(Role.OWNER)
    before = _snapshot(other_key)
    hash_before = other_key.secret_hash
    for name in ("portal:key_edit", "portal:key_rotate"):
        url = reverse(name, args=[other_key.key_id])
        assert client.get(url).status_code == 404
        assert client.post(url, edit_data(name="mine", upstreams=[], grace="0")).status_code == 404
    assert client.get(reverse("portal:key_edit", args=["pk_doesnotexist"])).status_code == 404
    assert _snapshot(other_key) == before and other_key.secret_hash == hash_before


def test_pages_need_login(client, api_key):
    for name in ("portal:key_edit", "portal:key_rotate"):
        answer = client.get(reverse(name, args=[api_key.key_id]))
        assert answer.status_code == 302 and answer["Location"].startswith(reverse("portal:login"))


def test_csrf_is_enforced_on_edit_and_rotate(portal_client, api_key):
    client = portal_client(Role.DEVELOPER, enforce_csrf_checks=True)
    before = _snapshot(api_key)
    hash_before = api_key.secret_hash
    edit_url = reverse("portal:key_edit", args=[api_key.key_id])
    rotate_url = reverse("portal:key_rotate", args=[api_key.key_id])
    assert client.post(edit_url, edit_data(name="renamed")).status_code == 403
    assert client.post(rotate_url, {"grace": "0"}).status_code == 403
    assert _snapshot(api_key) == before and api_key.secret_hash == hash_before
    # With the token from the form, the same posts go through.
    client.get(edit_url)
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    answer = client.post(edit_url, edit_data(name="renamed", csrfmiddlewaretoken=token))
    assert answer.status_code == 302
    answer = client.post(rotate_url, {"grace": "0", "csrfmiddlewaretoken": token})
    assert answer.status_code == 200 and SECRET_RE.search(answer.content.decode())
    api_key.refresh_from_db()
    assert api_key.name == "renamed" and api_key.secret_hash != hash_before

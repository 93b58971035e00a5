"""The portal's audit log (portal/audit.py): admins read this tenant's events, newest first, 50 a
page, filtered by action; nothing of another tenant's, and no secret in any event."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from keys import services
from keys.models import AuditEvent, AuthType, Role
from keys.tests.fixtures import PUBLIC_ADDRESS

ROW_RE = re.compile(r"<tr>\s*<td><time datetime=")
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def admin(portal_client):
    return portal_client(Role.ADMIN)


def make_events(tenant, count: int, action: str = "api_key.updated", start: datetime = START) -> None:
    """`count` events, a minute apart from `start`, target ids ev-0000… in time order."""
    AuditEvent.objects.bulk_create(
        AuditEvent(
            tenant=tenant,
            actor_label="job",
            action=action,
            target_type="ApiKey",
            target_id=f"ev-{n:04d}",
            created_at=start + timedelta(minutes=n),
        )
        for n in range(count)
    )


def rows(answer) -> int:
    return len(ROW_RE.findall(answer.content.decode()))


def url(**query) -> str:
    path = reverse("portal:audit_log")
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


# --- Roles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"), [(Role.VIEWER, 403), (Role.DEVELOPER, 403), (Role.ADMIN, 200), (Role.OWNER, 200)]
)
def test_only_admins_and_owners_read_the_log(portal_client, role, status):
    answer = portal_client(role).get(url())
    assert answer.status_code == status
    if status == 403:
        assert "tenant.created" not in answer.content.decode()


def test_the_log_needs_login(client, tenant):
    answer = client.get(url())
    assert answer.status_code == 302 and answer["Location"].startswith(reverse("portal:login"))


def test_the_log_is_read_only(admin):
    assert admin.post(url()).status_code == 405


# --- Content ----------------------------------------------------------------------------------------


def test_events_are_this_tenants_newest_first_with_every_column(admin, tenant, other_tenant, user):
    services.audit_record(
        action="api_key.created",
        tenant=tenant,
        actor=user,
        target=tenant,
        data={"name": "web <app>", "upstreams": ["a", "b"]},
        ip_address="203.0.113.9",
    )
    services.audit_record(
        action="api_key.secret_leak", tenant=other_tenant, actor="globex-job", data={"x": 1}
    )
    answer = admin.get(url())
    assert answer.status_code == 200
    page = answer.content.decode()
    events = [row["event"] for row in answer.context["rows"]]
    assert events == sorted(events, key=lambda e: (e.created_at, e.pk), reverse=True)
    assert {e.tenant_id for e in events} == {tenant.pk}
    assert "api_key.secret_leak" not in page and "globex-job" not in page
    newest = answer.context["rows"][0]
    assert newest["event"].action == "api_key.created" and newest["who"] == "dev@tenant.example"
    assert "203.0.113.9" in page and "Tenant <code>acme</code>" in page
    assert "name: web &lt;app&gt;</span>; <span>upstreams: a, b</span>" in page and "<app>" not in page
    created_at = newest["event"].created_at.astimezone(UTC)
    assert f'<time datetime="{created_at.isoformat()}">{created_at:%Y-%m-%d %H:%M:%S}</time>' in page
    # An event made by a command or job names its label.
    assert "test" in [row["who"] for row in answer.context["rows"]]
    assert '<th scope="col">When (UTC)</th>' in page and "<caption" in page


def test_a_deleted_actor_falls_back_to_the_label(admin, tenant, django_user_model):
    gone = django_user_model.objects.create_user(username="gone@acme.example", email="gone@acme.example")
    services.audit_record(action="member.removed", tenant=tenant, actor=gone)
    gone.delete()
    answer = admin.get(url(action="member.removed"))
    assert [row["who"] for row in answer.context["rows"]] == ["gone@acme.example"]


def test_no_secret_reaches_the_log(admin, tenant, loopback_upstream):
    api_key, secret = services.api_key_create(
        tenant=tenant, name="k", upstreams=[loopback_upstream], actor="t"
    )
    rotated = services.api_key_rotate(api_key=api_key, actor="t")
    _, management = services.management_token_create(tenant=tenant, name="ci", actor="t")
    credential = "upstream-cred-Zq8v3K"
    upstream = services.upstream_create(
        tenant=tenant,
        slug="rpc",
        base_url=f"https://{PUBLIC_ADDRESS}",
        auth_type=AuthType.BEARER,
        auth_value=credential,
        actor="t",
    )
    services.upstream_update(upstream=upstream, auth_value=credential + "-2", actor="t")
    answer = admin.get(url())
    page = answer.content.decode()
    for value in (
        secret,
        rotated,
        management,
        credential,
        api_key.secret_hash,
        upstream.auth_value_encrypted,
    ):
        assert value not in page
    for event in AuditEvent.objects.all():
        assert not any(value in str(event.data) for value in (secret, rotated, management, credential))


# --- Pagination -------------------------------------------------------------------------------------


def test_fifty_events_a_page_newest_first(admin, tenant):
    AuditEvent.objects.filter(tenant=tenant).delete()
    make_events(tenant, 120)
    total = 120
    first = admin.get(url())
    assert rows(first) == 50
    assert first.context["rows"][0]["event"].target_id == "ev-0119"
    assert f"of {total}" in first.content.decode()
    assert 'href="?page=2"' in first.content.decode()
    last = admin.get(url(page=3))
    assert rows(last) == total - 100 and last.context["page_obj"].number == 3
    assert 'rel="prev"' in last.content.decode() and 'rel="next"' not in last.content.decode()


@pytest.mark.parametrize(
    ("page", "expected"), [("abc", 1), ("", 1), ("1.5", 1), ("999", 3), ("0", 3), ("-1", 3)]
)
def test_a_bad_page_number_gives_the_first_or_last_page(admin, tenant, page, expected):
    make_events(tenant, 120)
    answer = admin.get(reverse("portal:audit_log"), {"page": page})
    assert answer.status_code == 200
    assert answer.context["page_obj"].number == expected


# --- Filter -----------------------------------------------------------------------------------------


def test_filter_by_action_offers_only_this_tenants_actions(admin, tenant, other_tenant):
    make_events(tenant, 60, action="api_key.rotated")
    make_events(other_tenant, 3, action="upstream.deleted")
    answer = admin.get(url(action="api_key.rotated"))
    assert answer.status_code == 200
    assert {row["event"].action for row in answer.context["rows"]} == {"api_key.rotated"}
    assert answer.context["page_obj"].paginator.count == 60
    page = answer.content.decode()
    assert '<option value="api_key.rotated" selected>' in page
    assert '<option value="tenant.created">' in page and "upstream.deleted" not in page
    # The filter is kept across pages.
    assert 'href="?action=api_key.rotated&amp;page=2"' in page
    assert rows(admin.get(url(action="api_key.rotated", page=2))) == 10


@pytest.mark.parametrize("action", ["upstream.deleted", "no.such.action", "<script>"])
def test_an_action_not_in_this_log_shows_an_error_and_every_event(admin, tenant, other_tenant, action):
    make_events(other_tenant, 2, action="upstream.deleted")
    answer = admin.get(reverse("portal:audit_log"), {"action": action})
    assert answer.status_code == 200
    assert answer.context["form"].errors.get("action")
    assert {row["event"].tenant_id for row in answer.context["rows"]} == {tenant.pk}
    assert "<script>" not in answer.content.decode()


def test_an_empty_log_says_so(admin, tenant):
    answer = admin.get(url())
    assert answer.status_code == 200 and rows(answer) >= 1  # tenant.created, member.added
    AuditEvent.objects.filter(tenant=tenant).delete()
    answer = admin.get(url())
    assert "No events" in answer.content.decode()

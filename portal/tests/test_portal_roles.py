"""The role rules and tenant scope of every portal page, from one table. A new route that is not in the
table fails the first test: each page must say who may use it."""

import re

import pytest
from django.test import override_settings
from django.urls import reverse

from keys import selectors, services
from keys.models import AuditEvent, Role
from keys.services import alerts, webhooks
from portal.urls import urlpatterns

# What a template tag or comment looks like when the template language did not take it (a {# #}
# comment over several lines, say): it would show on the page as text.
TEMPLATE_SYNTAX = re.compile(r"\{[#%{]|[#%}]\}")
ROLES = [Role.VIEWER, Role.DEVELOPER, Role.ADMIN, Role.OWNER]
# Pages anyone may open: signing up and in, password reset, an invitation's landing pages.
PUBLIC = {
    "signup",
    "login",
    "logout",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "invitation_open",
    "invitation_accept",
    "email_confirmation_open",
    "email_confirmation",
}
# Pages of the signed-in account itself, not of a tenant (test_portal_email_confirmation.py).
ACCOUNT_PAGES = {"email_confirmation_resend"}
# route name: (the object its URL names, the least role, whether GET is answered)
MEMBER_PAGES = {
    "home": (None, Role.VIEWER, True),
    "tenant_switch": (None, Role.VIEWER, False),
    "key_list": (None, Role.VIEWER, True),
    "key_create": (None, Role.DEVELOPER, True),
    "key_detail": ("key", Role.VIEWER, True),
    "key_edit": ("key", Role.DEVELOPER, True),
    "key_check": ("key", Role.DEVELOPER, False),
    "key_rotate": ("key", Role.DEVELOPER, True),
    "key_revoke": ("key", Role.DEVELOPER, True),
    "usage": (None, Role.VIEWER, True),
    "usage_csv": (None, Role.VIEWER, True),
    "upstream_list": (None, Role.VIEWER, True),
    "upstream_create": (None, Role.ADMIN, True),
    "upstream_detail": ("upstream", Role.VIEWER, True),
    "upstream_edit": ("upstream", Role.ADMIN, True),
    "upstream_delete": ("upstream", Role.ADMIN, True),
    "member_list": (None, Role.VIEWER, True),
    "member_invite": (None, Role.ADMIN, True),
    "member_role": ("membership", Role.ADMIN, True),
    "member_remove": ("membership", Role.ADMIN, True),
    "member_invitation_revoke": ("invitation", Role.ADMIN, False),
    "token_list": (None, Role.ADMIN, True),
    "token_create": (None, Role.ADMIN, True),
    "token_revoke": ("token", Role.ADMIN, True),
    "audit_log": (None, Role.ADMIN, True),
    "alert_list": (None, Role.VIEWER, True),
    "alert_create": (None, Role.ADMIN, True),
    "alert_delete": ("rule", Role.ADMIN, True),
    "webhook_list": (None, Role.ADMIN, True),
    "webhook_create": (None, Role.ADMIN, True),
    "webhook_detail": ("endpoint", Role.ADMIN, True),
    "webhook_test": ("endpoint", Role.ADMIN, False),
    "webhook_enable": ("endpoint", Role.ADMIN, False),
    "webhook_delete": ("endpoint", Role.ADMIN, True),
    "leak_response": (None, Role.ADMIN, False),
}


# Pages that only show: they answer GET alone, and a POST is 405 whoever sends it.
READ_ONLY = {
    "home",
    "key_list",
    "key_detail",
    "usage",
    "usage_csv",
    "upstream_list",
    "upstream_detail",
    "member_list",
    "token_list",
    "audit_log",
    "alert_list",
    "webhook_list",
    "webhook_detail",
}


def objects_of(tenant, upstream) -> dict:
    """One object of each kind a portal URL can name, in `tenant`, as URL arguments."""
    api_key, _ = services.api_key_create(tenant=tenant, name="k", actor="test")
    member = services.member_add(
        tenant=tenant, email=f"m@{tenant.slug}.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    token, _ = services.management_token_create(tenant=tenant, actor="test")
    invitation, _ = services.invitation_create(
        tenant=tenant, email=f"new@{tenant.slug}.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    rule = alerts.alert_rule_create(tenant=tenant, event="key.revoked", actor="test")
    with override_settings(KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK=True):
        endpoint, _ = webhooks.webhook_endpoint_create(
            tenant=tenant, url="http://127.0.0.1:9/hook", actor="test"
        )
    return {
        "rule": [rule.pk],
        "endpoint": [endpoint.pk],
        "key": [api_key.key_id],
        "upstream": [upstream.slug],
        "membership": [member.pk],
        "token": [token.pk],
        "invitation": [invitation.pk],
        None: [],
    }


@pytest.fixture
def own(tenant, tenant_upstream):
    return objects_of(tenant, tenant_upstream)


@pytest.fixture
def foreign(other_tenant, other_tenant_upstream):
    return objects_of(other_tenant, other_tenant_upstream)


def test_every_portal_route_says_who_may_use_it():
    names = {pattern.name for pattern in urlpatterns}
    assert names - PUBLIC - ACCOUNT_PAGES - set(MEMBER_PAGES) == set()
    assert set(MEMBER_PAGES) - names == set()  # the table names no route that is gone


@pytest.mark.parametrize("name", sorted(MEMBER_PAGES))
def test_signed_out_visitors_are_sent_to_log_in(client, own, name):
    kind, _, _ = MEMBER_PAGES[name]
    url = reverse(f"portal:{name}", args=own[kind])
    answer = client.get(url) if name in READ_ONLY else client.post(url)
    assert answer.status_code == 302 and answer["Location"].startswith("/portal/login")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(MEMBER_PAGES))
def test_each_role_gets_exactly_the_pages_its_rank_allows(portal_client, own, name, role):
    kind, least, answers_get = MEMBER_PAGES[name]
    client = portal_client(role)
    url = reverse(f"portal:{name}", args=own[kind])
    events_before = AuditEvent.objects.count()

    answer = client.get(url) if answers_get else client.post(url, {"tenant": "acme"})

    if selectors.role_at_least(role=role, minimum=least):
        assert answer.status_code in (200, 302), answer.status_code
        body = b"".join(answer.streaming_content) if answer.streaming else answer.content
        assert not TEMPLATE_SYNTAX.search(body.decode()), "template syntax rendered as text"
    else:
        assert answer.status_code == 403
        if name not in READ_ONLY:
            assert client.post(url, {"name": "x", "role": Role.OWNER}).status_code == 403
        assert AuditEvent.objects.count() == events_before  # refused before anything happened


@pytest.mark.parametrize("name", sorted(name for name, (kind, _, _) in MEMBER_PAGES.items() if kind))
def test_another_tenants_objects_are_not_found_even_for_an_owner(portal_client, own, foreign, name):
    kind, _, answers_get = MEMBER_PAGES[name]
    client = portal_client(Role.OWNER)
    url = reverse(f"portal:{name}", args=foreign[kind])
    events_before = AuditEvent.objects.count()

    assert (client.get(url) if answers_get else client.post(url)).status_code == 404
    if name not in READ_ONLY:
        assert client.post(url, {"role": Role.VIEWER, "grace": "0"}).status_code == 404
    assert AuditEvent.objects.count() == events_before


# Switching to another organisation is not a change to this one.
CHANGES = sorted(name for name in MEMBER_PAGES if name not in READ_ONLY | {"tenant_switch"})


@pytest.mark.parametrize("name", CHANGES)
def test_a_suspended_tenant_can_read_but_change_nothing(portal_client, own, tenant, name):
    kind, _, answers_get = MEMBER_PAGES[name]
    client = portal_client(Role.OWNER)
    services.tenant_set_active(tenant=tenant, is_active=False, actor="staff")
    events_before = AuditEvent.objects.count()

    answer = client.post(reverse(f"portal:{name}", args=own[kind]), {"name": "x", "tenant": "acme"})

    assert answer.status_code == 403
    assert "is suspended" in answer.content.decode()
    assert AuditEvent.objects.count() == events_before


def test_a_suspended_tenants_pages_say_so(portal_client, tenant):
    client = portal_client(Role.VIEWER)
    services.tenant_set_active(tenant=tenant, is_active=False, actor="staff")
    answer = client.get(reverse("portal:key_list"))
    assert answer.status_code == 200 and "is suspended" in answer.content.decode()


@pytest.mark.parametrize(
    "path",
    [
        "/portal/keys/pk_abc%00",
        "/portal/keys/%00/edit",
        "/portal/keys/pk_%C3%A9t%C3%A9/rotate",
        "/portal/keys/" + "pk_" + "a" * 500,
        "/portal/upstreams/a%00b",
        "/portal/upstreams/%E2%80%AEevil/edit",
        "/portal/members/99999999999999999999999/role",
        "/portal/tokens/-1/revoke",
    ],
)
def test_hostile_ids_in_urls_are_not_found_never_a_server_error(portal_client, path):
    assert portal_client(Role.OWNER).get(path).status_code == 404


@pytest.mark.parametrize("slug", ["\x00", "acme\x00", "ac me", "", "é"])
def test_switching_to_a_hostile_tenant_name_is_not_found(portal_client, slug):
    assert (
        portal_client(Role.OWNER).post(reverse("portal:tenant_switch"), {"tenant": slug}).status_code == 404
    )


@pytest.mark.parametrize(
    "name", ["signup", "login", "password_reset", "password_reset_done", "password_reset_complete"]
)
def test_public_pages_render_no_template_syntax_as_text(client, db, name):
    answer = client.get(reverse(f"portal:{name}"))
    assert answer.status_code == 200
    assert not TEMPLATE_SYNTAX.search(answer.content.decode())

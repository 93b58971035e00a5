"""The portal's management-token pages (portal/tokens.py): admins list, create (the token shown once)
and revoke (confirm, then POST); roles, tenant scope, CSRF."""

import re

import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient

from keys import crypto, services
from keys.models import AuditEvent, ManagementToken, Role
from portal.tests.portal_helpers import found

TOKEN_RE = re.compile(r"mt_[0-9A-Za-z]{20,}")


@pytest.fixture
def token_and_clear(tenant, user):
    return services.management_token_create(tenant=tenant, name="ci deploy", actor=user)


@pytest.fixture
def other_token(other_tenant):
    return services.management_token_create(tenant=other_tenant, name="globex ci", actor="test")[0]


def url(name: str, *args) -> str:
    return reverse(f"portal:{name}", args=args)


def api_status(clear: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    return client.get("/api/v1/keys").status_code


# --- List -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_admins_list_the_tenants_tokens_never_their_values(portal_client, role, token_and_clear, other_token):
    token, clear = token_and_clear
    services.management_token_revoke(
        token=services.management_token_create(tenant=token.tenant, name="old")[0]
    )
    answer = portal_client(role).get(url("token_list"))
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "ci deploy" in page and f"…{token.hint}" in page and "dev@tenant.example" in page
    assert "never" in page and "active" in page and "revoked" in page
    assert clear not in page and token.token_hash not in page and not TOKEN_RE.search(page)
    assert "globex ci" not in page
    assert url("token_revoke", token.pk) in page


def test_list_shows_how_to_use_a_token(portal_client):
    page = portal_client(Role.ADMIN).get(url("token_list")).content.decode()
    assert 'curl -H "Authorization: Bearer $MANAGEMENT_TOKEN" http://testserver/api/v1/keys' in page


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER])
def test_viewers_and_developers_are_refused_every_token_page(portal_client, role, token_and_clear):
    token, clear = token_and_clear
    client = portal_client(role)
    for path in (url("token_list"), url("token_create"), url("token_revoke", token.pk)):
        answer = client.get(path)
        assert answer.status_code == 403 and clear not in answer.content.decode()
    assert client.post(url("token_create"), {"name": "sneaky"}).status_code == 403
    assert client.post(url("token_revoke", token.pk)).status_code == 403
    assert not ManagementToken.objects.filter(name="sneaky").exists()
    token.refresh_from_db()
    assert token.revoked_at is None


def test_nav_shows_tokens_only_to_admins(portal_client):
    assert url("token_list") not in portal_client(Role.DEVELOPER).get(url("key_list")).content.decode()
    assert url("token_list") in portal_client(Role.ADMIN).get(url("key_list")).content.decode()


@pytest.mark.parametrize(("name", "args"), [("token_list", ()), ("token_create", ()), ("token_revoke", (1,))])
def test_pages_need_login(client, token_and_clear, name, args):
    answers = [client.get(url(name, *args))]
    if name != "token_list":
        answers.append(client.post(url(name, *args), {"name": "anonymous"}))
    for answer in answers:
        assert answer.status_code == 302 and answer["Location"].startswith(reverse("portal:login"))
    assert not ManagementToken.objects.filter(name="anonymous").exists()
    assert ManagementToken.objects.get().revoked_at is None


# --- Create -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_create_shows_the_token_once_and_stores_only_its_hash(portal_client, tenant, role):
    client = portal_client(role)
    form_page = client.get(url("token_create"))
    assert form_page.status_code == 200 and "no-store" in form_page["Cache-Control"]
    answer = client.post(url("token_create"), {"name": "  nightly sync  "})
    assert answer.status_code == 200
    assert "no-store" in answer["Cache-Control"]
    page = answer.content.decode()
    clear = found(TOKEN_RE, page)
    assert 'id="copy-secret"' in page and "shown this once" in page
    assert "Authorization: Bearer $MANAGEMENT_TOKEN" in page
    token = ManagementToken.objects.get(name="nightly sync")
    assert token.tenant == tenant and token.hint == clear[-4:]
    assert token.token_hash == crypto.hash_secret(clear) and token.token_hash != clear
    assert token.created_by is not None and token.created_by.email.startswith(role)
    event = AuditEvent.objects.get(action="management_token.created", target_id=str(token.pk))
    assert clear not in str(event.data) and event.tenant == tenant
    # Never again: not on the list, not on the form, not on the revoke page.
    for path in (url("token_list"), url("token_create"), url("token_revoke", token.pk)):
        assert clear not in client.get(path).content.decode()
    # And it works against the management API.
    assert api_status(clear) == 200


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_bad_name_shows_a_form_error_and_creates_nothing(portal_client, name):
    client = portal_client(Role.ADMIN)
    answer = client.post(url("token_create"), {"name": name})
    assert answer.status_code == 200
    assert answer.context["form"].errors.get("name")
    assert not TOKEN_RE.search(answer.content.decode())
    assert ManagementToken.objects.count() == 0


def test_get_on_the_create_page_makes_no_token(portal_client):
    answer = portal_client(Role.ADMIN).get(url("token_create"), {"name": "via get"})
    assert answer.status_code == 200 and ManagementToken.objects.count() == 0


# --- Revoke -----------------------------------------------------------------------------------------


def test_get_asks_first_and_does_not_revoke(portal_client, token_and_clear):
    token, clear = token_and_clear
    answer = portal_client(Role.ADMIN).get(url("token_revoke", token.pk))
    assert answer.status_code == 200
    page = answer.content.decode()
    assert 'method="post"' in page and f"…{token.hint}" in page and clear not in page
    token.refresh_from_db()
    assert token.revoked_at is None and api_status(clear) == 200


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_post_revokes_and_the_api_refuses_the_token(portal_client, tenant, token_and_clear, role):
    token, clear = token_and_clear
    client = portal_client(role)
    answer = client.post(url("token_revoke", token.pk))
    assert answer.status_code == 302 and answer["Location"] == url("token_list")
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert api_status(clear) == 401
    assert AuditEvent.objects.filter(action="management_token.revoked", tenant=tenant).count() == 1
    # Revoking again changes nothing; the confirm page says it is already revoked.
    revoked_at = token.revoked_at
    assert client.post(url("token_revoke", token.pk)).status_code == 302
    token.refresh_from_db()
    assert token.revoked_at == revoked_at
    assert AuditEvent.objects.filter(action="management_token.revoked", tenant=tenant).count() == 1
    assert "was revoked" in client.get(url("token_revoke", token.pk)).content.decode()


def test_other_tenants_token_is_not_found(portal_client, other_token):
    client = portal_client(Role.OWNER)
    assert client.get(url("token_revoke", other_token.pk)).status_code == 404
    assert client.post(url("token_revoke", other_token.pk)).status_code == 404
    assert client.post(url("token_revoke", 999999)).status_code == 404
    other_token.refresh_from_db()
    assert other_token.revoked_at is None


def test_csrf_is_enforced_on_create_and_revoke(portal_client, token_and_clear):
    token, _ = token_and_clear
    client = portal_client(Role.ADMIN, enforce_csrf_checks=True)
    assert client.post(url("token_create"), {"name": "forged"}).status_code == 403
    assert client.post(url("token_revoke", token.pk)).status_code == 403
    assert not ManagementToken.objects.filter(name="forged").exists()
    token.refresh_from_db()
    assert token.revoked_at is None
    # With the token from the form, the same posts go through.
    client.get(url("token_create"))
    csrf = client.cookies[settings.CSRF_COOKIE_NAME].value
    answer = client.post(url("token_create"), {"name": "real", "csrfmiddlewaretoken": csrf})
    assert answer.status_code == 200 and TOKEN_RE.search(answer.content.decode())
    answer = client.post(url("token_revoke", token.pk), {"csrfmiddlewaretoken": csrf})
    assert answer.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None

"""Every change made through the portal or the API records the client's address in the audit trail."""

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from keys import services
from keys.models import AuditEvent, Role

ADDRESS = "203.0.113.9"


@pytest.fixture
def admin_client(tenant, django_user_model):
    user = django_user_model.objects.create_user(username="a@acme.example", email="a@acme.example")
    services.membership_set(tenant=tenant, user=user, role=Role.ADMIN, actor="test")
    client = Client(REMOTE_ADDR=ADDRESS)
    client.force_login(user)
    return client


def address_of(action: str) -> str | None:
    return AuditEvent.objects.get(action=action).ip_address


def test_portal_token_and_upstream_changes_record_the_address(
    admin_client, tenant_upstream, public_dns, monkeypatch
):
    monkeypatch.setattr("keys.validators.resolve_host", public_dns)
    edit = admin_client.get(reverse("portal:upstream_edit", args=[tenant_upstream.slug])).context["form"]
    admin_client.post(
        reverse("portal:upstream_edit", args=[tenant_upstream.slug]), {**edit.initial, "timeout_seconds": 5}
    )
    admin_client.post(reverse("portal:token_create"), {"name": "ci"})
    token = tenant_upstream.tenant.management_tokens.get(name="ci")
    admin_client.post(reverse("portal:token_revoke", args=[token.pk]))
    admin_client.post(reverse("portal:upstream_delete", args=[tenant_upstream.slug]))

    assert address_of("upstream.updated") == ADDRESS
    assert address_of("management_token.created") == ADDRESS
    assert address_of("management_token.revoked") == ADDRESS
    assert address_of("upstream.deleted") == ADDRESS


def test_api_token_and_upstream_changes_record_the_address(tenant, tenant_upstream):
    _, clear = services.management_token_create(tenant=tenant, name="api", actor="test")
    api = APIClient(REMOTE_ADDR=ADDRESS, HTTP_AUTHORIZATION=f"Bearer {clear}")

    created = api.post("/api/v1/management-tokens", {"name": "second"}, format="json")
    api.delete(f"/api/v1/management-tokens/{created.json()['id']}")
    api.delete(f"/api/v1/upstreams/{tenant_upstream.slug}")

    assert (
        AuditEvent.objects.get(action="management_token.created", data__name="second").ip_address == ADDRESS
    )
    assert address_of("management_token.revoked") == ADDRESS
    assert address_of("upstream.deleted") == ADDRESS


def test_api_member_changes_record_the_address(tenant):
    _, clear = services.management_token_create(tenant=tenant, name="api", actor="test")
    api = APIClient(REMOTE_ADDR=ADDRESS, HTTP_AUTHORIZATION=f"Bearer {clear}")
    member_id = api.post(
        "/api/v1/members", {"email": "m@corp.example", "role": "viewer"}, format="json"
    ).json()["id"]
    api.patch(f"/api/v1/members/{member_id}", {"role": "developer"}, format="json")
    api.delete(f"/api/v1/members/{member_id}")
    for action in ("member.added", "member.role_changed", "member.removed"):
        assert address_of(action) == ADDRESS, action

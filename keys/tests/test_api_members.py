"""/api/v1/members: every member sees the members, admins manage them, only owners touch the owner role."""

import pytest

from keys.models import AuditEvent, Membership, Role
from keys.tests.api_helpers import error_of

pytestmark = pytest.mark.django_db


def owner_of(tenant) -> Membership:
    return Membership.objects.get(tenant=tenant, role=Role.OWNER)


def test_members_are_listed_for_every_role(session_client, tenant):
    viewer = session_client(Role.VIEWER)
    response = viewer.get("/api/v1/members")
    assert response.status_code == 200
    emails = {member["email"] for member in response.json()["results"]}
    assert "owner@acme.example" in emails
    assert all(set(member) == {"id", "email", "role", "created_at"} for member in response.json()["results"])


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER])
def test_only_admins_manage_members(session_client, role, tenant):
    client = session_client(role)
    response = client.post("/api/v1/members", {"email": "new@acme.example", "role": "viewer"}, format="json")
    error_of(response, 403, "permission_denied")
    response = client.patch(f"/api/v1/members/{owner_of(tenant).pk}", {"role": "viewer"}, format="json")
    error_of(response, 403, "permission_denied")
    assert not Membership.objects.filter(user__email="new@acme.example").exists()


def test_admin_adds_changes_and_removes_a_member(api, tenant):
    response = api.post("/api/v1/members", {"email": "Dev@Acme.example", "role": "developer"}, format="json")
    assert response.status_code == 201, response.content
    member_id = response.json()["id"]
    assert response.json()["role"] == "developer"
    response = api.patch(f"/api/v1/members/{member_id}", {"role": "viewer"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "viewer"
    assert api.delete(f"/api/v1/members/{member_id}").status_code == 204
    assert not Membership.objects.filter(pk=member_id).exists()
    actions = set(AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert {"member.added", "member.role_changed", "member.removed"} <= actions


def test_adding_someone_twice_is_a_field_error(api):
    api.post("/api/v1/members", {"email": "twice@acme.example", "role": "viewer"}, format="json")
    response = api.post("/api/v1/members", {"email": "twice@acme.example", "role": "admin"}, format="json")
    assert "email" in error_of(response, 400, "invalid_request")["fields"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-email", "role": "viewer"}, "email"),
        ({"email": "x@acme.example", "role": "superuser"}, "role"),
        ({"email": "x@acme.example", "role": "viewer", "tenant": 2}, "tenant"),
        ({"email": "x@acme.example", "role": "viewer", "id": 1}, "id"),
    ],
)
def test_bad_member_bodies_are_400_with_fields(api, body, field):
    response = api.post("/api/v1/members", body, format="json")
    assert field in error_of(response, 400, "invalid_request")["fields"]


def test_an_admin_cannot_grant_or_take_the_owner_role(api, tenant):
    response = api.post("/api/v1/members", {"email": "boss@acme.example", "role": "owner"}, format="json")
    error_of(response, 400, "invalid_request")
    response = api.patch(f"/api/v1/members/{owner_of(tenant).pk}", {"role": "viewer"}, format="json")
    error_of(response, 400, "invalid_request")
    error_of(api.delete(f"/api/v1/members/{owner_of(tenant).pk}"), 400, "invalid_request")
    assert owner_of(tenant).role == Role.OWNER


def test_the_last_owner_stays(session_client, tenant):
    owner = owner_of(tenant)
    client = session_client(Role.OWNER, user=owner.user)
    response = client.patch(f"/api/v1/members/{owner.pk}", {"role": "admin"}, format="json")
    assert "role" in error_of(response, 400, "invalid_request")["fields"]
    second = client.post("/api/v1/members", {"email": "co@acme.example", "role": "owner"}, format="json")
    assert second.status_code == 201
    assert client.patch(f"/api/v1/members/{owner.pk}", {"role": "admin"}, format="json").status_code == 200


def test_another_tenants_member_is_404(api, other_tenant):
    foreign = owner_of(other_tenant)
    error_of(api.get(f"/api/v1/members/{foreign.pk}"), 404, "not_found")
    error_of(api.patch(f"/api/v1/members/{foreign.pk}", {"role": "viewer"}, format="json"), 404, "not_found")
    error_of(api.delete(f"/api/v1/members/{foreign.pk}"), 404, "not_found")
    assert owner_of(other_tenant).role == Role.OWNER

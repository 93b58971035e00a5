"""Who may call the management API: management tokens, portal sessions by role, tenant scoping, CSRF,
mass assignment, and secrets shown exactly once."""

import json
import logging
from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone
from rest_framework.test import APIClient

from keys import selectors, services
from keys.models import ApiKey, AuditEvent, ManagementToken, Role, Upstream
from keys.tests.api_helpers import error_of

PUBLIC_URL = "https://8.8.8.8/v1"
ROLES = [Role.VIEWER, Role.DEVELOPER, Role.ADMIN, Role.OWNER]

# method, path, body, status on success, least role that may call it
ENDPOINTS = [
    ("get", "/api/v1/tenant", None, 200, Role.VIEWER),
    ("get", "/api/v1/keys", None, 200, Role.VIEWER),
    ("post", "/api/v1/keys", {"name": "new"}, 201, Role.DEVELOPER),
    ("get", "/api/v1/keys/{key}", None, 200, Role.VIEWER),
    ("patch", "/api/v1/keys/{key}", {"name": "renamed"}, 200, Role.DEVELOPER),
    ("delete", "/api/v1/keys/{key}", None, 204, Role.DEVELOPER),
    ("post", "/api/v1/keys/{key}/rotate", {"grace_seconds": 60}, 200, Role.DEVELOPER),
    ("get", "/api/v1/keys/{key}/usage", None, 200, Role.VIEWER),
    ("get", "/api/v1/upstreams", None, 200, Role.VIEWER),
    ("post", "/api/v1/upstreams", {"slug": "new-up", "base_url": PUBLIC_URL}, 201, Role.ADMIN),
    ("get", "/api/v1/upstreams/{upstream}", None, 200, Role.VIEWER),
    ("patch", "/api/v1/upstreams/{upstream}", {"name": "renamed"}, 200, Role.ADMIN),
    ("delete", "/api/v1/upstreams/{upstream}", None, 204, Role.ADMIN),
    ("get", "/api/v1/management-tokens", None, 200, Role.ADMIN),
    ("post", "/api/v1/management-tokens", {"name": "deploy"}, 201, Role.ADMIN),
    ("get", "/api/v1/management-tokens/{token}", None, 200, Role.ADMIN),
    ("delete", "/api/v1/management-tokens/{token}", None, 204, Role.ADMIN),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, *_ in ENDPOINTS]


@pytest.fixture
def objects(api_key, tenant):
    """The path parameters of one of the tenant's keys, upstreams and management tokens. The upstream
    is on a literal public address, so updating it needs no DNS (there is none here)."""
    upstream = services.upstream_create(tenant=tenant, slug="acme-rpc", base_url=PUBLIC_URL, actor="test")
    token, _ = services.management_token_create(tenant=tenant, name="spare", actor="test")
    return {"key": api_key.key_id, "upstream": upstream.slug, "token": token.pk}


def call(client, method, path, body, objects, **extra):
    url = path.format(**objects)
    if body is None:
        return getattr(client, method)(url, **extra)
    return getattr(client, method)(url, body, format="json", **extra)


@pytest.mark.parametrize("method, path, body, success, minimum", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("role", ROLES)
def test_session_roles(session_client, objects, role, method, path, body, success, minimum):
    response = call(session_client(role), method, path, body, objects)
    if selectors.role_at_least(role=role, minimum=minimum):
        assert response.status_code == success, response.content
    else:
        error_of(response, 403, "permission_denied")


@pytest.mark.parametrize("method, path, body, success, minimum", ENDPOINTS, ids=ENDPOINT_IDS)
def test_management_token_acts_as_admin_of_its_tenant(api, objects, method, path, body, success, minimum):
    assert call(api, method, path, body, objects).status_code == success


@pytest.mark.parametrize("method, path, body, success, minimum", ENDPOINTS, ids=ENDPOINT_IDS)
def test_anonymous_is_401_everywhere(objects, method, path, body, success, minimum):
    response = call(APIClient(), method, path, body, objects)
    error_of(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.fixture
def revoked_token(tenant):
    token, clear = services.management_token_create(tenant=tenant, actor="test")
    services.management_token_revoke(token=token, actor="test")
    return clear


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer ",
        "Bearer mt_short",
        "Bearer mt_" + "a" * 38,
        "Bearer at_" + "a" * 38,
        "Bearer \u00e9\u00e9",
        "revoked",
    ],
)
def test_bad_management_tokens_are_401(db, revoked_token, authorization):
    if authorization == "revoked":
        authorization = f"Bearer {revoked_token}"
    response = APIClient().get("/api/v1/keys", HTTP_AUTHORIZATION=authorization)
    error_of(response, 401, "not_authenticated")


def test_suspended_tenants_management_token_is_401(api, tenant):
    services.tenant_set_active(tenant=tenant, is_active=False, actor="test")
    error_of(api.get("/api/v1/keys"), 401, "not_authenticated")


def test_suspended_tenants_members_are_403_tenant_suspended(session_client, tenant):
    client = session_client(Role.OWNER)
    services.tenant_set_active(tenant=tenant, is_active=False, actor="test")
    error_of(client.get("/api/v1/keys"), 403, "tenant_suspended")


def test_management_token_use_is_recorded_at_most_once_a_minute(api, tenant):
    token = ManagementToken.objects.get(tenant=tenant, name="ci")
    assert token.last_used_at is None
    api.get("/api/v1/keys")
    first = ManagementToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    api.get("/api/v1/keys")
    assert ManagementToken.objects.get(pk=token.pk).last_used_at == first
    ManagementToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    api.get("/api/v1/keys")
    last_used_at = ManagementToken.objects.get(pk=token.pk).last_used_at
    assert last_used_at is not None
    assert last_used_at > first


def test_revoked_management_token_stops_at_once(api, tenant):
    token = ManagementToken.objects.get(tenant=tenant, name="ci")
    assert api.delete(f"/api/v1/management-tokens/{token.pk}").status_code == 204
    error_of(api.get("/api/v1/keys"), 401, "not_authenticated")


# --- Sessions: CSRF and the choice of tenant --------------------------------------------------------


def test_session_writes_need_the_csrf_token(session_client):
    client = session_client(Role.DEVELOPER, csrf=False)
    assert client.get("/api/v1/keys").status_code == 200
    error_of(client.post("/api/v1/keys", {"name": "x"}, format="json"), 403, "permission_denied")
    assert not ApiKey.objects.exists()


def test_session_user_acts_for_their_first_membership_or_the_x_tenant_header(
    session_client, tenant, other_tenant, user
):
    services.membership_set(tenant=tenant, user=user, role=Role.VIEWER, actor="test")
    services.membership_set(tenant=other_tenant, user=user, role=Role.ADMIN, actor="test")
    client = session_client(Role.VIEWER, user=user)
    assert client.get("/api/v1/tenant").json() == {"slug": "acme", "name": "acme", "role": "viewer"}
    chosen = client.get("/api/v1/tenant", HTTP_X_TENANT="globex").json()
    assert chosen == {"slug": "globex", "name": "globex", "role": "admin"}
    assert (
        client.post("/api/v1/keys", {"name": "g"}, format="json", HTTP_X_TENANT="globex").status_code == 201
    )
    error_of(client.post("/api/v1/keys", {"name": "a"}, format="json"), 403, "permission_denied")
    assert list(ApiKey.objects.values_list("tenant__slug", flat=True)) == ["globex"]


@pytest.mark.parametrize("slug", ["globex", "nobody", ""])
def test_x_tenant_naming_a_tenant_without_membership_is_403(session_client, other_tenant, slug):
    client = session_client(Role.OWNER)
    response = client.get("/api/v1/keys", HTTP_X_TENANT=slug)
    if slug:
        error_of(response, 403, "permission_denied")
    else:
        assert response.status_code == 200  # an empty header: the first membership


def test_signed_in_user_without_membership_is_403(db, django_user_model):
    user = django_user_model.objects.create_user(username="lonely", password="pw")
    client = APIClient()
    client.force_login(user)
    error_of(client.get("/api/v1/keys"), 403, "permission_denied")


def test_staff_without_membership_gets_no_tenant(staff_user, tenant):
    client = APIClient()
    client.force_login(staff_user)
    error_of(client.get("/api/v1/keys"), 403, "permission_denied")


# --- Tenant scoping -------------------------------------------------------------------------------


@pytest.fixture
def foreign(other_tenant, other_tenant_upstream):
    api_key, _ = services.api_key_create(tenant=other_tenant, name="theirs", actor="test")
    token, _ = services.management_token_create(tenant=other_tenant, name="theirs", actor="test")
    return {"key": api_key.key_id, "upstream": other_tenant_upstream.slug, "token": token.pk}


@pytest.mark.parametrize(
    "method, path, body",
    [(m, p, b) for m, p, b, _, _ in ENDPOINTS if "{" in p],
    ids=[i for i, (_, p, *_) in zip(ENDPOINT_IDS, ENDPOINTS, strict=True) if "{" in p],
)
def test_another_tenants_objects_answer_404_and_stay_unchanged(api, foreign, method, path, body):
    before = (
        model_to_dict(ApiKey.objects.get(key_id=foreign["key"]), exclude=["upstreams"]),
        model_to_dict(Upstream.objects.get(slug=foreign["upstream"])),
        model_to_dict(ManagementToken.objects.get(pk=foreign["token"])),
    )
    error_of(call(api, method, path, body, foreign), 404, "not_found")
    after = (
        model_to_dict(ApiKey.objects.get(key_id=foreign["key"]), exclude=["upstreams"]),
        model_to_dict(Upstream.objects.get(slug=foreign["upstream"])),
        model_to_dict(ManagementToken.objects.get(pk=foreign["token"])),
    )
    assert before == after


def test_lists_hold_only_the_callers_tenant(api, other_api, api_key, foreign):
    assert [row["id"] for row in api.get("/api/v1/keys").json()["results"]] == [api_key.key_id]
    assert [row["id"] for row in other_api.get("/api/v1/keys").json()["results"]] == [foreign["key"]]
    names = [row["name"] for row in api.get("/api/v1/management-tokens").json()["results"]]
    assert "theirs" not in names


# --- Mass assignment ------------------------------------------------------------------------------

FORBIDDEN = [
    ("id", "pk_" + "A" * 30),
    ("key_id", "pk_" + "A" * 30),
    ("tenant", "globex"),
    ("tenant_id", 2),
    ("secret_hash", "0" * 64),
    ("previous_secret_hash", "0" * 64),
    ("secret", "sk_" + "A" * 38),
    ("revoked_at", "2020-01-01T00:00:00Z"),
    ("created_at", "2020-01-01T00:00:00Z"),
    ("updated_at", "2020-01-01T00:00:00Z"),
    ("last_used_at", "2020-01-01T00:00:00Z"),
    ("created_by", 1),
]


@pytest.mark.parametrize("field, value", FORBIDDEN)
def test_create_key_refuses_fields_the_caller_may_not_set(api, other_tenant, field, value):
    error = error_of(
        api.post("/api/v1/keys", {"name": "x", field: value}, format="json"), 400, "invalid_request"
    )
    assert list(error["fields"]) == [field]
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("field, value", FORBIDDEN)
def test_patch_key_refuses_fields_the_caller_may_not_set_and_applies_nothing(
    api, api_key, other_tenant, field, value
):
    before = model_to_dict(ApiKey.objects.get(pk=api_key.pk), exclude=["upstreams"])
    response = api.patch(f"/api/v1/keys/{api_key.key_id}", {"name": "changed", field: value}, format="json")
    assert list(error_of(response, 400, "invalid_request")["fields"]) == [field]
    assert model_to_dict(ApiKey.objects.get(pk=api_key.pk), exclude=["upstreams"]) == before


@pytest.mark.parametrize("field", ["id", "tenant", "token_hash", "hint", "revoked_at", "token"])
def test_create_management_token_refuses_fields_the_caller_may_not_set(api, tenant, field):
    error = error_of(
        api.post("/api/v1/management-tokens", {field: "x"}, format="json"), 400, "invalid_request"
    )
    assert list(error["fields"]) == [field]
    assert ManagementToken.objects.filter(tenant=tenant).count() == 1


# --- Secrets appear exactly once --------------------------------------------------------------------


def test_key_secret_appears_only_in_the_create_and_rotate_answers(api, caplog):
    with caplog.at_level(logging.DEBUG):
        created = api.post("/api/v1/keys", {"name": "x"}, format="json")
        secret = created.json()["secret"]
        key_url = f"/api/v1/keys/{created.json()['id']}"
        later = [api.get("/api/v1/keys"), api.get(key_url), api.patch(key_url, {"name": "y"}, format="json")]
        rotated = api.post(f"{key_url}/rotate", format="json")
        new_secret = rotated.json()["secret"]
        later += [
            api.get("/api/v1/keys"),
            api.get(key_url),
            api.post(f"{key_url}/rotate", {"x": 1}, format="json"),
        ]
    assert created.content.decode().count(secret) == 1
    assert rotated.content.decode().count(new_secret) == 1 and secret not in rotated.content.decode()
    for response in later:
        text = response.content.decode()
        assert secret not in text and new_secret not in text and '"secret"' not in text
    audit = json.dumps(list(AuditEvent.objects.values("data", "target_id", "actor_label")))
    assert secret not in audit and new_secret not in audit
    assert secret not in caplog.text and new_secret not in caplog.text


def test_management_token_value_appears_only_in_the_create_answer(api):
    created = api.post("/api/v1/management-tokens", {"name": "deploy"}, format="json")
    clear = created.json()["token"]
    assert clear.startswith("mt_") and created["Cache-Control"] == "no-store"
    listed = api.get("/api/v1/management-tokens").content.decode()
    read = api.get(f"/api/v1/management-tokens/{created.json()['id']}").content.decode()
    assert clear not in listed and clear not in read and '"token"' not in read
    authenticated = selectors.management_token_authenticate(token=clear)
    assert authenticated is not None
    assert authenticated.name == "deploy"

"""Each tenant has bounded keys, management tokens and upstreams (KEYS_MAX_*_PER_TENANT): past a limit the
API answers 400 invalid_request saying so, and the portal shows it on the form; nothing is made."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from keys import services, validators
from keys.models import ApiKey, ManagementToken, Role, Upstream
from keys.tests.api_helpers import error_of
from keys.tests.fixtures import PUBLIC_ADDRESS, make_resolver
from portal.tests.portal_helpers import key_form_data

PUBLIC_URL = "https://8.8.8.8/v1"


def test_defaults_are_sane(settings):
    assert settings.KEYS_MAX_KEYS_PER_TENANT == 1000
    assert settings.KEYS_MAX_MANAGEMENT_TOKENS_PER_TENANT == 50
    assert settings.KEYS_MAX_UPSTREAMS_PER_TENANT == 100


def test_api_refuses_a_key_past_the_limit_and_revoked_keys_free_a_place(api, tenant, settings):
    settings.KEYS_MAX_KEYS_PER_TENANT = 2
    for name in ("one", "two"):
        assert api.post("/api/v1/keys", {"name": name}, format="json").status_code == 201
    error = error_of(api.post("/api/v1/keys", {"name": "three"}, format="json"), 400, "invalid_request")
    assert "limit of 2" in error["message"]
    assert ApiKey.objects.filter(tenant=tenant).count() == 2
    services.api_key_revoke(api_key=ApiKey.objects.get(name="one"), actor="test")
    assert api.post("/api/v1/keys", {"name": "three"}, format="json").status_code == 201


def test_the_key_limit_is_per_tenant(api, other_tenant, settings):
    settings.KEYS_MAX_KEYS_PER_TENANT = 1
    services.api_key_create(tenant=other_tenant, name="theirs", actor="test")
    assert api.post("/api/v1/keys", {"name": "mine"}, format="json").status_code == 201


def test_api_refuses_a_management_token_past_the_limit(api, tenant, settings):
    settings.KEYS_MAX_MANAGEMENT_TOKENS_PER_TENANT = 2  # the `api` fixture's token is the first
    assert api.post("/api/v1/management-tokens", {"name": "second"}, format="json").status_code == 201
    response = api.post("/api/v1/management-tokens", {"name": "third"}, format="json")
    assert "limit of 2" in error_of(response, 400, "invalid_request")["message"]
    assert b"mt_" not in response.content
    assert ManagementToken.objects.filter(tenant=tenant).count() == 2


def test_api_refuses_an_upstream_past_the_limit(api, tenant, settings):
    settings.KEYS_MAX_UPSTREAMS_PER_TENANT = 1
    assert (
        api.post("/api/v1/upstreams", {"slug": "a", "base_url": PUBLIC_URL}, format="json").status_code == 201
    )
    response = api.post("/api/v1/upstreams", {"slug": "b", "base_url": PUBLIC_URL}, format="json")
    assert "limit of 1" in error_of(response, 400, "invalid_request")["message"]
    assert not Upstream.objects.filter(slug="b").exists()


def test_global_upstreams_do_not_count_against_a_tenant(api, loopback_upstream, settings):
    settings.KEYS_MAX_UPSTREAMS_PER_TENANT = 1
    assert (
        api.post("/api/v1/upstreams", {"slug": "a", "base_url": PUBLIC_URL}, format="json").status_code == 201
    )


def test_portal_shows_the_key_limit_on_the_form(portal_client, tenant, settings):
    settings.KEYS_MAX_KEYS_PER_TENANT = 1
    services.api_key_create(tenant=tenant, name="first", actor="test")
    answer = portal_client(Role.DEVELOPER).post(reverse("portal:key_create"), key_form_data(name="second"))
    assert answer.status_code == 200
    assert "limit of 1" in " ".join(answer.context["form"].non_field_errors())
    assert not ApiKey.objects.filter(name="second").exists()


def test_portal_shows_the_management_token_limit_on_the_form(portal_client, tenant, settings):
    settings.KEYS_MAX_MANAGEMENT_TOKENS_PER_TENANT = 1
    services.management_token_create(tenant=tenant, name="first", actor="test")
    answer = portal_client(Role.ADMIN).post(reverse("portal:token_create"), {"name": "second"})
    assert answer.status_code == 200
    assert "limit of 1" in " ".join(answer.context["form"].non_field_errors())
    assert not ManagementToken.objects.filter(name="second").exists()


def test_portal_shows_the_upstream_limit_on_the_form(portal_client, tenant, settings, monkeypatch):
    monkeypatch.setattr(validators, "resolve_host", make_resolver({"api.example.com": [PUBLIC_ADDRESS]}))
    settings.KEYS_MAX_UPSTREAMS_PER_TENANT = 1
    services.upstream_create(tenant=tenant, slug="first", base_url=PUBLIC_URL, actor="test")
    data = {
        "slug": "second",
        "name": "",
        "base_url": "https://api.example.com",
        "auth_type": "none",
        "auth_name": "",
        "auth_value": "",
        "timeout_seconds": "30",
        "is_active": "on",
    }
    answer = portal_client(Role.ADMIN).post(reverse("portal:upstream_create"), data)
    assert answer.status_code == 200
    assert "limit of 1" in " ".join(answer.context["form"].non_field_errors())
    assert not Upstream.objects.filter(slug="second").exists()


@pytest.mark.parametrize("limit", [0, 1])
def test_the_service_refuses_past_the_limit_for_every_caller(tenant, settings, limit):
    settings.KEYS_MAX_KEYS_PER_TENANT = limit
    for index in range(limit):
        services.api_key_create(tenant=tenant, name=f"k{index}", actor="test")
    with pytest.raises(ValidationError, match="limit"):
        services.api_key_create(tenant=tenant, name="over", actor="test")

"""Shared fixtures: rows built through the services, as users make them."""

import pytest
from django.contrib.auth import get_user_model

from keys import services
from keys.models import Role


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user(
        username="dev@tenant.example", email="dev@tenant.example", password="pw"
    )


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_superuser(
        username="staff", email="staff@site.example", password="pw"
    )


@pytest.fixture
def tenant(db):
    tenant, _ = services.tenant_create(slug="acme", owner_email="owner@acme.example", actor="test")
    return tenant


@pytest.fixture
def other_tenant(db):
    tenant, _ = services.tenant_create(slug="globex", owner_email="owner@globex.example", actor="test")
    return tenant


@pytest.fixture
def member(tenant, user):
    services.membership_set(tenant=tenant, user=user, role=Role.DEVELOPER, actor="test")
    return user


@pytest.fixture
def loopback_upstream(db):
    """A global upstream on loopback (staff allowed the private network), for rows that need one."""
    return services.upstream_create(
        tenant=None,
        slug="local",
        base_url="http://127.0.0.1:9",
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
    )


@pytest.fixture
def api_key_and_secret(tenant, loopback_upstream):
    return services.api_key_create(tenant=tenant, name="web app", upstreams=[loopback_upstream], actor="test")


@pytest.fixture
def api_key(api_key_and_secret):
    return api_key_and_secret[0]

"""Fixtures the keys tests share: a stand-in for DNS (there is none here), tenants' own upstreams, clients
of the management API (a management token, portal sessions by role), portal pages' clients by role, and
fresh rate limits."""

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from keys import services
from keys.models import EmailConfirmation, Membership


class SignedInClient(Client):
    """A test client signed in to the portal; `user` is the member it acts as."""

    user: User


PUBLIC_ADDRESS = "8.8.8.8"


def make_resolver(table: dict[str, list[str]]):
    """A resolver for `resolve=`: the addresses each name resolves to; other names do not resolve."""

    def resolve(host: str) -> list[str]:
        if host not in table:
            raise ValidationError(f"The host {host!r} could not be resolved.", code="unresolvable")
        return list(table[host])

    return resolve


@pytest.fixture
def public_dns():
    """Names under example.com resolve to a public address."""
    return make_resolver(
        {name: [PUBLIC_ADDRESS] for name in ("api.example.com", "rpc.example.com", "other.example.com")}
    )


@pytest.fixture
def tenant_upstream(tenant, public_dns):
    return services.upstream_create(
        tenant=tenant,
        slug="acme-api",
        base_url="https://api.example.com/v1",
        actor="test",
        resolve=public_dns,
    )


@pytest.fixture
def other_tenant_upstream(other_tenant, public_dns):
    return services.upstream_create(
        tenant=other_tenant,
        slug="globex-api",
        base_url="https://other.example.com",
        actor="test",
        resolve=public_dns,
    )


# --- The management API ----------------------------------------------------------------------------

CSRF_TOKEN = "a" * 32  # a well-formed CSRF secret; the session clients send it as cookie and header


@pytest.fixture
def management_token(tenant):
    """The clear value of a live management token of `tenant`."""
    return services.management_token_create(tenant=tenant, name="ci", actor="test")[1]


@pytest.fixture
def api(management_token):
    """An API client authenticated with `tenant`'s management token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {management_token}")
    return client


@pytest.fixture
def other_api(other_tenant):
    client = APIClient()
    clear = services.management_token_create(tenant=other_tenant, actor="test")[1]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    return client


@pytest.fixture
def session_client(tenant, django_user_model):
    """A factory: an API client signed in to the portal as a new member of `tenant` with `role`, sending
    the CSRF token (as a browser page would) unless `csrf=False`."""
    made: list[object] = []

    def make(role: str, *, tenant=tenant, csrf: bool = True, user=None):
        if user is None:
            name = f"{role}-{len(made)}@{tenant.slug}.example"
            user = django_user_model.objects.create_user(username=name, email=name, password="pw")
            services.membership_set(tenant=tenant, user=user, role=role, actor="test")
        client = APIClient(enforce_csrf_checks=True)
        client.force_login(user)
        if csrf:
            client.cookies[settings.CSRF_COOKIE_NAME] = CSRF_TOKEN
            client.credentials(HTTP_X_CSRFTOKEN=CSRF_TOKEN)
        made.append(client)
        return client

    return make


# --- The portal's pages ----------------------------------------------------------------------------


@pytest.fixture
def portal_client(tenant, django_user_model):
    """A factory: a test client signed in to the portal as a new member of `tenant` with `role`; the
    member is `client.user`, with a confirmed e-mail unless `confirmed=False`."""

    def make(
        role: str, *, tenant=tenant, enforce_csrf_checks: bool = False, confirmed: bool = True
    ) -> SignedInClient:
        name = f"{role}-{Membership.objects.count()}@{tenant.slug}.example"
        user = django_user_model.objects.create_user(username=name, email=name, password="pw")
        services.membership_set(tenant=tenant, user=user, role=role, actor="test")
        if confirmed:
            EmailConfirmation.objects.create(
                user=user, email=user.email, method=EmailConfirmation.Method.LINK
            )
        client = SignedInClient(enforce_csrf_checks=enforce_csrf_checks)
        client.force_login(user)
        client.user = user
        return client

    return make


# --- Rate limits -----------------------------------------------------------------------------------


def clear_this_runs_cache() -> None:
    """Empty the cache the rate limits count in."""
    # django-redis deletes only this run's prefixed keys; a plain clear() would FLUSHDB all of Redis.
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")
    else:
        cache.clear()


@pytest.fixture
def fresh_rate_limits():
    """No rate-limit counts before or after the test. Not autouse: with Redis it scans the keyspace, so
    only modules that need it ask: `pytestmark = pytest.mark.usefixtures("fresh_rate_limits")`."""
    clear_this_runs_cache()
    yield
    clear_this_runs_cache()

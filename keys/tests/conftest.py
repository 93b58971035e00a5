"""Fixtures the keys tests share: a stand-in for DNS (there is none here) and tenants' own upstreams."""

import pytest
from django.core.exceptions import ValidationError

from keys import services

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

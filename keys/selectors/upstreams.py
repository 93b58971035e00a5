"""Reads of upstreams: a tenant's own and the global ones."""

from django.db.models import Q, QuerySet

from keys.models import (
    Tenant,
    Upstream,
)
from keys.validators import is_slug


def upstream_list(*, tenant: Tenant) -> QuerySet[Upstream]:
    """The tenant's own upstreams and the global ones."""
    return Upstream.objects.filter(Q(tenant=tenant) | Q(tenant__isnull=True))


def upstream_get(*, tenant: Tenant, slug: str) -> Upstream:
    """One upstream the tenant may use; raises Upstream.DoesNotExist otherwise."""
    if not is_slug(slug):
        raise Upstream.DoesNotExist(f"No upstream {slug!r}.")
    return upstream_list(tenant=tenant).get(slug=slug)


def upstream_list_owned(*, tenant: Tenant) -> QuerySet[Upstream]:
    """The upstreams the tenant may edit: its own."""
    return Upstream.objects.filter(tenant=tenant)


def upstream_get_owned(*, tenant: Tenant, slug: str) -> Upstream:
    """One upstream the tenant may change (its own); raises Upstream.DoesNotExist otherwise."""
    if not is_slug(slug):
        raise Upstream.DoesNotExist(f"No upstream {slug!r}.")
    return upstream_list_owned(tenant=tenant).get(slug=slug)

"""Reads of tenants and memberships: who belongs where, with which role."""

from django.contrib.auth.models import User
from django.db.models import QuerySet

from keys.models import (
    Membership,
    Role,
    Tenant,
)
from keys.validators import is_slug


def tenant_list_for_user(*, user: User) -> QuerySet[Tenant]:
    return Tenant.objects.filter(memberships__user=user).distinct()


def membership_get(*, tenant: Tenant, user: User) -> Membership | None:
    return Membership.objects.filter(tenant=tenant, user=user).first()


def membership_for_user(*, user: User, tenant_slug: str | None = None) -> Membership | None:
    """The membership a signed-in user acts through: in the tenant named by `tenant_slug`, or, with no
    slug, their first (oldest) membership. None when they are not a member."""
    memberships = Membership.objects.filter(user=user).select_related("tenant").order_by("created_at", "pk")
    if tenant_slug:
        if not is_slug(tenant_slug):
            return None
        memberships = memberships.filter(tenant__slug=tenant_slug)
    return memberships.first()


# Each role may do what the roles below it may: a viewer reads, a developer manages keys, an admin
# (and the owner) manages upstreams, management tokens and members.
ROLE_RANK: dict[str, int] = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def role_at_least(*, role: str, minimum: str) -> bool:
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[minimum]


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user")


def membership_get_by_id(*, tenant: Tenant, membership_id: int) -> Membership:
    """The tenant's membership; raises Membership.DoesNotExist for another tenant's as for a missing one."""
    return Membership.objects.select_related("user", "tenant").get(tenant=tenant, pk=membership_id)

"""Tenants and their members, under the owner rules: only an owner grants or takes the owner role, and
a tenant always keeps one owner."""

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet

from keys.models import Membership, Role, Tenant
from keys.services.accounts import _user_to_add
from keys.services.audit import Actor, audit_record


@transaction.atomic
def tenant_create(
    *,
    slug: str,
    owner_email: str = "",
    name: str = "",
    actor: Actor = None,
    owner: User | None = None,
) -> tuple[Tenant, Membership]:
    """A new tenant with its owner: `owner` (an account just made by sign-up, in the caller's transaction)
    or the account of `owner_email` (created without a password if new: they set one by reset)."""
    tenant = Tenant(slug=slug, name=name or slug)
    tenant.full_clean()
    tenant.save()
    owner = owner if owner is not None else _user_to_add(email=owner_email, by_operator=True)
    membership = Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
    audit_record(
        action="tenant.created", tenant=tenant, actor=actor, target=tenant, data={"owner": owner.email}
    )
    return tenant, membership


def tenant_check_limit(*, tenant: Tenant, rows: QuerySet, setting: str, what: str) -> None:
    """Refuse one more of `rows` (the tenant's keys, tokens or upstreams) once they number the limit
    `setting` names. The tenant's row is locked first, so two creations at once count one after the
    other (call it inside the creating transaction)."""
    list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk", flat=True))
    limit = getattr(settings, setting)
    if rows.count() >= limit:
        raise ValidationError(
            f"{tenant.name} has reached its limit of {limit} {what}: revoke or delete one first, "
            "or ask the operator to raise the limit.",
            code="limit_reached",
        )


@transaction.atomic
def tenant_set_active(
    *, tenant: Tenant, is_active: bool, actor: Actor = None, ip_address: str | None = None
) -> Tenant:
    tenant.is_active = is_active
    tenant.save(update_fields=["is_active"])
    audit_record(
        action="tenant.activated" if is_active else "tenant.suspended",
        tenant=tenant,
        actor=actor,
        target=tenant,
        ip_address=ip_address,
    )
    return tenant


@transaction.atomic
def membership_set(
    *, tenant: Tenant, user: User, role: str, actor: Actor = None, ip_address: str | None = None
) -> Membership:
    """Add the user to the tenant with `role`, or change the role of an existing member."""
    if role not in Role.values:
        raise ValidationError({"role": [f"{role!r} is not one of {', '.join(Role.values)}."]})
    membership, created = Membership.objects.update_or_create(
        tenant=tenant, user=user, defaults={"role": role}
    )
    audit_record(
        action="member.added" if created else "member.role_changed",
        tenant=tenant,
        actor=actor,
        target=membership,
        ip_address=ip_address,
        data={"user": user.get_username(), "role": role},
    )
    return membership


def _check_owner_rules(*, membership: Membership | None, role: str, actor_role: str) -> None:
    """Only an owner grants or takes away the owner role, and a tenant always keeps one owner."""
    touches_owner = role == Role.OWNER or (membership is not None and membership.role == Role.OWNER)
    if touches_owner and actor_role != Role.OWNER:
        raise ValidationError({"role": ["Only an owner may grant or take away the owner role."]})
    if membership is not None and membership.role == Role.OWNER and role != Role.OWNER:
        other_owners = Membership.objects.filter(tenant=membership.tenant, role=Role.OWNER).exclude(
            pk=membership.pk
        )
        if not other_owners.exists():
            raise ValidationError({"role": ["The tenant must keep at least one owner."]})


@transaction.atomic
def member_add(
    *,
    tenant: Tenant,
    email: str,
    role: str,
    actor_role: str,
    actor: Actor = None,
    ip_address: str | None = None,
) -> Membership:
    """Add a person by e-mail (created without a password if new: they set one by reset)."""
    if role not in Role.values:
        raise ValidationError({"role": [f"{role!r} is not one of {', '.join(Role.values)}."]})
    _check_owner_rules(membership=None, role=role, actor_role=actor_role)
    user = _user_to_add(email=email)
    if Membership.objects.filter(tenant=tenant, user=user).exists():
        raise ValidationError({"email": ["This person is already a member."]})
    return membership_set(tenant=tenant, user=user, role=role, actor=actor, ip_address=ip_address)


@transaction.atomic
def member_change_role(
    *, membership: Membership, role: str, actor_role: str, actor: Actor = None, ip_address: str | None = None
) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": [f"{role!r} is not one of {', '.join(Role.values)}."]})
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _check_owner_rules(membership=membership, role=role, actor_role=actor_role)
    return membership_set(
        tenant=membership.tenant, user=membership.user, role=role, actor=actor, ip_address=ip_address
    )


@transaction.atomic
def member_remove(
    *, membership: Membership, actor_role: str, actor: Actor = None, ip_address: str | None = None
) -> None:
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _check_owner_rules(membership=membership, role="", actor_role=actor_role)
    audit_record(
        action="member.removed",
        tenant=membership.tenant,
        actor=actor,
        target=membership,
        ip_address=ip_address,
        data={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()

"""Reads of accounts and invitations."""

from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone

from keys import crypto
from keys.models import (
    Invitation,
    Tenant,
)


def invitation_list_pending(*, tenant: Tenant, now: datetime | None = None) -> QuerySet[Invitation]:
    """The tenant's invitations not yet accepted, revoked or expired, newest first."""
    return Invitation.objects.filter(
        tenant=tenant, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now or timezone.now()
    ).select_related("invited_by")


def invitation_get(*, tenant: Tenant, invitation_id: int) -> Invitation:
    """The tenant's invitation; raises Invitation.DoesNotExist for another tenant's as for a missing one."""
    return Invitation.objects.get(tenant=tenant, pk=invitation_id)


def invitation_find(*, token: str) -> Invitation | None:
    """The invitation a link's token opens, in any state (the page says which); None for a malformed or
    unknown token. Only for the person holding the link: it is not scoped to a tenant."""
    if not crypto.well_formed(token, crypto.INVITATION_PREFIX):
        return None
    return Invitation.objects.select_related("tenant").filter(token_hash=crypto.hash_secret(token)).first()


def invitation_is_for(*, invitation: Invitation, user: User) -> bool:
    """Whether the signed-in user has the invited e-mail address (case-insensitive)."""
    email = getattr(user, "email", "") or ""
    return bool(email) and email.strip().casefold() == invitation.email.strip().casefold()


def account_exists(*, email: str) -> bool:
    """Whether someone already signs in with this e-mail (as their e-mail or their username)."""
    from django.contrib.auth import get_user_model  # the import block above is shared; kept local here

    users = get_user_model()._default_manager
    return users.filter(email__iexact=email).exists() or users.filter(username__iexact=email).exists()


def email_confirmed(*, user: User) -> bool:
    """Whether the account proved it reads the mail of its current address (keys.models.EmailConfirmation)."""
    if getattr(user, "pk", None) is None:
        return False
    row = (
        user._meta.model._default_manager.filter(pk=user.pk)  # user may be request.user, a lazy object
        .values_list(user.get_email_field_name(), "email_confirmation__email")
        .first()
    )
    if row is None or not row[0] or not row[1]:
        return False
    return row[0].strip().casefold() == row[1].strip().casefold()

"""Invitations: a person invited by e-mail joins a tenant by a link that works once."""

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from keys import crypto, selectors
from keys.models import EmailConfirmation, Invitation, Membership, Role, Tenant
from keys.services.accounts import UserModel, email_confirm
from keys.services.audit import Actor, actor_user, audit_record
from keys.services.tenants import _check_owner_rules, membership_set

INVITER_UNCONFIRMED = "Confirm your own e-mail address before inviting anyone: open the link we mailed you."
INVITATION_REFUSALS = {
    "invalid": "This invitation link is not valid.",
    "accepted": "This invitation has already been used.",
    "revoked": "This invitation has been withdrawn.",
    "expired": "This invitation has expired. Ask for a new one.",
}


def _same_email(a: str, b: str) -> bool:
    return bool(a) and bool(b) and a.strip().casefold() == b.strip().casefold()


def _pending_invitations(*, tenant: Tenant, email: str, now: datetime) -> QuerySet[Invitation]:
    return Invitation.objects.filter(
        tenant=tenant,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=now,
    )


@transaction.atomic
def invitation_create(
    *,
    tenant: Tenant,
    email: str,
    role: str,
    actor_role: str,
    actor: Actor = None,
    ip_address: str | None = None,
) -> tuple[Invitation, str]:
    """Invite a person by e-mail to join with `role`; a pending invitation to the same address is
    replaced (its link stops working). Returns the invitation and its token, once, for the link.
    A person inviting must have confirmed their own e-mail (no relay of mail for unproven accounts)."""
    inviter = actor_user(actor)
    if inviter is not None and not selectors.email_confirmed(user=inviter):
        raise ValidationError(INVITER_UNCONFIRMED, code="unconfirmed")
    if role not in Role.values:
        raise ValidationError({"role": [f"{role!r} is not one of {', '.join(Role.values)}."]})
    _check_owner_rules(membership=None, role=role, actor_role=actor_role)
    email = UserModel.objects.normalize_email((email or "").strip())
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": exc.messages}) from exc
    if Membership.objects.filter(tenant=tenant, user__email__iexact=email).exists():
        raise ValidationError({"email": ["This person is already a member."]})
    now = timezone.now()
    replaced = list(_pending_invitations(tenant=tenant, email=email, now=now).select_for_update())
    for old in replaced:
        # Replacing an owner's invitation takes the owner role back: only an owner may.
        _check_owner_rules(membership=None, role=old.role, actor_role=actor_role)
    Invitation.objects.filter(pk__in=[old.pk for old in replaced]).update(revoked_at=now)
    token = crypto.new_invitation_token()
    invitation = Invitation(
        tenant=tenant,
        email=email,
        role=role,
        token_hash=crypto.hash_secret(token),
        invited_by=inviter,
        created_at=now,
        expires_at=now + timedelta(days=settings.PORTAL_INVITATION_DAYS),
    )
    invitation.full_clean()
    invitation.save()
    audit_record(
        action="invitation.created",
        tenant=tenant,
        actor=actor,
        target=invitation,
        ip_address=ip_address,
        data={
            "email": email,
            "role": role,
            "expires_at": invitation.expires_at.isoformat(),
            "replaced": [old.pk for old in replaced],
        },
    )
    return invitation, token


@transaction.atomic
def invitation_accept(*, token: str, user: User, ip_address: str | None = None) -> Membership:
    """Make `user` (who must have the invited e-mail) a member with the invitation's role. The token
    works once: the first acceptance marks it used (compare-and-set), any later one is refused."""
    invitation = None
    if crypto.well_formed(token, crypto.INVITATION_PREFIX):
        invitation = (
            Invitation.objects.select_related("tenant").filter(token_hash=crypto.hash_secret(token)).first()
        )
    if invitation is None:
        raise ValidationError(INVITATION_REFUSALS["invalid"], code="invalid")
    if invitation.state != "pending":
        raise ValidationError(INVITATION_REFUSALS[invitation.state], code=invitation.state)
    if not _same_email(invitation.email, getattr(user, "email", "")):
        raise ValidationError("This invitation is for another e-mail address.", code="wrong_account")
    if Membership.objects.filter(tenant=invitation.tenant, user=user).exists():
        raise ValidationError(f"You are already a member of {invitation.tenant.name}.", code="already_member")
    now = timezone.now()
    claimed = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
    ).update(accepted_at=now, accepted_by=user)
    if not claimed:  # a concurrent acceptance or revocation won
        raise ValidationError(INVITATION_REFUSALS["accepted"], code="accepted")
    membership = membership_set(tenant=invitation.tenant, user=user, role=invitation.role, actor=user)
    # The link reached the invited address, which is the user's: that proves it.
    email_confirm(user=user, method=EmailConfirmation.Method.INVITATION, ip_address=ip_address)
    audit_record(
        action="invitation.accepted",
        tenant=invitation.tenant,
        actor=user,
        target=invitation,
        ip_address=ip_address,
        data={"email": invitation.email, "role": invitation.role},
    )
    return membership


@transaction.atomic
def invitation_revoke(
    *, invitation: Invitation, actor_role: str, actor: Actor = None, ip_address: str | None = None
) -> Invitation:
    """Withdraw an invitation not yet accepted; its link stops working. Revoking twice keeps the first."""
    _check_owner_rules(membership=None, role=invitation.role, actor_role=actor_role)
    now = timezone.now()
    revoked = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    invitation.refresh_from_db()
    if invitation.accepted_at is not None:
        raise ValidationError("This invitation was already accepted: remove the member instead.")
    if revoked:
        audit_record(
            action="invitation.revoked",
            tenant=invitation.tenant,
            actor=actor,
            target=invitation,
            ip_address=ip_address,
            data={"email": invitation.email, "role": invitation.role},
        )
    return invitation

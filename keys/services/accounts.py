"""Accounts: users by e-mail, sign-up with a password, and proof that a person reads their address."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from keys import crypto, selectors
from keys.models import EmailConfirmation
from keys.services.audit import audit_record

UserModel = get_user_model()  # User is for annotations; this is the model the settings name


def user_get_or_create(*, email: str) -> User:
    """The user with this e-mail (case-insensitive), created without a usable password if new."""
    email = UserModel.objects.normalize_email(email.strip())
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": exc.messages}) from exc
    user = UserModel.objects.filter(email__iexact=email).first()
    if user is None:
        user = UserModel(username=email.lower(), email=email)
        user.set_unusable_password()
        user.full_clean()
        user.save()
    return user


ACCOUNT_EXISTS = "An account with this e-mail already exists. Log in instead."
UNCONFIRMED_ACCOUNT = (
    "This address belongs to an account whose e-mail is not confirmed: "
    "the person must accept an invitation instead."
)


def user_create_with_password(*, email: str, password: str) -> User:
    """A new account that signs in with `password`. A ValidationError on "email" when the address has an
    account, also when a concurrent sign-up made it after the check (the unique username decides)."""
    email = UserModel.objects.normalize_email(email.strip())
    if selectors.account_exists(email=email):
        raise ValidationError({"email": [ACCOUNT_EXISTS]})
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable for its rollback
            return UserModel.objects.create_user(username=email.lower(), email=email, password=password)
    except IntegrityError as exc:
        raise ValidationError({"email": [ACCOUNT_EXISTS]}, code="account_exists") from exc


def _user_to_add(*, email: str, by_operator: bool = False) -> User:
    """The account a membership by e-mail goes to: a new one (made here without a usable password:
    whoever sets it by reset proves the address), or one whose e-mail is confirmed. Never an existing
    account that has not proven its address, whether someone signed up with it or it was made earlier
    without a password (by create_tenant, or another tenant's add) and never claimed: adding it would
    hand a membership to whoever claims it, without the consent of the address's owner. They must
    accept an invitation. `by_operator`: create_tenant may give a new tenant to an unclaimed account
    (the operator made it)."""
    existing = UserModel.objects.filter(
        email__iexact=UserModel.objects.normalize_email(email.strip())
    ).first()
    if existing is None:
        return user_get_or_create(email=email)
    unclaimed = not existing.has_usable_password()
    if not selectors.email_confirmed(user=existing) and not (by_operator and unclaimed):
        raise ValidationError({"email": [UNCONFIRMED_ACCOUNT]}, code="unconfirmed")
    return existing


# --- E-mail confirmation -------------------------------------------------------------------------

CONFIRMATION_SALT = "keys.email-confirmation"
CONFIRMATION_REFUSALS = {
    "invalid": "This confirmation link is not valid.",
    "expired": "This confirmation link has expired. Sign in and ask for a new one.",
    "used": "This address is already confirmed.",
}


def _address_digest(email: str) -> str:
    return crypto.hash_secret(email.strip().casefold())[:20]


def email_confirmation_token(*, user: User) -> str:
    """The signed, expiring token of the link that confirms the user's current address. Nothing is
    stored: it names the account and a digest of the address; once that address is confirmed it is spent."""
    return signing.dumps({"u": user.pk, "e": _address_digest(user.email)}, salt=CONFIRMATION_SALT)


@transaction.atomic
def email_confirm(*, user: User, method: str, ip_address: str | None = None) -> EmailConfirmation | None:
    """Record that the user proved they read the mail of their current address (`method`: how). Nothing
    is written when that address is already confirmed. Returns the record (None for no address)."""
    if not user.email:
        return None
    confirmation = EmailConfirmation.objects.select_for_update().filter(user=user).first()
    if confirmation is not None and _address_digest(confirmation.email) == _address_digest(user.email):
        return confirmation
    confirmation, _ = EmailConfirmation.objects.update_or_create(
        user=user, defaults={"email": user.email, "method": method, "confirmed_at": timezone.now()}
    )
    audit_record(
        action="email.confirmed",
        actor=user,
        target=confirmation,
        ip_address=ip_address,
        data={"email": user.email, "method": method},
    )
    return confirmation


@transaction.atomic
def email_confirm_by_token(*, token: str, ip_address: str | None = None) -> User:
    """Confirm the address a sign-up link was mailed to. Works once, within PORTAL_CONFIRMATION_DAYS, and
    only while the account still has that address; otherwise a ValidationError (code invalid, expired
    or used)."""
    try:
        claim = signing.loads(
            token or "", salt=CONFIRMATION_SALT, max_age=timedelta(days=settings.PORTAL_CONFIRMATION_DAYS)
        )
    except signing.SignatureExpired as exc:
        raise ValidationError(CONFIRMATION_REFUSALS["expired"], code="expired") from exc
    except signing.BadSignature as exc:
        raise ValidationError(CONFIRMATION_REFUSALS["invalid"], code="invalid") from exc
    user_id = claim.get("u") if isinstance(claim, dict) else None
    # The user's row is locked: two clicks at once confirm once.
    user = (
        UserModel.objects.select_for_update().filter(pk=user_id, is_active=True).first() if user_id else None
    )
    if user is None or not user.email or claim.get("e") != _address_digest(user.email):
        raise ValidationError(CONFIRMATION_REFUSALS["invalid"], code="invalid")
    if selectors.email_confirmed(user=user):
        raise ValidationError(CONFIRMATION_REFUSALS["used"], code="used")
    email_confirm(user=user, method=EmailConfirmation.Method.LINK, ip_address=ip_address)
    return user

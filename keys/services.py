"""Writes: every change a user, staff member, command or job makes to the domain goes through here.

Each service validates (full_clean, with field errors), writes, and records an audit event. The
proxy's cached policies are dropped by keys/signals.py after commit, whatever made the change.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from keys import crypto, origins, selectors, validators
from keys.models import (
    AccessToken,
    ApiKey,
    AuditEvent,
    AuthType,
    EmailConfirmation,
    Invitation,
    ManagementToken,
    Membership,
    Role,
    Tenant,
    Upstream,
)

User = get_user_model()
# Who made a change: a user, or a label such as "create_tenant" for commands and jobs.
Actor = AbstractBaseUser | str | None

UPSTREAM_FIELDS = ("name", "base_url", "auth_type", "auth_name", "timeout_seconds", "is_active")
KEY_FIELDS = (
    "name",
    "secret_required",
    "allowed_origins",
    "allowed_ips",
    "allowed_user_agents",
    "allowed_http_methods",
    "allowed_rpc_methods",
    "rate_limit",
    "daily_quota",
    "expires_at",
)


def audit_record(
    *,
    action: str,
    tenant: Tenant | None = None,
    actor: Actor = None,
    actor_label: str = "",
    target: object | None = None,
    data: dict | None = None,
    ip_address: str | None = None,
) -> AuditEvent:
    """Append an event to the audit trail. `data` must never hold a secret."""
    if target is not None:
        target_type = type(target).__name__
        target_id = str(getattr(target, "key_id", None) or getattr(target, "slug", None) or target.pk)
    else:
        target_type, target_id = "", ""
    if isinstance(actor, str):
        actor_label, actor = actor_label or actor, None
    elif actor is not None and getattr(actor, "is_authenticated", False):
        actor_label = actor_label or actor.get_username()
    else:
        actor = None
    return AuditEvent.objects.create(
        tenant=tenant,
        actor=actor,
        actor_label=actor_label or "system",
        action=action,
        target_type=target_type,
        target_id=target_id,
        data=data or {},
        ip_address=ip_address,
    )


# --- Tenants and members -----------------------------------------------------------------------


def user_get_or_create(*, email: str) -> AbstractBaseUser:
    """The user with this e-mail (case-insensitive), created without a usable password if new."""
    email = User.objects.normalize_email(email.strip())
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": exc.messages}) from exc
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        user = User(username=email.lower(), email=email)
        user.set_unusable_password()
        user.full_clean()
        user.save()
    return user


ACCOUNT_EXISTS = "An account with this e-mail already exists. Log in instead."
UNCONFIRMED_ACCOUNT = (
    "This address belongs to an account whose e-mail is not confirmed: "
    "the person must accept an invitation instead."
)


def user_create_with_password(*, email: str, password: str) -> AbstractBaseUser:
    """A new account that signs in with `password`. A ValidationError on "email" when the address has an
    account, also when a concurrent sign-up made it after the check (the unique username decides)."""
    email = User.objects.normalize_email(email.strip())
    if selectors.account_exists(email=email):
        raise ValidationError({"email": [ACCOUNT_EXISTS]})
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable for its rollback
            return User.objects.create_user(username=email.lower(), email=email, password=password)
    except IntegrityError as exc:
        raise ValidationError({"email": [ACCOUNT_EXISTS]}, code="account_exists") from exc


def _user_to_add(*, email: str) -> AbstractBaseUser:
    """The account a membership by e-mail goes to: a new or unclaimed one (no usable password: whoever
    sets it by reset proves the address), or one whose e-mail is confirmed. Never an account someone
    signed up for with an address they have not proven: that would hand them the membership."""
    user = user_get_or_create(email=email)
    if user.has_usable_password() and not selectors.email_confirmed(user=user):
        raise ValidationError({"email": [UNCONFIRMED_ACCOUNT]}, code="unconfirmed")
    return user


@transaction.atomic
def tenant_create(
    *,
    slug: str,
    owner_email: str = "",
    name: str = "",
    actor: Actor = None,
    owner: AbstractBaseUser | None = None,
) -> tuple[Tenant, Membership]:
    """A new tenant with its owner: `owner` (an account just made by sign-up, in the caller's transaction)
    or the account of `owner_email` (created without a password if new: they set one by reset)."""
    tenant = Tenant(slug=slug, name=name or slug)
    tenant.full_clean()
    tenant.save()
    owner = owner if owner is not None else _user_to_add(email=owner_email)
    membership = Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
    audit_record(
        action="tenant.created", tenant=tenant, actor=actor, target=tenant, data={"owner": owner.email}
    )
    return tenant, membership


@transaction.atomic
def tenant_set_active(*, tenant: Tenant, is_active: bool, actor: Actor = None) -> Tenant:
    tenant.is_active = is_active
    tenant.save(update_fields=["is_active"])
    audit_record(
        action="tenant.activated" if is_active else "tenant.suspended",
        tenant=tenant,
        actor=actor,
        target=tenant,
    )
    return tenant


@transaction.atomic
def membership_set(*, tenant: Tenant, user: AbstractBaseUser, role: str, actor: Actor = None) -> Membership:
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
def member_add(*, tenant: Tenant, email: str, role: str, actor_role: str, actor: Actor = None) -> Membership:
    """Add a person by e-mail (created without a password if new: they set one by reset)."""
    if role not in Role.values:
        raise ValidationError({"role": [f"{role!r} is not one of {', '.join(Role.values)}."]})
    _check_owner_rules(membership=None, role=role, actor_role=actor_role)
    user = _user_to_add(email=email)
    if Membership.objects.filter(tenant=tenant, user=user).exists():
        raise ValidationError({"email": ["This person is already a member."]})
    return membership_set(tenant=tenant, user=user, role=role, actor=actor)


@transaction.atomic
def member_change_role(
    *, membership: Membership, role: str, actor_role: str, actor: Actor = None
) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": [f"{role!r} is not one of {', '.join(Role.values)}."]})
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _check_owner_rules(membership=membership, role=role, actor_role=actor_role)
    return membership_set(tenant=membership.tenant, user=membership.user, role=role, actor=actor)


@transaction.atomic
def member_remove(*, membership: Membership, actor_role: str, actor: Actor = None) -> None:
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _check_owner_rules(membership=membership, role="", actor_role=actor_role)
    audit_record(
        action="member.removed",
        tenant=membership.tenant,
        actor=actor,
        target=membership,
        data={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()


# --- Upstreams -----------------------------------------------------------------------------------


def _upstream_check_auth(upstream: Upstream, auth_value: str | None) -> None:
    has_value = bool(auth_value) if auth_value is not None else upstream.has_credential
    errors: dict[str, list[str]] = {}
    if upstream.auth_type == AuthType.NONE:
        return
    if not has_value:
        errors["auth_value"] = [f"Auth type {upstream.auth_type!r} needs a value."]
    if upstream.auth_type in (AuthType.HEADER, AuthType.QUERY):
        if not upstream.auth_name or not validators.HEADER_OR_PARAM_NAME.match(upstream.auth_name):
            errors["auth_name"] = [
                f"Auth type {upstream.auth_type!r} needs a name (letters, digits, - and _)."
            ]
        elif (
            upstream.auth_type == AuthType.HEADER
            and upstream.auth_name.lower() in validators.RESERVED_HEADERS
        ):
            errors["auth_name"] = [f"{upstream.auth_name!r} is a header the proxy manages itself."]
    if errors:
        raise ValidationError(errors)


def _destination(url: str) -> tuple[str, str, int | None]:
    """Where a URL connects: scheme, host and port (the path does not change the machine)."""
    parts = urlsplit(str(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def upstream_validate(
    *,
    upstream: Upstream,
    auth_value: str | None,
    actor_is_staff: bool,
    resolve: validators.Resolver = validators.resolve_host,
) -> None:
    """Raise ValidationError (by field) unless the upstream may be saved: URL, SSRF, auth."""
    if upstream.allow_private_network and not actor_is_staff:
        raise ValidationError(
            {"allow_private_network": ["Only staff may allow an upstream on a private network."]}
        )
    upstream.full_clean()
    upstream.base_url = validators.clean_upstream_url(upstream.base_url)
    _upstream_check_auth(upstream, auth_value)
    if not upstream.allow_private_network:
        try:
            validators.check_public_destination(upstream.base_url, resolve=resolve)
        except ValidationError as exc:
            raise ValidationError({"base_url": exc.messages}) from exc


def _upstream_set_credential(upstream: Upstream, auth_value: str | None) -> None:
    if upstream.auth_type == AuthType.NONE:
        upstream.auth_name = ""
        upstream.auth_value_encrypted = ""
    elif auth_value is not None:
        upstream.auth_value_encrypted = crypto.encrypt(auth_value)


@transaction.atomic
def upstream_create(
    *,
    tenant: Tenant | None,
    slug: str,
    base_url: str,
    name: str = "",
    auth_type: str = AuthType.NONE,
    auth_name: str = "",
    auth_value: str = "",
    timeout_seconds: int = 30,
    is_active: bool = True,
    allow_private_network: bool = False,
    actor: Actor = None,
    actor_is_staff: bool = False,
    ip_address: str | None = None,
    resolve: validators.Resolver = validators.resolve_host,
) -> Upstream:
    """A tenant's own upstream, or a global one (tenant None) made by staff. Refuses private addresses
    unless staff allowed them."""
    if tenant is None and not actor_is_staff:
        raise ValidationError({"tenant": ["Only staff may create a global upstream."]})
    upstream = Upstream(
        tenant=tenant,
        slug=slug,
        name=name or slug,
        base_url=base_url,
        auth_type=auth_type,
        auth_name=auth_name,
        timeout_seconds=timeout_seconds,
        is_active=is_active,
        allow_private_network=allow_private_network,
    )
    upstream_validate(
        upstream=upstream, auth_value=auth_value, actor_is_staff=actor_is_staff, resolve=resolve
    )
    _upstream_set_credential(upstream, auth_value)
    upstream.save()
    audit_record(
        action="upstream.created",
        tenant=tenant,
        actor=actor,
        target=upstream,
        ip_address=ip_address,
        data={"base_url": upstream.base_url, "auth_type": upstream.auth_type},
    )
    return upstream


@transaction.atomic
def upstream_update(
    *,
    upstream: Upstream,
    actor: Actor = None,
    actor_is_staff: bool = False,
    auth_value: str | None = None,
    allow_private_network: bool | None = None,
    ip_address: str | None = None,
    resolve: validators.Resolver = validators.resolve_host,
    **fields: object,
) -> Upstream:
    """Change an upstream's fields; `auth_value` None keeps the stored credential."""
    unknown = set(fields) - set(UPSTREAM_FIELDS)
    if unknown:
        raise ValidationError({name: ["This field cannot be changed."] for name in unknown})
    old_destination = _destination(upstream.base_url)
    for name, value in fields.items():
        setattr(upstream, name, value)
    if (
        upstream.allow_private_network
        and not actor_is_staff
        and _destination(upstream.base_url) != old_destination
    ):
        # Staff allowed that one private host, not any: a tenant who moves the upstream elsewhere
        # loses the permission, so the new destination must be public like any other.
        upstream.allow_private_network = False
    if allow_private_network is not None and allow_private_network != upstream.allow_private_network:
        if not actor_is_staff:
            raise ValidationError(
                {"allow_private_network": ["Only staff may allow an upstream on a private network."]}
            )
        upstream.allow_private_network = allow_private_network
    # A tenant editing an upstream staff put on a private network keeps that permission.
    upstream_validate(upstream=upstream, auth_value=auth_value, actor_is_staff=True, resolve=resolve)
    _upstream_set_credential(upstream, auth_value)
    upstream.save()
    changed = sorted(fields) + (["auth_value"] if auth_value is not None else [])
    audit_record(
        action="upstream.updated",
        tenant=upstream.tenant,
        actor=actor,
        target=upstream,
        ip_address=ip_address,
        data={"fields": changed},
    )
    return upstream


@transaction.atomic
def upstream_delete(*, upstream: Upstream, actor: Actor = None, ip_address: str | None = None) -> None:
    audit_record(
        action="upstream.deleted", tenant=upstream.tenant, actor=actor, target=upstream, ip_address=ip_address
    )
    upstream.delete()


# --- API keys ------------------------------------------------------------------------------------


def _key_check_upstreams(tenant: Tenant, upstreams: Iterable[Upstream]) -> list[Upstream]:
    upstreams = list(upstreams)
    foreign = [u.slug for u in upstreams if u.tenant_id is not None and u.tenant_id != tenant.pk]
    if foreign:
        raise ValidationError({"upstreams": [f"Unknown upstream: {slug}." for slug in foreign]})
    return upstreams


@transaction.atomic
def api_key_create(
    *,
    tenant: Tenant,
    name: str,
    actor: Actor = None,
    upstreams: Iterable[Upstream] = (),
    ip_address: str | None = None,
    **fields: object,
) -> tuple[ApiKey, str]:
    """A new key for the tenant. Returns the key and its secret, which is never shown again."""
    unknown = set(fields) - set(KEY_FIELDS)
    if unknown:
        raise ValidationError({field: ["This field cannot be set."] for field in unknown})
    secret = crypto.new_secret()
    api_key = ApiKey(
        tenant=tenant,
        key_id=crypto.new_key_id(),
        name=name,
        secret_hash=crypto.hash_secret(secret),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        **fields,
    )
    api_key.full_clean()
    upstreams = _key_check_upstreams(tenant, upstreams)
    api_key.save()
    api_key.upstreams.set(upstreams)
    audit_record(
        action="api_key.created",
        tenant=tenant,
        actor=actor,
        target=api_key,
        ip_address=ip_address,
        data={"name": api_key.name, "upstreams": [u.slug for u in upstreams]},
    )
    return api_key, secret


@transaction.atomic
def api_key_update(
    *,
    api_key: ApiKey,
    actor: Actor = None,
    upstreams: Iterable[Upstream] | None = None,
    ip_address: str | None = None,
    **fields: object,
) -> ApiKey:
    """Change a key's name, allowlists, limits or expiry. Other fields are refused, never applied."""
    unknown = set(fields) - set(KEY_FIELDS)
    if unknown:
        raise ValidationError({field: ["This field cannot be changed."] for field in unknown})
    for name, value in fields.items():
        setattr(api_key, name, value)
    api_key.full_clean()
    api_key.save()
    changed = sorted(fields)
    if upstreams is not None:
        api_key.upstreams.set(_key_check_upstreams(api_key.tenant, upstreams))
        changed.append("upstreams")
    audit_record(
        action="api_key.updated",
        tenant=api_key.tenant,
        actor=actor,
        target=api_key,
        ip_address=ip_address,
        data={"fields": changed},
    )
    return api_key


@transaction.atomic
def api_key_rotate(
    *,
    api_key: ApiKey,
    actor: Actor = None,
    grace: timedelta = timedelta(hours=24),
    ip_address: str | None = None,
) -> str:
    """Give the key a new secret; the old one keeps working until now + grace. Returns it, once."""
    if grace < timedelta(0):
        raise ValidationError({"grace_seconds": ["The grace period cannot be negative."]})
    now = timezone.now()
    secret = crypto.new_secret()
    if grace > timedelta(0):
        api_key.previous_secret_hash = api_key.secret_hash
        api_key.previous_secret_expires_at = now + grace
    else:
        api_key.previous_secret_hash = ""
        api_key.previous_secret_expires_at = None
    api_key.secret_hash = crypto.hash_secret(secret)
    api_key.save(
        update_fields=["secret_hash", "previous_secret_hash", "previous_secret_expires_at", "updated_at"]
    )
    audit_record(
        action="api_key.rotated",
        tenant=api_key.tenant,
        actor=actor,
        target=api_key,
        ip_address=ip_address,
        data={"grace_seconds": int(grace.total_seconds())},
    )
    return secret


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: Actor = None, ip_address: str | None = None) -> ApiKey:
    """Revoke the key (and so every token issued for it). Revoking twice keeps the first time."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
        audit_record(
            action="api_key.revoked",
            tenant=api_key.tenant,
            actor=actor,
            target=api_key,
            ip_address=ip_address,
        )
    return api_key


# --- Access and management tokens ----------------------------------------------------------------


@transaction.atomic
def access_token_issue(
    *,
    api_key: ApiKey,
    ttl: int | None = None,
    allowed_origins: list[str] | None = None,
    now: datetime | None = None,
) -> tuple[AccessToken, str]:
    """A short-lived token for the key; its origins may narrow the key's allowlist, never widen it.
    Returns the token row and its clear value, shown once."""
    now = now or timezone.now()
    if ttl is None:
        ttl = settings.KEYS_TOKEN_DEFAULT_TTL
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= settings.KEYS_TOKEN_MAX_TTL:
        raise ValidationError(
            {"ttl": [f"ttl must be a whole number of seconds from 1 to {settings.KEYS_TOKEN_MAX_TTL}."]}
        )
    try:
        token_origins = validators.clean_origins(allowed_origins or [])
    except ValidationError as exc:
        raise ValidationError({"allowed_origins": exc.messages}) from exc
    widening = origins.patterns_within(
        [origins.parse_pattern(entry) for entry in token_origins],
        [origins.parse_pattern(entry) for entry in api_key.allowed_origins],
    )
    if widening:
        raise ValidationError(
            {"allowed_origins": [f"{entry} is not within the key's allowed origins." for entry in widening]}
        )
    clear = crypto.new_access_token()
    token = AccessToken.objects.create(
        api_key=api_key,
        token_hash=crypto.hash_secret(clear),
        allowed_origins=token_origins,
        expires_at=now + timedelta(seconds=ttl),
    )
    return token, clear


@transaction.atomic
def access_token_revoke(*, token: AccessToken, actor: Actor = None) -> AccessToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        if actor is not None:
            audit_record(
                action="access_token.revoked", tenant=token.api_key.tenant, actor=actor, target=token
            )
    return token


@transaction.atomic
def management_token_create(
    *, tenant: Tenant, name: str = "default", actor: Actor = None, ip_address: str | None = None
) -> tuple[ManagementToken, str]:
    """A token for the management API, scoped to one tenant. Returns the row and its clear value, once."""
    clear = crypto.new_management_token()
    token = ManagementToken(
        tenant=tenant,
        name=name,
        token_hash=crypto.hash_secret(clear),
        hint=clear[-4:],
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    token.full_clean()
    token.save()
    audit_record(
        action="management_token.created",
        tenant=tenant,
        actor=actor,
        target=token,
        ip_address=ip_address,
        data={"name": name},
    )
    return token, clear


# A management token records its last use at most this often: a write per API call would turn every
# read into a write.
MANAGEMENT_TOKEN_USE_RESOLUTION = timedelta(seconds=60)


def management_token_mark_used(*, token: ManagementToken, now: datetime | None = None) -> None:
    """Set last_used_at, unless it was set less than a minute ago (then nothing is written)."""
    now = now or timezone.now()
    stale = now - MANAGEMENT_TOKEN_USE_RESOLUTION
    if token.last_used_at is not None and token.last_used_at > stale:
        return
    ManagementToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale)
    ).update(last_used_at=now)
    token.last_used_at = now


@transaction.atomic
def management_token_revoke(
    *, token: ManagementToken, actor: Actor = None, ip_address: str | None = None
) -> ManagementToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            action="management_token.revoked",
            tenant=token.tenant,
            actor=actor,
            target=token,
            ip_address=ip_address,
        )
    return token


# --- Invitations ---------------------------------------------------------------------------------

INVITER_UNCONFIRMED = "Confirm your own e-mail address before inviting anyone: open the link we mailed you."
INVITATION_REFUSALS = {
    "invalid": "This invitation link is not valid.",
    "accepted": "This invitation has already been used.",
    "revoked": "This invitation has been withdrawn.",
    "expired": "This invitation has expired. Ask for a new one.",
}


def _same_email(a: str, b: str) -> bool:
    return bool(a) and bool(b) and a.strip().casefold() == b.strip().casefold()


def _pending_invitations(*, tenant: Tenant, email: str, now: datetime):
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
    if getattr(actor, "is_authenticated", False) and not selectors.email_confirmed(user=actor):
        raise ValidationError(INVITER_UNCONFIRMED, code="unconfirmed")
    if role not in Role.values:
        raise ValidationError({"role": [f"{role!r} is not one of {', '.join(Role.values)}."]})
    _check_owner_rules(membership=None, role=role, actor_role=actor_role)
    email = User.objects.normalize_email((email or "").strip())
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
        invited_by=actor if getattr(actor, "is_authenticated", False) else None,
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
def invitation_accept(*, token: str, user: AbstractBaseUser, ip_address: str | None = None) -> Membership:
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


# --- E-mail confirmation -------------------------------------------------------------------------

CONFIRMATION_SALT = "keys.email-confirmation"
CONFIRMATION_REFUSALS = {
    "invalid": "This confirmation link is not valid.",
    "expired": "This confirmation link has expired. Sign in and ask for a new one.",
    "used": "This address is already confirmed.",
}


def _address_digest(email: str) -> str:
    return crypto.hash_secret(email.strip().casefold())[:20]


def email_confirmation_token(*, user: AbstractBaseUser) -> str:
    """The signed, expiring token of the link that confirms the user's current address. Nothing is
    stored: it names the account and a digest of the address; once that address is confirmed it is spent."""
    return signing.dumps({"u": user.pk, "e": _address_digest(user.email)}, salt=CONFIRMATION_SALT)


@transaction.atomic
def email_confirm(
    *, user: AbstractBaseUser, method: str, ip_address: str | None = None
) -> EmailConfirmation | None:
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
def email_confirm_by_token(*, token: str, ip_address: str | None = None) -> AbstractBaseUser:
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
    user = User.objects.select_for_update().filter(pk=user_id, is_active=True).first() if user_id else None
    if user is None or not user.email or claim.get("e") != _address_digest(user.email):
        raise ValidationError(CONFIRMATION_REFUSALS["invalid"], code="invalid")
    if selectors.email_confirmed(user=user):
        raise ValidationError(CONFIRMATION_REFUSALS["used"], code="used")
    email_confirm(user=user, method=EmailConfirmation.Method.LINK, ip_address=ip_address)
    return user

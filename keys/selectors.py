"""Reads. Every selector a tenant can reach takes `tenant=` and never returns another tenant's rows."""

from datetime import UTC, datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from keys import crypto
from keys.models import (
    AccessToken,
    ApiKey,
    AuditEvent,
    Invitation,
    ManagementToken,
    Membership,
    Role,
    Tenant,
    Upstream,
    UsageRecord,
    slug_validator,
)


def tenant_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Tenant]:
    return Tenant.objects.filter(memberships__user=user).distinct()


def membership_get(*, tenant: Tenant, user: AbstractBaseUser) -> Membership | None:
    return Membership.objects.filter(tenant=tenant, user=user).first()


def membership_for_user(*, user: AbstractBaseUser, tenant_slug: str | None = None) -> Membership | None:
    """The membership a signed-in user acts through: in the tenant named by `tenant_slug`, or, with no
    slug, their first (oldest) membership. None when they are not a member."""
    memberships = Membership.objects.filter(user=user).select_related("tenant").order_by("created_at", "pk")
    if tenant_slug:
        if not _is_slug(tenant_slug):
            return None
        memberships = memberships.filter(tenant__slug=tenant_slug)
    return memberships.first()


# Each role may do what the roles below it may: a viewer reads, a developer manages keys, an admin
# (and the owner) manages upstreams, management tokens and members.
ROLE_RANK = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def role_at_least(*, role: str, minimum: str) -> bool:
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[minimum]


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user")


def upstream_list(*, tenant: Tenant) -> QuerySet[Upstream]:
    """The tenant's own upstreams and the global ones."""
    return Upstream.objects.filter(Q(tenant=tenant) | Q(tenant__isnull=True))


def _is_slug(value: object) -> bool:
    """Whether `value` could be a tenant's or an upstream's slug: text of another shape (a NUL, which
    PostgreSQL refuses in a query) is known not to match before any lookup."""
    return isinstance(value, str) and slug_validator.regex.fullmatch(value) is not None


def upstream_get(*, tenant: Tenant, slug: str) -> Upstream:
    """One upstream the tenant may use; raises Upstream.DoesNotExist otherwise."""
    if not _is_slug(slug):
        raise Upstream.DoesNotExist(f"No upstream {slug!r}.")
    return upstream_list(tenant=tenant).get(slug=slug)


def upstream_list_owned(*, tenant: Tenant) -> QuerySet[Upstream]:
    """The upstreams the tenant may edit: its own."""
    return Upstream.objects.filter(tenant=tenant)


def upstream_get_owned(*, tenant: Tenant, slug: str) -> Upstream:
    """One upstream the tenant may change (its own); raises Upstream.DoesNotExist otherwise."""
    if not _is_slug(slug):
        raise Upstream.DoesNotExist(f"No upstream {slug!r}.")
    return upstream_list_owned(tenant=tenant).get(slug=slug)


def api_key_list(*, tenant: Tenant, state: str | None = None, name: str | None = None) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.filter(tenant=tenant).prefetch_related("upstreams")
    now = timezone.now()
    if name:
        keys = keys.filter(name__icontains=name)
    if state == "revoked":
        keys = keys.filter(revoked_at__isnull=False)
    elif state == "expired":
        keys = keys.filter(revoked_at__isnull=True, expires_at__lte=now)
    elif state == "active":
        keys = keys.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    return keys


def api_key_get(*, tenant: Tenant, key_id: str) -> ApiKey:
    """The tenant's key; raises ApiKey.DoesNotExist for another tenant's key as for a missing one (and,
    without a query, for a malformed id)."""
    if not crypto.well_formed(key_id, crypto.KEY_ID_PREFIX):
        raise ApiKey.DoesNotExist(f"No key {key_id!r}.")
    return ApiKey.objects.get(tenant=tenant, key_id=key_id)


def api_key_find(*, key_id: str) -> ApiKey | None:
    """Any tenant's key by its public id, for checking presented credentials (the token exchange);
    None for a malformed or unknown id. Never use it to show a key to a tenant: use api_key_get."""
    if not crypto.well_formed(key_id, crypto.KEY_ID_PREFIX):
        return None
    return ApiKey.objects.select_related("tenant").filter(key_id=key_id).first()


def api_key_secret_valid(*, api_key: ApiKey, secret: str, now: datetime | None = None) -> bool:
    """The current secret, or the previous one while its rotation grace lasts."""
    if not crypto.well_formed(secret, crypto.SECRET_PREFIX):
        return False
    if crypto.secret_matches(secret, api_key.secret_hash):
        return True
    now = now or timezone.now()
    return (
        api_key.previous_secret_expires_at is not None
        and now < api_key.previous_secret_expires_at
        and crypto.secret_matches(secret, api_key.previous_secret_hash)
    )


def api_key_authenticate(
    *, key_id: str, secret: str, now: datetime | None = None
) -> tuple[ApiKey | None, str | None]:
    """(key, None) when the key may be used with this secret; else (key or None, the proxy's error code),
    checked in the proxy's order: invalid_key, tenant_suspended, key_revoked, key_expired, invalid_secret."""
    api_key = api_key_find(key_id=key_id)
    if api_key is None:
        return None, "invalid_key"
    if not api_key.tenant.is_active:
        return api_key, "tenant_suspended"
    now = now or timezone.now()
    state = api_key.state_at(now)
    if state != "active":
        return api_key, f"key_{state}"
    if not api_key_secret_valid(api_key=api_key, secret=secret, now=now):
        return api_key, "invalid_secret"
    return api_key, None


def access_token_verify(*, token: str, now: datetime | None = None) -> tuple[AccessToken | None, str | None]:
    """(token, None) for a usable access token; (None or token, error code) otherwise. Expiry and
    revocation are checked here, at use, whether or not the purge job has run."""
    if not crypto.well_formed(token, crypto.ACCESS_TOKEN_PREFIX):
        return None, "invalid_token"
    row = AccessToken.objects.select_related("api_key").filter(token_hash=crypto.hash_secret(token)).first()
    if row is None or row.revoked_at is not None:
        return row, "invalid_token"
    if row.expires_at <= (now or timezone.now()):
        return row, "token_expired"
    return row, None


def access_token_list(*, tenant: Tenant) -> QuerySet[AccessToken]:
    return AccessToken.objects.filter(api_key__tenant=tenant).select_related("api_key")


def management_token_authenticate(*, token: str) -> ManagementToken | None:
    """The live management token with this clear value, or None."""
    if not crypto.well_formed(token, crypto.MANAGEMENT_TOKEN_PREFIX):
        return None
    return (
        ManagementToken.objects.select_related("tenant")
        .filter(token_hash=crypto.hash_secret(token), revoked_at__isnull=True, tenant__is_active=True)
        .first()
    )


def management_token_list(*, tenant: Tenant) -> QuerySet[ManagementToken]:
    return ManagementToken.objects.filter(tenant=tenant)


def management_token_get(*, tenant: Tenant, token_id: int) -> ManagementToken:
    """One of the tenant's management tokens; raises ManagementToken.DoesNotExist otherwise."""
    return management_token_list(tenant=tenant).get(pk=token_id)


def audit_event_list(*, tenant: Tenant) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(tenant=tenant).select_related("actor")


def audit_action_list(*, tenant: Tenant) -> list[str]:
    """The actions the tenant's audit log holds, sorted (for the log's filter)."""
    actions = AuditEvent.objects.filter(tenant=tenant).order_by("action").values_list("action", flat=True)
    return list(actions.distinct())


def membership_get_by_id(*, tenant: Tenant, membership_id: int) -> Membership:
    """The tenant's membership; raises Membership.DoesNotExist for another tenant's as for a missing one."""
    return Membership.objects.select_related("user", "tenant").get(tenant=tenant, pk=membership_id)


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


def invitation_is_for(*, invitation: Invitation, user: AbstractBaseUser) -> bool:
    """Whether the signed-in user has the invited e-mail address (case-insensitive)."""
    email = getattr(user, "email", "") or ""
    return bool(email) and email.strip().casefold() == invitation.email.strip().casefold()


def account_exists(*, email: str) -> bool:
    """Whether someone already signs in with this e-mail (as their e-mail or their username)."""
    from django.contrib.auth import get_user_model  # the import block above is shared; kept local here

    users = get_user_model()._default_manager
    return users.filter(email__iexact=email).exists() or users.filter(username__iexact=email).exists()


def email_confirmed(*, user: AbstractBaseUser) -> bool:
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


def usage_list(
    *, tenant: Tenant, api_key: ApiKey | None = None, since: datetime | None = None
) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.filter(tenant=tenant)
    if api_key is not None:
        records = records.filter(api_key=api_key)
    if since is not None:
        records = records.filter(hour__gte=since)
    return records


USAGE_PERIODS = {"hour": TruncHour, "day": TruncDay}


def usage_summary(
    *, tenant: Tenant, api_key: ApiKey, granularity: str, since: datetime, until: datetime
) -> list[dict]:
    """The key's requests in [since, until), per hour or day (UTC), by outcome and rejection code:
    [{"period", "outcome", "code", "count"}], oldest first. Rows exist once the roll-up job wrote them."""
    trunc = USAGE_PERIODS[granularity]
    rows = (
        usage_list(tenant=tenant, api_key=api_key, since=since)
        .filter(hour__lt=until)
        .annotate(period=trunc("hour", tzinfo=UTC))
        .values("period", "outcome", "code")
        .annotate(count=Sum("count"))
        .order_by("period", "outcome", "code")
    )
    return [
        {"period": row["period"], "outcome": row["outcome"], "code": row["code"], "count": row["count"]}
        for row in rows
    ]


def usage_rejections(
    *, tenant: Tenant, since: datetime, api_key: ApiKey | None = None, limit: int = 100
) -> list[dict]:
    """Rejected requests since `since` by reason: [{"key_id", "key_name", "code", "detail", "count"}],
    most frequent first. `detail` says what was refused (the origin, address, method…), "" if unknown."""
    rows = (
        usage_list(tenant=tenant, api_key=api_key, since=since)
        .filter(outcome="rejected")
        .values("api_key__key_id", "api_key__name", "code", "detail")
        .annotate(count=Sum("count"))
        .order_by("-count", "code", "detail")[:limit]
    )
    return [
        {
            "key_id": row["api_key__key_id"],
            "key_name": row["api_key__name"],
            "code": row["code"],
            "detail": row["detail"],
            "count": row["count"],
        }
        for row in rows
    ]


# --- The portal's usage page and export -------------------------------------------------------------


def usage_by_period(
    *, tenant: Tenant, granularity: str, since: datetime, until: datetime, api_key: ApiKey | None = None
) -> list[dict]:
    """The tenant's requests (or one key's) in [since, until), per hour or day (UTC), by outcome:
    [{"period", "outcome", "count"}], oldest first. A period without requests has no row."""
    trunc = USAGE_PERIODS[granularity]
    rows = (
        usage_list(tenant=tenant, api_key=api_key, since=since)
        .filter(hour__lt=until)
        .annotate(period=trunc("hour", tzinfo=UTC))
        .values("period", "outcome")
        .annotate(count=Sum("count"))
        .order_by("period", "outcome")
    )
    return [{"period": row["period"], "outcome": row["outcome"], "count": row["count"]} for row in rows]


def usage_export(
    *, tenant: Tenant, granularity: str, since: datetime, until: datetime, api_key: ApiKey | None = None
) -> QuerySet[UsageRecord]:
    """The tenant's requests (or one key's) in [since, until) as rows of {"period", "api_key__key_id",
    "api_key__name", "outcome", "code", "detail", "count"}: one per period (UTC hour or day), key,
    outcome, code and detail, oldest first. A query, so a long export can be read in chunks."""
    trunc = USAGE_PERIODS[granularity]
    return (
        usage_list(tenant=tenant, api_key=api_key, since=since)
        .filter(hour__lt=until)
        .annotate(period=trunc("hour", tzinfo=UTC))
        .values("period", "api_key__key_id", "api_key__name", "outcome", "code", "detail")
        .annotate(count=Sum("count"))
        .order_by("period", "api_key__key_id", "outcome", "code", "detail")
    )


def requests_today_by_key(*, tenant: Tenant, now: datetime | None = None) -> dict[str, int]:
    """{key_id: requests since 00:00 UTC today, all outcomes} for the tenant's keys that had any."""
    midnight = (now or timezone.now()).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = (
        usage_list(tenant=tenant, since=midnight)
        .values("api_key__key_id")
        .annotate(total=Sum("count"))
        .order_by("api_key__key_id")
    )
    return {row["api_key__key_id"]: row["total"] for row in rows}

"""Reads. Every selector a tenant can reach takes `tenant=` and never returns another tenant's rows."""

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.utils import timezone

from keys import crypto
from keys.models import (
    AccessToken,
    ApiKey,
    AuditEvent,
    ManagementToken,
    Membership,
    Tenant,
    Upstream,
    UsageRecord,
)


def tenant_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Tenant]:
    return Tenant.objects.filter(memberships__user=user).distinct()


def membership_get(*, tenant: Tenant, user: AbstractBaseUser) -> Membership | None:
    return Membership.objects.filter(tenant=tenant, user=user).first()


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user")


def upstream_list(*, tenant: Tenant) -> QuerySet[Upstream]:
    """The tenant's own upstreams and the global ones."""
    return Upstream.objects.filter(Q(tenant=tenant) | Q(tenant__isnull=True))


def upstream_get(*, tenant: Tenant, slug: str) -> Upstream:
    """One upstream the tenant may use; raises Upstream.DoesNotExist otherwise."""
    return upstream_list(tenant=tenant).get(slug=slug)


def upstream_list_owned(*, tenant: Tenant) -> QuerySet[Upstream]:
    """The upstreams the tenant may edit: its own."""
    return Upstream.objects.filter(tenant=tenant)


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
    """The tenant's key; raises ApiKey.DoesNotExist for another tenant's key as for a missing one."""
    return ApiKey.objects.get(tenant=tenant, key_id=key_id)


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


def audit_event_list(*, tenant: Tenant) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(tenant=tenant).select_related("actor")


def usage_list(
    *, tenant: Tenant, api_key: ApiKey | None = None, since: datetime | None = None
) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.filter(tenant=tenant)
    if api_key is not None:
        records = records.filter(api_key=api_key)
    if since is not None:
        records = records.filter(hour__gte=since)
    return records

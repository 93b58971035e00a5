"""Reads of access tokens and management tokens."""

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from keys import crypto
from keys.models import (
    AccessToken,
    ManagementToken,
    Tenant,
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


def management_token_get(*, tenant: Tenant, token_id: int) -> ManagementToken:
    """One of the tenant's management tokens; raises ManagementToken.DoesNotExist otherwise."""
    return management_token_list(tenant=tenant).get(pk=token_id)

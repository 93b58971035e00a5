"""Reads of API keys, and the check of a key's id and secret."""

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from keys import crypto
from keys.models import (
    ApiKey,
    KeyState,
    Tenant,
)


def api_key_list(*, tenant: Tenant, state: str | None = None, name: str | None = None) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.filter(tenant=tenant).prefetch_related("upstreams")
    now = timezone.now()
    if name:
        keys = keys.filter(name__icontains=name)
    if state:
        keys = keys.in_state(state, now=now)
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
    if state != KeyState.ACTIVE:
        return api_key, f"key_{state}"
    if not api_key_secret_valid(api_key=api_key, secret=secret, now=now):
        return api_key, "invalid_secret"
    return api_key, None

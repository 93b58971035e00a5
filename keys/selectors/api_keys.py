"""Reads of API keys, and the check of a key's id and secret."""

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from keys import access, crypto
from keys.models import (
    ApiKey,
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
    """The current secret, or the previous one while its rotation grace lasts (keys.access)."""
    return access.secret_matches(
        secret=secret,
        secret_hash=api_key.secret_hash,
        previous_secret_hash=api_key.previous_secret_hash,
        previous_secret_until=access.timestamp(api_key.previous_secret_expires_at),
        now=(now or timezone.now()).timestamp(),
    )


def api_key_authenticate(
    *, key_id: str, secret: str, now: datetime | None = None
) -> tuple[ApiKey | None, access.Refusal | None]:
    """(key, None) when the key may be used with this secret; else (key or None, the refusal), by the
    proxy's rules and in its order: invalid_key, tenant_suspended, key_revoked, key_expired,
    invalid_secret."""
    api_key = api_key_find(key_id=key_id)
    if api_key is None:
        return None, access.unknown_key(key_id)
    now = now or timezone.now()
    refused = access.key_state_refusal(
        key_id=api_key.key_id,
        tenant_active=api_key.tenant.is_active,
        revoked_at=access.timestamp(api_key.revoked_at),
        expires_at=access.timestamp(api_key.expires_at),
        now=now.timestamp(),
    )
    if refused is None and not api_key_secret_valid(api_key=api_key, secret=secret, now=now):
        refused = access.wrong_secret(api_key.key_id)
    return api_key, refused

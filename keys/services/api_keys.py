"""API keys (create, update, rotate with a grace period, revoke) and the short-lived access tokens issued
for them."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from keys import crypto, origins, validators
from keys.models import AccessToken, ApiKey, Tenant, Upstream
from keys.services.audit import Actor, actor_user, audit_record
from keys.services.tenants import tenant_check_limit
from keys.services.updates import model_update

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
    "report_only",
    "expires_at",
)


def _key_check_upstreams(tenant: Tenant, upstreams: Iterable[Upstream]) -> list[Upstream]:
    upstreams = list(upstreams)
    foreign = [u.slug for u in upstreams if u.tenant_id is not None and u.tenant_id != tenant.pk]
    if foreign:
        raise ValidationError({"upstreams": [f"Unknown upstream: {slug}." for slug in foreign]})
    return upstreams


ALLOWLIST_CHECKS = (
    "allowed_origins",
    "allowed_ips",
    "allowed_user_agents",
    "allowed_http_methods",
    "allowed_rpc_methods",
)


def api_key_check_enforce(
    *, api_key: ApiKey, check: str, actor: Actor = None, ip_address: str | None = None
) -> ApiKey:
    """Switch one of the key's checks from report mode to enforce (a no-op when it already enforces)."""
    if check not in validators.REPORT_ONLY_CHECKS:
        raise ValidationError({"report_only": [f"{check[:50]!r} is not a check that can report only."]})
    remaining = [name for name in api_key.report_only or [] if name != check]
    return api_key_update(api_key=api_key, actor=actor, ip_address=ip_address, report_only=remaining)


def api_key_allowlist_add(
    *, api_key: ApiKey, check: str, value: str, actor: Actor = None, ip_address: str | None = None
) -> ApiKey:
    """Add a value a report-mode check would have refused to that allowlist (validated as any entry).
    A JSON-RPC detail lists several methods ("a, b"): each is added."""
    if check not in ALLOWLIST_CHECKS:
        raise ValidationError({check[:50]: ["Only an allowlist takes a value."]})
    values = [part.strip() for part in value.split(",")] if check == "allowed_rpc_methods" else [value]
    current = list(getattr(api_key, check) or [])
    added = current + [entry for entry in values if entry and entry not in current]
    return api_key_update(api_key=api_key, actor=actor, ip_address=ip_address, **{check: added})


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
    live = ApiKey.objects.filter(tenant=tenant, revoked_at__isnull=True)
    tenant_check_limit(tenant=tenant, rows=live, setting="KEYS_MAX_KEYS_PER_TENANT", what="live keys")
    secret = crypto.new_secret()
    api_key = ApiKey(
        tenant=tenant,
        key_id=crypto.new_key_id(),
        name=name,
        secret_hash=crypto.hash_secret(secret),
        created_by=actor_user(actor),
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
    changed = model_update(instance=api_key, data=fields)
    if upstreams is not None:
        allowed = _key_check_upstreams(api_key.tenant, upstreams)
        if {upstream.pk for upstream in allowed} != set(api_key.upstreams.values_list("pk", flat=True)):
            api_key.upstreams.set(allowed)
            changed.append("upstreams")
    if changed:  # the audit trail names what changed, and nothing when nothing did
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


# --- Access tokens -------------------------------------------------------------------------------


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
def access_token_revoke(
    *, token: AccessToken, actor: Actor = None, ip_address: str | None = None
) -> AccessToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        if actor is not None:
            audit_record(
                action="access_token.revoked",
                tenant=token.api_key.tenant,
                actor=actor,
                target=token,
                ip_address=ip_address,
            )
    return token

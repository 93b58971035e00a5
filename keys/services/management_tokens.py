"""Management tokens: the bearer tokens of the management API, each scoped to one tenant."""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from keys import crypto
from keys.models import ManagementToken, Tenant
from keys.services.audit import Actor, actor_user, audit_record
from keys.services.tenants import tenant_check_limit


@transaction.atomic
def management_token_create(
    *, tenant: Tenant, name: str = "default", actor: Actor = None, ip_address: str | None = None
) -> tuple[ManagementToken, str]:
    """A token for the management API, scoped to one tenant. Returns the row and its clear value, once."""
    live = ManagementToken.objects.filter(tenant=tenant, revoked_at__isnull=True)
    tenant_check_limit(
        tenant=tenant,
        rows=live,
        setting="KEYS_MAX_MANAGEMENT_TOKENS_PER_TENANT",
        what="live management tokens",
    )
    clear = crypto.new_management_token()
    token = ManagementToken(
        tenant=tenant,
        name=name,
        token_hash=crypto.hash_secret(clear),
        hint=clear[-4:],
        created_by=actor_user(actor),
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

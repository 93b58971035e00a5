"""The audit trail: who changed what. Every service records an event through audit_record."""

from collections.abc import Mapping

from django.contrib.auth.models import AnonymousUser, User
from django.db import models

from keys.models import AuditEvent, Tenant

# Who made a change: a user (request.user: an anonymous one is recorded as "system"), or a label such
# as "create_tenant" for commands and jobs.
Actor = User | AnonymousUser | str | None


def actor_user(actor: Actor) -> User | None:
    """The signed-in user behind `actor`, to name on a row (created_by, invited_by); None for a label,
    an anonymous user or nobody."""
    return actor if isinstance(actor, User) and actor.is_authenticated else None


def audit_record(
    *,
    action: str,
    tenant: Tenant | None = None,
    actor: Actor = None,
    actor_label: str = "",
    target: models.Model | None = None,
    data: Mapping[str, object] | None = None,
    ip_address: str | None = None,
) -> AuditEvent:
    """Append an event to the audit trail. `data` must never hold a secret."""
    if target is not None:
        target_type = type(target).__name__
        target_id = str(getattr(target, "key_id", None) or getattr(target, "slug", None) or target.pk)
    else:
        target_type, target_id = "", ""
    user = actor_user(actor)
    if isinstance(actor, str):
        actor_label = actor_label or actor
    elif user is not None:
        actor_label = actor_label or user.get_username()
    return AuditEvent.objects.create(
        tenant=tenant,
        actor=user,
        actor_label=actor_label or "system",
        action=action,
        target_type=target_type,
        target_id=target_id,
        data=data or {},
        ip_address=ip_address or None,  # no address known: NULL, not an empty string
    )

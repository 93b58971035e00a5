"""The audit trail: who changed what. Every service records an event through audit_record."""

from django.contrib.auth.models import AbstractBaseUser

from keys.models import AuditEvent, Tenant

# Who made a change: a user, or a label such as "create_tenant" for commands and jobs.
Actor = AbstractBaseUser | str | None


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
        ip_address=ip_address or None,  # no address known: NULL, not an empty string
    )

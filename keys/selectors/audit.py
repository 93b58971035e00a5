"""Reads of the audit trail."""

from django.db.models import QuerySet

from keys.models import (
    AuditEvent,
    Tenant,
)


def audit_event_list(*, tenant: Tenant) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(tenant=tenant).select_related("actor")


def audit_action_list(*, tenant: Tenant) -> list[str]:
    """The actions the tenant's audit log holds, sorted (for the log's filter)."""
    actions = AuditEvent.objects.filter(tenant=tenant).order_by("action").values_list("action", flat=True)
    return list(actions.distinct())

"""The current tenant's audit log: admins and owners read it, newest first, 50 events a page,
filtered by action. Only this tenant's events; audit data never holds a secret (services.audit_record)."""

import json

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

from keys import selectors
from keys.models import AuditEvent, Role
from portal.common import TenantRequest, page, tenant_view
from portal.tenant_admin_forms import AuditFilterForm

PER_PAGE = 50


def _compact(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(_compact(item) for item in value) or "none"
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _row(event: AuditEvent) -> dict[str, object]:
    actor = event.actor
    who = (actor.email or actor.get_username()) if actor is not None else event.actor_label
    details = [(key, _compact(value)) for key, value in sorted((event.data or {}).items())]
    return {"event": event, "who": who, "details": details}


@require_GET
@tenant_view(Role.ADMIN)
def audit_log(request: TenantRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET, actions=selectors.audit_action_list(tenant=request.tenant))
    action = form.cleaned_data["action"] if form.is_valid() else ""
    events = selectors.audit_event_list(tenant=request.tenant).order_by("-created_at", "-pk")
    if action:
        events = events.filter(action=action)
    # get_page: a page number that is not a number gives the first page, one past the end the last.
    page_obj = Paginator(events, PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "action": action,
        "page_obj": page_obj,
        "rows": [_row(event) for event in page_obj],
    }
    return page(request, "portal/audit_log.html", context)


urlpatterns = [
    path("audit", audit_log, name="audit_log"),
]

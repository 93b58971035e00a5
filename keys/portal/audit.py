"""The current tenant's audit log."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from keys.models import Role
from keys.portal.common import page, tenant_view


@tenant_view(Role.ADMIN)
def audit_log(request: HttpRequest) -> HttpResponse:
    # Placeholder until the page is built.
    return page(request, "portal/placeholder.html", {"title": "Audit log"})


urlpatterns = [
    path("audit", audit_log, name="audit_log"),
]

"""Members of the current tenant and the invitations sent to join it."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from keys.models import Role
from keys.portal.common import page, tenant_view


@tenant_view(Role.VIEWER)
def member_list(request: HttpRequest) -> HttpResponse:
    # Placeholder until the page is built.
    return page(request, "portal/placeholder.html", {"title": "Members"})


urlpatterns = [
    path("members", member_list, name="member_list"),
]

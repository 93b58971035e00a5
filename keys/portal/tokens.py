"""Management tokens of the current tenant (for the management API)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from keys.models import Role
from keys.portal.common import page, tenant_view


@tenant_view(Role.ADMIN)
def token_list(request: HttpRequest) -> HttpResponse:
    # Placeholder until the page is built.
    return page(request, "portal/placeholder.html", {"title": "Management tokens"})


urlpatterns = [
    path("tokens", token_list, name="token_list"),
]

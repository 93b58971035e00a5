"""The upstreams the current tenant owns (and the global ones it may use)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from keys.models import Role
from keys.portal.common import page, tenant_view


@tenant_view(Role.VIEWER)
def upstream_list(request: HttpRequest) -> HttpResponse:
    # Placeholder until the page is built.
    return page(request, "portal/placeholder.html", {"title": "Upstreams"})


urlpatterns = [
    path("upstreams", upstream_list, name="upstream_list"),
]

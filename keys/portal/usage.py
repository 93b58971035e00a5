"""Usage of the current tenant and of each key: charts, rejections by reason, CSV export."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from keys.models import Role
from keys.portal.common import page, tenant_view


@tenant_view(Role.VIEWER)
def usage(request: HttpRequest) -> HttpResponse:
    # Placeholder until the page is built.
    return page(request, "portal/placeholder.html", {"title": "Usage"})


urlpatterns = [
    path("usage", usage, name="usage"),
]

"""The upstreams the current tenant owns (and the global ones it may use).

Every member reads the list and an upstream's settings; admins and owners create, edit and delete the
tenant's own. Global upstreams (made by staff) are read-only: their edit and delete pages answer 404, as
another tenant's upstream does. A credential is write-only: no page renders it, only whether one is set.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods

from keys import selectors, services, validators
from keys.client_address import client_address
from keys.models import Role
from portal.common import TenantRequest, can, or_404, page, tenant_view
from portal.tenant_admin_forms import UpstreamEditForm, UpstreamForm


@require_GET
@tenant_view(Role.VIEWER)
def upstream_list(request: TenantRequest) -> HttpResponse:
    upstreams = list(selectors.upstream_list(tenant=request.tenant))
    context = {
        "own": [u for u in upstreams if u.tenant_id is not None],
        "shared": [u for u in upstreams if u.tenant_id is None],
        "can_manage": can(request, Role.ADMIN),
    }
    return page(request, "portal/upstream_list.html", context)


@require_GET
@tenant_view(Role.VIEWER)
def upstream_detail(request: TenantRequest, slug: str) -> HttpResponse:
    upstream = or_404(selectors.upstream_get, tenant=request.tenant, slug=slug)
    can_manage = can(request, Role.ADMIN) and upstream.tenant_id == request.tenant.pk
    return page(request, "portal/upstream_detail.html", {"upstream": upstream, "can_manage": can_manage})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def upstream_create(request: TenantRequest) -> HttpResponse:
    form = UpstreamForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            upstream = services.upstream_create(
                tenant=request.tenant,
                slug=form.cleaned_data["slug"],
                auth_value=form.cleaned_data["auth_value"],
                actor=request.user,
                actor_is_staff=False,
                ip_address=client_address(request),
                # Looked up at call time, so tests can stand in for DNS.
                resolve=validators.resolve_host,
                **form.service_fields(),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"The upstream {upstream.slug} is created.")
            return redirect("portal:upstream_detail", slug=upstream.slug)
    return page(request, "portal/upstream_create.html", {"form": form})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def upstream_edit(request: TenantRequest, slug: str) -> HttpResponse:
    upstream = or_404(selectors.upstream_get_owned, tenant=request.tenant, slug=slug)
    form = UpstreamEditForm(request.POST if request.method == "POST" else None, upstream=upstream)
    if request.method == "POST" and form.is_valid():
        try:
            services.upstream_update(
                upstream=upstream,
                auth_value=form.credential(),
                actor=request.user,
                actor_is_staff=False,
                ip_address=client_address(request),
                resolve=validators.resolve_host,
                **form.service_fields(),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
            upstream.refresh_from_db()  # the service set the refused values on this instance
        else:
            messages.success(request, f"The upstream {upstream.slug} is saved.")
            return redirect("portal:upstream_detail", slug=upstream.slug)
    return page(request, "portal/upstream_edit.html", {"upstream": upstream, "form": form})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def upstream_delete(request: TenantRequest, slug: str) -> HttpResponse:
    """GET asks for confirmation; only POST deletes."""
    upstream = or_404(selectors.upstream_get_owned, tenant=request.tenant, slug=slug)
    if request.method == "POST":
        services.upstream_delete(upstream=upstream, actor=request.user, ip_address=client_address(request))
        messages.success(request, f"The upstream {slug} is deleted.")
        return redirect("portal:upstream_list")
    keys = list(selectors.api_key_list(tenant=request.tenant).filter(upstreams=upstream))
    return page(request, "portal/upstream_delete.html", {"upstream": upstream, "keys": keys})


urlpatterns = [
    path("upstreams", upstream_list, name="upstream_list"),
    path("upstreams/new", upstream_create, name="upstream_create"),
    path("upstreams/<slug:slug>", upstream_detail, name="upstream_detail"),
    path("upstreams/<slug:slug>/edit", upstream_edit, name="upstream_edit"),
    path("upstreams/<slug:slug>/delete", upstream_delete, name="upstream_delete"),
]

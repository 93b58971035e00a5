"""Management tokens of the current tenant (for the management API): admins and owners list, create and
revoke them. A new token is shown once, in the answer that creates it; only its hash is stored."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from keys import selectors, services
from keys.client_address import client_address
from keys.models import Role
from keys.shown_once import shown_once
from portal.common import (
    TenantRequest,
    already_done,
    mark_done,
    once_token,
    or_404,
    page,
    tenant_view,
)
from portal.tenant_admin_forms import ManagementTokenCreateForm


def _api_url(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("api-key-list"))


@require_GET
@tenant_view(Role.ADMIN)
def token_list(request: TenantRequest) -> HttpResponse:
    tokens = selectors.management_token_list(tenant=request.tenant).select_related("created_by")
    return page(request, "portal/token_list.html", {"tokens": tokens, "api_url": _api_url(request)})


@never_cache
@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def token_create(request: TenantRequest) -> HttpResponse:
    if request.method == "POST" and (done := already_done(request)):
        messages.info(request, "That token was already created; it was shown once. Revoke it if it is lost.")
        return redirect(done)
    form = ManagementTokenCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            token, clear = services.management_token_create(
                tenant=request.tenant,
                name=form.cleaned_data["name"],
                actor=request.user,
                ip_address=client_address(request),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            mark_done(request, reverse("portal:token_list"))
            # The token is in this answer only: not stored in clear, not cached, never rendered again.
            context = {"token": token, "secret": clear, "api_url": _api_url(request)}
            return shown_once(page(request, "portal/token_created.html", context))
    return page(request, "portal/token_create.html", {"form": form, "once": once_token(request)})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def token_revoke(request: TenantRequest, token_id: int) -> HttpResponse:
    """GET asks for confirmation; only POST revokes."""
    token = or_404(selectors.management_token_get, tenant=request.tenant, token_id=token_id)
    if request.method == "POST":
        services.management_token_revoke(token=token, actor=request.user, ip_address=client_address(request))
        messages.success(request, f"The token {token.name} (…{token.hint}) is revoked.")
        return redirect("portal:token_list")
    return page(request, "portal/token_revoke.html", {"token": token})


urlpatterns = [
    path("tokens", token_list, name="token_list"),
    path("tokens/new", token_create, name="token_create"),
    path("tokens/<int:token_id>/revoke", token_revoke, name="token_revoke"),
]

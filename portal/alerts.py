"""Alert rules (every member reads them; admins and owners manage them), webhook endpoints with their
deliveries, and the organisation's answer to a leak report (admins and owners)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from keys import selectors
from keys.client_address import client_address
from keys.models import ApiKey, Role
from keys.services import alerts as alert_services
from keys.services import leaks
from keys.services import webhooks as webhook_services
from keys.shown_once import shown_once
from portal.alert_forms import AlertRuleForm, LeakResponseForm, WebhookForm
from portal.common import TenantRequest, already_done, mark_done, once_token, or_404, page, tenant_view

DELIVERIES_SHOWN = 50


def _members(request: TenantRequest) -> list:
    return [m.user for m in selectors.membership_list(tenant=request.tenant).select_related("user")]


@require_GET
@tenant_view(Role.VIEWER)
def alert_list(request: TenantRequest) -> HttpResponse:
    rules = selectors.alert_rule_list(tenant=request.tenant)
    can_manage = selectors.role_at_least(role=request.membership.role, minimum=Role.ADMIN)
    return page(request, "portal/alert_list.html", {"rules": rules, "can_manage": can_manage})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def alert_create(request: TenantRequest) -> HttpResponse:
    members = _members(request)
    form = AlertRuleForm(
        request.POST if request.method == "POST" else None, tenant=request.tenant, members=members
    )
    if request.method == "POST" and form.is_valid():
        key_id = form.cleaned_data["key"]
        api_key = ApiKey.objects.filter(tenant=request.tenant, key_id=key_id).first() if key_id else None
        chosen = set(form.cleaned_data["recipients"])
        try:
            alert_services.alert_rule_create(
                tenant=request.tenant,
                event=form.cleaned_data["event"],
                api_key=api_key,
                recipients=[u for u in members if str(u.pk) in chosen],
                actor=request.user,
                ip_address=client_address(request),
                **form.service_fields(),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, "The alert rule is on.")
            return redirect("portal:alert_list")
    return page(request, "portal/alert_create.html", {"form": form})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def alert_delete(request: TenantRequest, rule_id: int) -> HttpResponse:
    rule = or_404(selectors.alert_rule_get, tenant=request.tenant, rule_id=rule_id)
    if request.method == "POST":
        alert_services.alert_rule_delete(rule=rule, actor=request.user, ip_address=client_address(request))
        messages.success(request, "The alert rule is deleted.")
        return redirect("portal:alert_list")
    return page(request, "portal/alert_delete.html", {"rule": rule})


@require_GET
@tenant_view(Role.ADMIN)
def webhook_list(request: TenantRequest) -> HttpResponse:
    context = {
        "endpoints": selectors.webhook_endpoint_list(tenant=request.tenant),
        "leak_form": LeakResponseForm(initial={"leak_response": request.tenant.leak_response}),
    }
    return page(request, "portal/webhook_list.html", context)


@never_cache
@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def webhook_create(request: TenantRequest) -> HttpResponse:
    if request.method == "POST" and (done := already_done(request)):
        messages.info(request, "That endpoint was already added; its secret was shown once.")
        return redirect(done)
    form = WebhookForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint, secret = webhook_services.webhook_endpoint_create(
                tenant=request.tenant,
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
                description=form.cleaned_data["description"],
                actor=request.user,
                ip_address=client_address(request),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            mark_done(request, reverse("portal:webhook_detail", args=[endpoint.pk]))
            return shown_once(
                page(request, "portal/webhook_created.html", {"endpoint": endpoint, "secret": secret})
            )
    return page(request, "portal/webhook_create.html", {"form": form, "once": once_token(request)})


@require_GET
@tenant_view(Role.ADMIN)
def webhook_detail(request: TenantRequest, endpoint_id: int) -> HttpResponse:
    endpoint = or_404(selectors.webhook_endpoint_get, tenant=request.tenant, endpoint_id=endpoint_id)
    deliveries = selectors.webhook_delivery_list(endpoint=endpoint)[:DELIVERIES_SHOWN]
    return page(request, "portal/webhook_detail.html", {"endpoint": endpoint, "deliveries": deliveries})


@require_POST
@tenant_view(Role.ADMIN)
def webhook_test(request: TenantRequest, endpoint_id: int) -> HttpResponse:
    endpoint = or_404(selectors.webhook_endpoint_get, tenant=request.tenant, endpoint_id=endpoint_id)
    delivery = webhook_services.webhook_endpoint_test(endpoint=endpoint)
    messages.success(request, f"A test event ({delivery.event_id}) is on its way; its answer shows below.")
    return redirect("portal:webhook_detail", endpoint_id=endpoint.pk)


@require_POST
@tenant_view(Role.ADMIN)
def webhook_enable(request: TenantRequest, endpoint_id: int) -> HttpResponse:
    endpoint = or_404(selectors.webhook_endpoint_get, tenant=request.tenant, endpoint_id=endpoint_id)
    webhook_services.webhook_endpoint_enable(
        endpoint=endpoint, actor=request.user, ip_address=client_address(request)
    )
    messages.success(request, "The endpoint is enabled again.")
    return redirect("portal:webhook_detail", endpoint_id=endpoint.pk)


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def webhook_delete(request: TenantRequest, endpoint_id: int) -> HttpResponse:
    endpoint = or_404(selectors.webhook_endpoint_get, tenant=request.tenant, endpoint_id=endpoint_id)
    if request.method == "POST":
        webhook_services.webhook_endpoint_delete(
            endpoint=endpoint, actor=request.user, ip_address=client_address(request)
        )
        messages.success(request, f"The endpoint {endpoint.url} is deleted.")
        return redirect("portal:webhook_list")
    return page(request, "portal/webhook_delete.html", {"endpoint": endpoint})


@require_POST
@tenant_view(Role.ADMIN)
def leak_response(request: TenantRequest) -> HttpResponse:
    form = LeakResponseForm(request.POST)
    if form.is_valid():
        leaks.tenant_set_leak_response(
            tenant=request.tenant,
            leak_response=form.cleaned_data["leak_response"],
            actor=request.user,
            ip_address=client_address(request),
        )
        messages.success(request, "Saved.")
    else:
        messages.error(request, "Choose what a leak report does.")
    return redirect("portal:webhook_list")


urlpatterns = [
    path("alerts", alert_list, name="alert_list"),
    path("alerts/new", alert_create, name="alert_create"),
    path("alerts/<int:rule_id>/delete", alert_delete, name="alert_delete"),
    path("webhooks", webhook_list, name="webhook_list"),
    path("webhooks/new", webhook_create, name="webhook_create"),
    path("webhooks/leaks", leak_response, name="leak_response"),
    path("webhooks/<int:endpoint_id>", webhook_detail, name="webhook_detail"),
    path("webhooks/<int:endpoint_id>/test", webhook_test, name="webhook_test"),
    path("webhooks/<int:endpoint_id>/enable", webhook_enable, name="webhook_enable"),
    path("webhooks/<int:endpoint_id>/delete", webhook_delete, name="webhook_delete"),
]

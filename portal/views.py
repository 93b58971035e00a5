"""Portal pages. Thin: each parses a form, calls a service or a selector for the current tenant, and
renders. The current tenant is the membership named by the session's `tenant` slug, else the first."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.core.validators import slug_re
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_ratelimit.core import is_ratelimited

from keys import selectors, services, sharing
from keys.client_address import client_address
from keys.models import ApiKey, Role, Tenant
from keys.shown_once import shown_once
from portal.accounts import email_confirmation_send
from portal.common import (
    TENANT_SESSION_KEY,
    AuthenticatedRequest,
    TenantRequest,
    already_done,
    can,
    client_key,
    mark_done,
    once_token,
    or_404,
    page,
    tenant_view,
)
from portal.forms import (
    REPORT_CHOICES,
    ApiKeyCreateForm,
    ApiKeyEditForm,
    ApiKeyRotateForm,
    KeyCheckForm,
    RateLimitedAuthenticationForm,
    SignupForm,
)

# --- Accounts ---------------------------------------------------------------------------------------


def _login_username(group: str, request: HttpRequest) -> str:
    return request.POST.get("username", "").strip().lower()


class PortalLoginView(LoginView):
    """Django's login, limited per client address and per username (brute force)."""

    template_name = "portal/login.html"
    authentication_form = RateLimitedAuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        rate = settings.PORTAL_LOGIN_RATE
        # Both counters move on every attempt, so neither can be probed for free.
        by_ip = is_ratelimited(request, group="portal-login-ip", key=client_key, rate=rate, increment=True)
        by_name = is_ratelimited(
            request, group="portal-login-user", key=_login_username, rate=rate, increment=True
        )
        self.limited = by_ip or by_name
        return super().post(request, *args, **kwargs)

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "limited": getattr(self, "limited", False)}


def _unique_slug(name: str) -> str:
    base = slugify(name)[:40].strip("-") or "org"
    slug, n = base, 1
    while Tenant.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """A new account, its organisation, signed in at once; a link is mailed to confirm the address (until
    then the account cannot invite, nor be added to a tenant by e-mail). Limited per client address."""
    limited = request.method == "POST" and is_ratelimited(
        request, group="portal-signup-ip", key=client_key, rate=settings.PORTAL_SIGNUP_RATE, increment=True
    )
    form = SignupForm(request.POST or None, limited=limited)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():
                user = services.user_create_with_password(email=data["email"], password=data["password1"])
                tenant, _ = services.tenant_create(
                    slug=_unique_slug(data["organisation"]),
                    owner=user,
                    name=data["organisation"],
                    actor=user,
                )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            request.session[TENANT_SESSION_KEY] = tenant.slug
            messages.success(request, f"Welcome! {tenant.name} is ready: create your first key.")
            if email_confirmation_send(request, user):
                messages.info(request, f"We sent a link to {user.email}: open it to confirm your address.")
            else:
                messages.warning(request, "The confirmation e-mail could not be sent: use “Send again”.")
            return redirect("portal:key_list")
    return page(request, "portal/signup.html", {"form": form})


@require_POST
@login_required
def tenant_switch(request: AuthenticatedRequest) -> HttpResponse:
    slug = request.POST.get("tenant", "")
    # Only a slug's shape reaches the query (PostgreSQL refuses a NUL, for one).
    membership = (
        selectors.membership_for_user(user=request.user, tenant_slug=slug) if slug_re.match(slug) else None
    )
    if membership is None:
        raise Http404("No such organisation.")
    request.session[TENANT_SESSION_KEY] = membership.tenant.slug
    return redirect("portal:key_list")


# --- Keys -------------------------------------------------------------------------------------------


@require_GET
@login_required
def home(request: AuthenticatedRequest) -> HttpResponse:
    return redirect("portal:key_list")


@require_GET
@tenant_view()
def key_list(request: TenantRequest) -> HttpResponse:
    today = selectors.requests_today_by_key(tenant=request.tenant)
    keys = [(key, today.get(key.key_id, 0)) for key in selectors.api_key_list(tenant=request.tenant)]
    can_manage = can(request, Role.DEVELOPER)
    return page(request, "portal/key_list.html", {"keys": keys, "can_manage": can_manage})


@never_cache
@require_http_methods(["GET", "POST"])
@tenant_view(Role.DEVELOPER)
def key_create(request: TenantRequest) -> HttpResponse:
    if request.method == "POST" and (done := already_done(request)):
        messages.info(
            request, "That key was already created; its secret was shown once. Rotate it if it is lost."
        )
        return redirect(done)
    form = ApiKeyCreateForm(request.POST or None, tenant=request.tenant)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in services.KEY_FIELDS}
        try:
            api_key, secret = services.api_key_create(
                tenant=request.tenant,
                upstreams=form.cleaned_data["upstreams"],
                actor=request.user,
                ip_address=client_address(request),
                **fields,
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            mark_done(request, reverse("portal:key_detail", args=[api_key.key_id]))
            # The secret is in this answer only: not stored, not cached, never rendered again.
            return shown_once(page(request, "portal/key_created.html", {"key": api_key, "secret": secret}))
    return page(request, "portal/key_create.html", {"form": form, "once": once_token(request)})


def _snippet_context(request: HttpRequest, api_key: ApiKey) -> dict[str, object]:
    """What the ready-to-paste snippets need: the gateway's address and this key's proxy URL
    (through its first upstream). Never the secret: snippets read it from KEY_SECRET."""
    gateway = request.build_absolute_uri("/").rstrip("/")
    upstream = api_key.upstreams.first()
    proxy_url = f"{gateway}/proxy/{upstream.slug}/{api_key.key_id}/" if upstream else ""
    # The same URL for a WebSocket: wss:// where the site is https://, ws:// where it is http://.
    ws_url = "ws" + proxy_url.removeprefix("http") if proxy_url else ""
    return {"gateway": gateway, "proxy_url": proxy_url, "ws_url": ws_url, "now": timezone.now()}


@require_GET
@tenant_view()
def key_detail(request: TenantRequest, key_id: str) -> HttpResponse:
    api_key = or_404(selectors.api_key_get, tenant=request.tenant, key_id=key_id)
    context = {"key": api_key, "can_manage": can(request, Role.DEVELOPER)}
    context.update(_snippet_context(request, api_key))
    context.update(_report_context(request.tenant, api_key))
    return page(request, "portal/key_detail.html", context)


CHECK_LABELS = dict(REPORT_CHOICES)


def _report_context(tenant: Tenant, api_key: ApiKey) -> dict[str, object]:
    """The would-be refusals of the key's report-mode checks (24 h, 30 days) and its sharing signals."""
    now = timezone.now()
    last_day = {
        (row["code"], row["detail"]): row["count"]
        for row in selectors.usage_would_reject(tenant=tenant, api_key=api_key, since=now - timedelta(days=1))
    }
    would = [
        {
            **row,
            "day": last_day.get((row["code"], row["detail"]), 0),
            "label": CHECK_LABELS.get(row["check"], ""),
        }
        for row in selectors.usage_would_reject(
            tenant=tenant, api_key=api_key, since=now - timedelta(days=30)
        )
    ]
    days = sharing.sharing_days(api_key=api_key)
    peak = max([1, *(max(day["addresses"], day["origins"], day["user_agents"]) for day in days)])
    return {
        "report_checks": [(name, CHECK_LABELS[name]) for name in api_key.report_only or []],
        "would_reject": would,
        "allowlist_checks": services.ALLOWLIST_CHECKS,
        "sharing_days": days,
        "sharing_any": any(day["addresses"] or day["origins"] or day["user_agents"] for day in days),
        "sharing_peak": peak,
        "sharing_flags": sharing.sharing_flags(api_key=api_key),
    }


@require_POST
@tenant_view(Role.DEVELOPER)
def key_check(request: TenantRequest, key_id: str) -> HttpResponse:
    """One action on a report-mode check: switch it to enforce, or add a value to its allowlist."""
    api_key = or_404(selectors.api_key_get, tenant=request.tenant, key_id=key_id)
    form = KeyCheckForm(request.POST)
    if not form.is_valid() or api_key.state == "revoked":
        messages.error(request, "That action is not possible for this key.")
        return redirect("portal:key_detail", key_id=api_key.key_id)
    check, value = form.cleaned_data["check"], form.cleaned_data["value"].strip()
    actor, address = request.user, client_address(request)
    try:
        if value:
            services.api_key_allowlist_add(
                api_key=api_key, check=check, value=value, actor=actor, ip_address=address
            )
            messages.success(request, f"{value} is added to the {CHECK_LABELS[check].lower()} allowlist.")
        else:
            services.api_key_check_enforce(api_key=api_key, check=check, actor=actor, ip_address=address)
            messages.success(request, f"{CHECK_LABELS[check]} are now enforced: such requests are refused.")
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    return redirect("portal:key_detail", key_id=api_key.key_id)


@require_http_methods(["GET", "POST"])
@tenant_view(Role.DEVELOPER)
def key_revoke(request: TenantRequest, key_id: str) -> HttpResponse:
    """GET asks for confirmation; only POST revokes."""
    api_key = or_404(selectors.api_key_get, tenant=request.tenant, key_id=key_id)
    if request.method == "POST":
        services.api_key_revoke(api_key=api_key, actor=request.user, ip_address=client_address(request))
        messages.success(request, f"The key {api_key.name} is revoked.")
        return redirect("portal:key_detail", key_id=api_key.key_id)
    return page(request, "portal/key_revoke.html", {"key": api_key})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.DEVELOPER)
def key_edit(request: TenantRequest, key_id: str) -> HttpResponse:
    api_key = or_404(selectors.api_key_get, tenant=request.tenant, key_id=key_id)
    if api_key.state == "revoked":
        return page(request, "portal/key_edit.html", {"key": api_key, "form": None})
    data = request.POST if request.method == "POST" else None
    form = ApiKeyEditForm(data, tenant=request.tenant, api_key=api_key)
    if request.method == "POST" and form.is_valid():
        # Only what changed, so the audit trail names what the person changed.
        fields, upstreams = form.changes()
        if not fields and upstreams is None:
            messages.info(request, "Nothing changed.")
            return redirect("portal:key_detail", key_id=api_key.key_id)
        try:
            services.api_key_update(
                api_key=api_key,
                upstreams=upstreams,
                actor=request.user,
                ip_address=client_address(request),
                **fields,
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
            api_key.refresh_from_db()  # the service set the refused values on this instance
        else:
            messages.success(request, f"The key {api_key.name} is saved.")
            return redirect("portal:key_detail", key_id=api_key.key_id)
    return page(request, "portal/key_edit.html", {"key": api_key, "form": form})


@never_cache
@require_http_methods(["GET", "POST"])
@tenant_view(Role.DEVELOPER)
def key_rotate(request: TenantRequest, key_id: str) -> HttpResponse:
    """GET asks for confirmation and a grace period; only POST rotates."""
    api_key = or_404(selectors.api_key_get, tenant=request.tenant, key_id=key_id)
    if request.method == "POST" and (done := already_done(request)):
        # A reload would rotate again, and the secret just shown would stop working.
        messages.info(request, "The secret was already rotated; the new one was shown once.")
        return redirect(done)
    if api_key.state == "revoked":
        return page(request, "portal/key_rotate.html", {"key": api_key, "form": None})
    form = ApiKeyRotateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            secret = services.api_key_rotate(
                api_key=api_key,
                grace=form.cleaned_data["grace"],
                actor=request.user,
                ip_address=client_address(request),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            mark_done(request, reverse("portal:key_detail", args=[api_key.key_id]))
            # As at creation: the new secret is in this answer only, never stored or cached.
            return shown_once(page(request, "portal/key_rotated.html", {"key": api_key, "secret": secret}))
    context = {"key": api_key, "form": form, "once": once_token(request)}
    return page(request, "portal/key_rotate.html", context)

"""What every portal page shares: the layout's context, the tenant a member acts for, role checks,
the client address for the audit trail, and a service's ValidationError shown on a form."""

import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from django import forms
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render

from keys import selectors
from keys.client_address import client_address
from keys.models import Membership, Role, Tenant

TENANT_SESSION_KEY = "tenant"
# Forms whose POST must act once (create a key, rotate it, create a token): a browser's reload sends
# the POST again, which would silently make a second key. Each form carries a token; the session maps
# the tokens of the last few such forms to what their POST did ("" while not yet done).
ONCE_SESSION_KEY = "once"
ONCE_KEPT = 20
T = TypeVar("T")
P = ParamSpec("P")


class AuthenticatedRequest(HttpRequest):
    """The request a @login_required view gets: its user is signed in. For annotations only."""

    user: User


class TenantRequest(AuthenticatedRequest):
    """The request a @tenant_view gets: the member acting and the tenant they act for. For annotations."""

    membership: Membership
    tenant: Tenant


# A portal page acting for a tenant, before and after @tenant_view.
TenantView = Callable[Concatenate[TenantRequest, P], HttpResponseBase]
View = Callable[Concatenate[HttpRequest, P], HttpResponseBase]


def page(
    request: HttpRequest, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    """Render with what the layout needs: the current membership and the tenants to switch between."""
    membership = getattr(request, "membership", None)
    tenants = list(selectors.tenant_list_for_user(user=request.user)) if request.user.is_authenticated else []
    # The "confirm your e-mail" banner, until the account proves its address (keys.models.EmailConfirmation).
    unconfirmed = request.user.is_authenticated and not selectors.email_confirmed(user=request.user)
    base = {"membership": membership, "tenants": tenants, "email_unconfirmed": unconfirmed}
    return render(request, template, {**base, **(context or {})}, status=status)


def forbidden(request: HttpRequest, reason: str) -> HttpResponse:
    """The 403 page, saying why."""
    return page(request, "portal/forbidden.html", {"reason": reason}, status=403)


def tenant_view(minimum: str = Role.VIEWER) -> Callable[[TenantView[P]], View[P]]:
    """A signed-in member's page, acting for the current tenant with at least the `minimum` role.
    Sets request.membership and request.tenant (a TenantRequest); a lower role gets the 403 page."""

    def decorate(view: TenantView[P]) -> View[P]:
        @wraps(view)
        @login_required
        def wrapper(http_request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponseBase:
            # login_required let only a signed-in user through; the two attributes set below complete it.
            request = cast(TenantRequest, http_request)
            slug = request.session.get(TENANT_SESSION_KEY)
            membership = selectors.membership_for_user(user=request.user, tenant_slug=slug) if slug else None
            membership = membership or selectors.membership_for_user(user=request.user)
            if membership is None:
                return forbidden(request, "You are not a member of any organisation.")
            request.membership = membership
            request.tenant = membership.tenant
            if not selectors.role_at_least(role=membership.role, minimum=minimum):
                return forbidden(request, f"This needs the {minimum} role; you are a {membership.role}.")
            if not request.tenant.is_active and request.method not in ("GET", "HEAD"):
                # A suspended organisation is read-only: its keys are refused by the proxy, and it may
                # not make new ones, tokens or invitations until staff lift the suspension.
                return forbidden(request, f"{request.tenant.name} is suspended: nothing can be changed.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def or_404(lookup: Callable[..., T], **kwargs: Any) -> T:
    """What a selector finds, or the 404 page: another tenant's object is not found, like a missing one."""
    try:
        return lookup(**kwargs)
    except ObjectDoesNotExist as exc:
        raise Http404 from exc


def once_token(request: HttpRequest) -> str:
    """A token for a form whose POST must act only once; the form sends it back as `once`."""
    token = secrets.token_urlsafe(16)
    tokens = {**request.session.get(ONCE_SESSION_KEY, {}), token: ""}
    request.session[ONCE_SESSION_KEY] = dict(list(tokens.items())[-ONCE_KEPT:])
    return token


def already_done(request: HttpRequest) -> str | None:
    """Where to see what this POST already did, when the browser sends it again; else None."""
    return request.session.get(ONCE_SESSION_KEY, {}).get(request.POST.get("once", "")) or None


def mark_done(request: HttpRequest, url: str) -> None:
    """Remember that this POST's form has acted, and where its result is."""
    tokens = request.session.get(ONCE_SESSION_KEY, {})
    if request.POST.get("once", "") in tokens:
        request.session[ONCE_SESSION_KEY] = {**tokens, request.POST["once"]: url}


def can(request: TenantRequest, minimum: str) -> bool:
    """Whether the current member has at least the `minimum` role (to show or hide a button)."""
    return selectors.role_at_least(role=request.membership.role, minimum=minimum)


def client_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit's key for "this client": the address by the trusted-proxy rule, so that behind a
    load balancer every visitor is not one address (key="ip" would read REMOTE_ADDR: the balancer)."""
    return client_address(request) or "unknown"


def add_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError against the fields it names (the rest above the form)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)

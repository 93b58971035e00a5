"""Accounts: password reset, accepting an invitation, and confirming the e-mail of a new account.

Each arrives by an e-mailed link holding a secret. No secret stays in the address bar, history or a
Referer: the link's page puts it in the session and redirects (Django's reset confirm view to
`…/set-password`, ours to `invitations/accept` and `confirm-email`). Completing any of the three proves
the person reads the address's mail: their e-mail counts as confirmed (keys.models.EmailConfirmation)."""

import logging
import smtplib
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import path, reverse, reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_ratelimit.core import is_ratelimited

from keys import crypto, selectors, services
from keys.client_address import client_address
from keys.models import EmailConfirmation, Invitation, Membership
from portal.account_forms import InvitationSignupForm, RateLimitedPasswordResetForm
from portal.common import TENANT_SESSION_KEY, AuthenticatedRequest, page

logger = logging.getLogger(__name__)

# --- Password reset ---------------------------------------------------------------------------------


def _reset_email(group: str, request: HttpRequest) -> str:
    return request.POST.get("email", "").strip().lower()


def _client(group: str, request: HttpRequest) -> str:
    return client_address(request)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset request: the same answer whether or not the e-mail has an account; limited per
    client address and per e-mail, so it can be used neither to flood an inbox nor to probe."""

    template_name = "portal/password_reset.html"
    form_class = RateLimitedPasswordResetForm
    email_template_name = "portal/email/password_reset.txt"
    subject_template_name = "portal/email/password_reset_subject.txt"
    success_url = reverse_lazy("portal:password_reset_done")

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        rate = settings.PORTAL_RESET_RATE
        # Both counters move on every request, so neither can be probed for free.
        by_ip = is_ratelimited(request, group="portal-reset-ip", key=_client, rate=rate, increment=True)
        by_email = is_ratelimited(
            request, group="portal-reset-email", key=_reset_email, rate=rate, increment=True
        )
        self.limited = by_ip or by_email
        return super().post(request, *args, **kwargs)

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "limited": getattr(self, "limited", False)}


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "portal/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """The link's token goes to the session and the browser to `…/set-password` (Django's own swap)."""

    template_name = "portal/password_reset_confirm.html"
    success_url = reverse_lazy("portal:password_reset_complete")
    post_reset_login = False

    def form_valid(self, form: SetPasswordForm) -> HttpResponse:
        response = super().form_valid(form)
        # The reset link was mailed to the account's address (its token covers the address): proof.
        services.email_confirm(
            user=form.user, method=EmailConfirmation.Method.RESET, ip_address=client_address(self.request)
        )
        return response


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "portal/password_reset_complete.html"


# --- Invitations --------------------------------------------------------------------------------------

INVITATION_SESSION_KEY = "invitation"


@never_cache
@require_GET
def invitation_open(request: HttpRequest, token: str) -> HttpResponse:
    """The e-mailed link: keep the token in the session, and get it out of the URL at once."""
    if crypto.well_formed(token, crypto.INVITATION_PREFIX):
        request.session[INVITATION_SESSION_KEY] = token
    else:
        request.session.pop(INVITATION_SESSION_KEY, None)
    response = redirect("portal:invitation_accept")
    response["Referrer-Policy"] = "no-referrer"
    return response


def _problem(invitation: Invitation | None) -> str:
    if invitation is None:
        return services.INVITATION_REFUSALS["invalid"]
    return services.INVITATION_REFUSALS.get(invitation.state, "")


def _joined(request: HttpRequest, membership: Membership) -> HttpResponse:
    request.session.pop(INVITATION_SESSION_KEY, None)
    request.session[TENANT_SESSION_KEY] = membership.tenant.slug
    messages.success(request, f"You joined {membership.tenant.name} as {membership.role}.")
    return redirect("portal:key_list")


@never_cache
@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest) -> HttpResponse:
    """Who the invitation is from and for; the invited person joins (signing up first if need be)."""
    token = request.session.get(INVITATION_SESSION_KEY, "")
    invitation = selectors.invitation_find(token=token)
    problem = _problem(invitation)
    context: dict[str, object] = {"invitation": invitation, "problem": problem}
    if problem or invitation is None:  # no invitation is a problem (_problem says which)
        return page(request, "portal/invitation_accept.html", context)
    user = request.user
    if user.is_authenticated:
        context["wrong_account"] = not selectors.invitation_is_for(invitation=invitation, user=user)
        context["already_member"] = selectors.membership_get(tenant=invitation.tenant, user=user) is not None
        if request.method == "POST" and not context["wrong_account"]:
            try:
                membership = services.invitation_accept(
                    token=token, user=user, ip_address=client_address(request)
                )
            except ValidationError as exc:
                context["error"] = " ".join(exc.messages)
            else:
                return _joined(request, membership)
        return page(request, "portal/invitation_accept.html", context)

    form = InvitationSignupForm(request.POST or None, email=invitation.email)
    context["form"] = form
    context["login_url"] = f"{reverse('portal:login')}?next={reverse('portal:invitation_accept')}"
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                new_user = services.user_create_with_password(
                    email=invitation.email, password=form.cleaned_data["password1"]
                )
                membership = services.invitation_accept(
                    token=token, user=new_user, ip_address=client_address(request)
                )
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            login(request, new_user, backend="django.contrib.auth.backends.ModelBackend")
            return _joined(request, membership)
    return page(request, "portal/invitation_accept.html", context)


# --- E-mail confirmation ----------------------------------------------------------------------------

CONFIRMATION_SESSION_KEY = "email_confirmation"


def email_confirmation_send(request: HttpRequest, user: User) -> bool:
    """Mail the user a link that confirms their address. False (and logged) when it could not be sent."""
    token = services.email_confirmation_token(user=user)
    context = {
        "email": user.email,
        "link": request.build_absolute_uri(reverse("portal:email_confirmation_open", args=[token])),
        "days": settings.PORTAL_CONFIRMATION_DAYS,
    }
    subject = " ".join(render_to_string("portal/email/confirmation_subject.txt", context).split())
    body = render_to_string("portal/email/confirmation.txt", context)
    try:
        send_mail(subject, body, None, [user.email])
    except (smtplib.SMTPException, OSError):
        logger.exception("user %s: the e-mail confirmation could not be sent", user.pk)
        return False
    return True


@never_cache
@require_GET
def email_confirmation_open(request: HttpRequest, token: str) -> HttpResponse:
    """The e-mailed link: keep the token in the session, and get it out of the URL at once."""
    request.session[CONFIRMATION_SESSION_KEY] = token[:500]
    response = redirect("portal:email_confirmation")
    response["Referrer-Policy"] = "no-referrer"
    return response


@never_cache
@require_http_methods(["GET", "POST"])
def email_confirmation(request: HttpRequest) -> HttpResponse:
    """A button that confirms (a POST: a mail scanner fetching the link confirms nothing by itself)."""
    token = request.session.get(CONFIRMATION_SESSION_KEY, "")
    context: dict[str, object] = {"has_link": bool(token)}
    if request.method == "POST" and token:
        try:
            user = services.email_confirm_by_token(token=token, ip_address=client_address(request))
        except ValidationError as exc:
            request.session.pop(CONFIRMATION_SESSION_KEY, None)
            context.update(has_link=False, problem=" ".join(exc.messages))
        else:
            request.session.pop(CONFIRMATION_SESSION_KEY, None)
            messages.success(request, f"Thank you: {user.email} is confirmed.")
            return redirect("portal:key_list" if request.user.is_authenticated else "portal:login")
    return page(request, "portal/email_confirm.html", context)


def _user_key(group: str, request: HttpRequest) -> str:
    return str(request.user.pk)


@require_POST
@login_required
def email_confirmation_resend(request: AuthenticatedRequest) -> HttpResponse:
    """The banner's "send again": a new link to the signed-in user's address, a few times an hour."""
    user = request.user
    if selectors.email_confirmed(user=user):
        messages.success(request, f"{user.email} is already confirmed.")
    elif is_ratelimited(
        request,
        group="portal-confirm-resend",
        key=_user_key,
        rate=settings.PORTAL_RESET_RATE,
        increment=True,
    ):
        messages.error(request, "Too many confirmation e-mails asked for. Try again later.")
    elif email_confirmation_send(request, user):
        messages.success(request, f"We sent a new confirmation link to {user.email}.")
    else:
        messages.error(request, "The confirmation e-mail could not be sent. Try again later.")
    return redirect("portal:key_list")


urlpatterns = [
    path("confirm-email", email_confirmation, name="email_confirmation"),
    path("confirm-email/send", email_confirmation_resend, name="email_confirmation_resend"),
    path("confirm-email/<str:token>", email_confirmation_open, name="email_confirmation_open"),
    path("password-reset", PasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent", PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password-reset/<uidb64>/<token>", PasswordResetConfirmView.as_view(), name="password_reset_confirm"
    ),
    path("password-reset/done", PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("invitations/accept", invitation_accept, name="invitation_accept"),
    path("invitations/<str:token>", invitation_open, name="invitation_open"),
]

"""Accounts: password reset and accepting an invitation.

Both arrive by an e-mailed link holding a secret. Neither secret stays in the address bar, history or a
Referer: the link's page puts it in the session and redirects (Django's reset confirm view to
`…/set-password`, ours to `invitations/accept`)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse, reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from django_ratelimit.core import is_ratelimited

from keys import crypto, selectors, services
from keys.models import Invitation
from keys.portal.account_forms import InvitationSignupForm, RateLimitedPasswordResetForm
from keys.portal.common import TENANT_SESSION_KEY, client_ip, page
from keys.request_ids import client_address

User = get_user_model()

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

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        rate = settings.PORTAL_RESET_RATE
        # Both counters move on every request, so neither can be probed for free.
        by_ip = is_ratelimited(request, group="portal-reset-ip", key=_client, rate=rate, increment=True)
        by_email = is_ratelimited(
            request, group="portal-reset-email", key=_reset_email, rate=rate, increment=True
        )
        self.limited = by_ip or by_email
        return super().post(request, *args, **kwargs)

    def get_form_kwargs(self) -> dict:
        return {**super().get_form_kwargs(), "limited": getattr(self, "limited", False)}


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "portal/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """The link's token goes to the session and the browser to `…/set-password` (Django's own swap)."""

    template_name = "portal/password_reset_confirm.html"
    success_url = reverse_lazy("portal:password_reset_complete")
    post_reset_login = False


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


def _joined(request: HttpRequest, membership) -> HttpResponse:
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
    context: dict = {"invitation": invitation, "problem": problem}
    if problem:
        return page(request, "portal/invitation_accept.html", context)
    user = request.user
    if user.is_authenticated:
        context["wrong_account"] = not selectors.invitation_is_for(invitation=invitation, user=user)
        context["already_member"] = selectors.membership_get(tenant=invitation.tenant, user=user) is not None
        if request.method == "POST" and not context["wrong_account"]:
            try:
                membership = services.invitation_accept(token=token, user=user, ip_address=client_ip(request))
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
                new_user = User.objects.create_user(
                    username=invitation.email.lower(),
                    email=invitation.email,
                    password=form.cleaned_data["password1"],
                )
                membership = services.invitation_accept(
                    token=token, user=new_user, ip_address=client_ip(request)
                )
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            login(request, new_user, backend="django.contrib.auth.backends.ModelBackend")
            return _joined(request, membership)
    return page(request, "portal/invitation_accept.html", context)


urlpatterns = [
    path("password-reset", PasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent", PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password-reset/<uidb64>/<token>", PasswordResetConfirmView.as_view(), name="password_reset_confirm"
    ),
    path("password-reset/done", PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("invitations/accept", invitation_accept, name="invitation_accept"),
    path("invitations/<str:token>", invitation_open, name="invitation_open"),
]

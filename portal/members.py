"""Members of the current tenant and the invitations sent to join it.

Every member sees the list; admins and owners invite, change roles, remove members and withdraw
invitations, under the owner rules of keys.services (only an owner grants or takes the owner role)."""

import logging

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_ratelimit.core import is_ratelimited

from keys import selectors, services
from keys.client_address import client_address
from keys.models import Invitation, Role
from portal.common import TENANT_SESSION_KEY, TenantRequest, can, or_404, page, tenant_view
from portal.member_forms import InvitationForm, MemberRoleForm

logger = logging.getLogger(__name__)


def _may_manage(request: TenantRequest, role: str) -> bool:
    """Whether the current member may change someone holding `role` (an owner: only an owner may)."""
    return can(request, Role.ADMIN) and (role != Role.OWNER or request.membership.role == Role.OWNER)


@require_GET
@tenant_view(Role.VIEWER)
def member_list(request: TenantRequest) -> HttpResponse:
    memberships = selectors.membership_list(tenant=request.tenant).order_by("created_at", "pk")
    members = [{"membership": m, "editable": _may_manage(request, m.role)} for m in memberships]
    invitations = [
        {"invitation": i, "revocable": _may_manage(request, i.role)}
        for i in selectors.invitation_list_pending(tenant=request.tenant)
    ]
    context = {"members": members, "invitations": invitations, "can_invite": can(request, Role.ADMIN)}
    return page(request, "portal/member_list.html", context)


def _tenant_key(group: str, request: TenantRequest) -> str:
    return str(request.tenant.pk)


def _send_invitation(request: TenantRequest, invitation: Invitation, token: str) -> None:
    context = {
        "invitation": invitation,
        "tenant": invitation.tenant,
        "role": invitation.get_role_display(),
        "inviter": request.user.email or request.user.get_username(),
        "link": request.build_absolute_uri(reverse("portal:invitation_open", args=[token])),
        "days": settings.PORTAL_INVITATION_DAYS,
    }
    # A subject is one line: a tenant name cannot add headers.
    subject = " ".join(render_to_string("portal/email/invitation_subject.txt", context).split())
    body = render_to_string("portal/email/invitation.txt", context)
    send_mail(subject, body, None, [invitation.email])


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def member_invite(request: TenantRequest) -> HttpResponse:
    actor_role = request.membership.role
    form = InvitationForm(request.POST or None, actor_role=actor_role)
    if request.method == "POST" and form.is_valid():
        # An unproven account sends no mail in the tenant's name (a phishing relay); nor does it count.
        if not selectors.email_confirmed(user=request.user):
            form.add_error(None, services.INVITER_UNCONFIRMED)
            return page(request, "portal/member_invite.html", {"form": form})
        limited = is_ratelimited(
            request,
            group="portal-invite-tenant",
            key=_tenant_key,
            rate=settings.PORTAL_INVITATION_RATE,
            increment=True,
        )
        if limited:
            form.add_error(None, "Too many invitations sent from this organisation. Try again later.")
            return page(request, "portal/member_invite.html", {"form": form})
        try:
            invitation, token = services.invitation_create(
                tenant=request.tenant,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor_role=actor_role,
                actor=request.user,
                ip_address=client_address(request),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
            return page(request, "portal/member_invite.html", {"form": form})
        try:
            _send_invitation(request, invitation, token)
        except Exception:  # noqa: BLE001 - any backend's failure (SMTP, a file path, a bad setting)
            logger.exception("invitation %s: the e-mail could not be sent", invitation.pk)
            # A link nobody received is withdrawn, so no working invitation is left behind unseen.
            services.invitation_revoke(invitation=invitation, actor_role=actor_role, actor=request.user)
            form.add_error(None, "The invitation e-mail could not be sent. Try again later.")
            return page(request, "portal/member_invite.html", {"form": form})
        messages.success(request, f"Invitation sent to {invitation.email}.")
        return redirect("portal:member_list")
    return page(request, "portal/member_invite.html", {"form": form})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def member_role(request: TenantRequest, membership_id: int) -> HttpResponse:
    membership = or_404(selectors.membership_get_by_id, tenant=request.tenant, membership_id=membership_id)
    actor_role = request.membership.role
    form = MemberRoleForm(request.POST or None, actor_role=actor_role, current_role=membership.role)
    if request.method == "POST" and form.is_valid():
        try:
            services.member_change_role(
                membership=membership,
                role=form.cleaned_data["role"],
                actor_role=actor_role,
                actor=request.user,
                ip_address=client_address(request),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"{membership.user.email} is now a {form.cleaned_data['role']}.")
            return redirect("portal:member_list")
    return page(request, "portal/member_role.html", {"member": membership, "form": form})


@require_http_methods(["GET", "POST"])
@tenant_view(Role.ADMIN)
def member_remove(request: TenantRequest, membership_id: int) -> HttpResponse:
    """GET asks for confirmation; only POST removes."""
    membership = or_404(selectors.membership_get_by_id, tenant=request.tenant, membership_id=membership_id)
    context: dict[str, object] = {"member": membership, "is_self": membership.user_id == request.user.pk}
    if request.method == "POST":
        try:
            services.member_remove(
                membership=membership,
                actor_role=request.membership.role,
                actor=request.user,
                ip_address=client_address(request),
            )
        except ValidationError as exc:
            context["errors"] = exc.messages
        else:
            messages.success(request, f"{membership.user.email} is no longer a member.")
            if context["is_self"]:
                request.session.pop(TENANT_SESSION_KEY, None)
                return redirect("portal:home")
            return redirect("portal:member_list")
    return page(request, "portal/member_remove.html", context)


@require_POST
@tenant_view(Role.ADMIN)
def member_invitation_revoke(request: TenantRequest, invitation_id: int) -> HttpResponse:
    invitation = or_404(selectors.invitation_get, tenant=request.tenant, invitation_id=invitation_id)
    try:
        services.invitation_revoke(
            invitation=invitation,
            actor_role=request.membership.role,
            actor=request.user,
            ip_address=client_address(request),
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"The invitation to {invitation.email} is withdrawn.")
    return redirect("portal:member_list")


urlpatterns = [
    path("members", member_list, name="member_list"),
    path("members/invite", member_invite, name="member_invite"),
    path("members/<int:membership_id>/role", member_role, name="member_role"),
    path("members/<int:membership_id>/remove", member_remove, name="member_remove"),
    path(
        "members/invitations/<int:invitation_id>/revoke",
        member_invitation_revoke,
        name="member_invitation_revoke",
    ),
]

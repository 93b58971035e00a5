"""Members and invitations in the portal: invite by e-mail, accept (new or existing account), the link's
token out of the URL and never stored in clear, single use, expiry, revocation, roles and owner rules,
tenant scope, rate limit and CSRF."""

import json
import re
import smtplib
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from keys import crypto, services
from keys.models import AuditEvent, Invitation, Membership, Role
from keys.services import invitations

User = get_user_model()
STRONG = "correct-horse-battery-staple-42"
LINK_RE = re.compile(r"http://testserver(/portal/invitations/(iv_[0-9A-Za-z]+))")
TOKEN_RE = re.compile(r"iv_[0-9A-Za-z]{20,}")
ACCEPT = "/portal/invitations/accept"


pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


@pytest.fixture
def admin_client(portal_client):
    return portal_client(Role.ADMIN)


def invite(client: Client, email: str = "new@person.example", role: str = Role.DEVELOPER):
    return client.post(reverse("portal:member_invite"), {"email": email, "role": role})


def link_in(mail) -> tuple[str, str]:
    """The path of the invitation link in a mail, and its token."""
    match = LINK_RE.search(mail.body)
    assert match, mail.body
    return match.group(1), match.group(2)


def accept_page(client: Client, link: str):
    opened = client.get(link)
    assert opened.status_code == 302
    assert opened["Location"] == ACCEPT
    return client.get(ACCEPT)


def no_token_anywhere(token: str) -> None:
    """The clear token is in no stored row: invitations hold its hash, the audit trail neither."""
    for row in Invitation.objects.values():
        assert token not in json.dumps(row, default=str)
    for event in AuditEvent.objects.all():
        assert token not in json.dumps(event.data) and token not in event.target_id


# --- Inviting -----------------------------------------------------------------------------------------


def test_admin_invites_by_email_and_a_new_person_signs_up_from_the_link(admin_client, tenant, mailoutbox):
    answer = invite(admin_client, "New@Person.example", Role.DEVELOPER)
    assert answer.status_code == 302 and answer["Location"] == reverse("portal:member_list")
    invitation = Invitation.objects.get(tenant=tenant)
    assert invitation.state == "pending" and invitation.role == Role.DEVELOPER
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == [invitation.email]
    assert tenant.name in mail.subject and "\n" not in mail.subject
    link, token = link_in(mail)
    assert invitation.token_hash == crypto.hash_secret(token)
    assert crypto.well_formed(token, crypto.INVITATION_PREFIX)
    no_token_anywhere(token)
    assert AuditEvent.objects.filter(action="invitation.created", tenant=tenant).exists()
    # The members page lists the pending invitation.
    page = admin_client.get(reverse("portal:member_list")).content.decode()
    assert invitation.email in page and token not in page

    newcomer = Client()
    page = accept_page(newcomer, link)
    assert page.status_code == 200
    text = page.content.decode()
    assert tenant.name in text and "Developer" in text and invitation.email in text
    assert token not in text
    assert "Cache-Control" in page and "no-store" in page["Cache-Control"]
    joined = newcomer.post(ACCEPT, {"password1": STRONG, "password2": STRONG})
    assert joined.status_code == 302 and joined["Location"] == reverse("portal:key_list")
    user = User.objects.get(email__iexact="new@person.example")
    assert user.check_password(STRONG)
    assert Membership.objects.get(tenant=tenant, user=user).role == Role.DEVELOPER
    assert newcomer.session["tenant"] == tenant.slug
    assert "invitation" not in newcomer.session
    assert newcomer.get(reverse("portal:key_list")).status_code == 200
    invitation.refresh_from_db()
    assert invitation.state == "accepted" and invitation.accepted_by == user
    assert AuditEvent.objects.filter(action="invitation.accepted", actor=user).exists()
    # No new organisation for them.
    assert list(Membership.objects.filter(user=user).values_list("tenant__slug", flat=True)) == ["acme"]
    no_token_anywhere(token)


def test_existing_user_of_another_tenant_logs_in_accepts_and_can_switch(
    admin_client, tenant, other_tenant, django_user_model, mailoutbox
):
    bob = django_user_model.objects.create_user(username="bob@globex.example", email="bob@globex.example")
    bob.set_password("pw")
    bob.save()
    services.membership_set(tenant=other_tenant, user=bob, role=Role.OWNER, actor="test")
    invite(admin_client, "BOB@globex.example", Role.VIEWER)
    link, _ = link_in(mailoutbox[0])

    client = Client()
    page = accept_page(client, link).content.decode()
    login_url = f"{reverse('portal:login')}?next={ACCEPT}"
    assert login_url in page
    logged_in = client.post(
        reverse("portal:login"), {"username": "bob@globex.example", "password": "pw", "next": ACCEPT}
    )
    assert logged_in.status_code == 302 and logged_in["Location"] == ACCEPT
    page = client.get(ACCEPT)
    assert f"Join {tenant.name}" in page.content.decode()
    joined = client.post(ACCEPT)
    assert joined.status_code == 302 and joined["Location"] == reverse("portal:key_list")
    assert set(Membership.objects.filter(user=bob).values_list("tenant__slug", "role")) == {
        ("acme", Role.VIEWER),
        ("globex", Role.OWNER),
    }
    keys_page = client.get(reverse("portal:key_list")).content.decode()
    assert f'<option value="{tenant.slug}" selected>' in keys_page
    assert f'<option value="{other_tenant.slug}"' in keys_page
    assert client.post(reverse("portal:tenant_switch"), {"tenant": other_tenant.slug}).status_code == 302
    assert client.get(reverse("portal:key_list")).context["membership"].tenant == other_tenant


def test_signed_in_as_someone_else_is_told_to_use_the_invited_account(
    admin_client, portal_client, tenant, other_tenant, mailoutbox
):
    invite(admin_client, "carol@person.example")
    link, _ = link_in(mailoutbox[0])
    stranger = portal_client(Role.OWNER, tenant=other_tenant)
    user = stranger.user
    page = accept_page(stranger, link)
    text = page.content.decode()
    assert "this invitation is for carol@person.example" in text and "Log out" in text
    answer = stranger.post(ACCEPT)
    assert answer.status_code == 200
    assert not Membership.objects.filter(tenant=tenant, user=user).exists()
    assert Invitation.objects.get(email="carol@person.example").state == "pending"
    with pytest.raises(ValidationError) as refused:
        services.invitation_accept(token=link_in(mailoutbox[0])[1], user=user)
    assert refused.value.code == "wrong_account"


def test_new_account_form_errors_create_nothing(admin_client, tenant, mailoutbox):
    invite(admin_client, "dora@person.example")
    link, _ = link_in(mailoutbox[0])
    client = Client()
    accept_page(client, link)
    users = User.objects.count()
    for data in (
        {"password1": STRONG, "password2": STRONG + "x"},
        {"password1": "password", "password2": "password"},
        {"password1": "", "password2": ""},
    ):
        answer = client.post(ACCEPT, data)
        assert answer.status_code == 200 and answer.context["form"].errors
    assert User.objects.count() == users
    assert Invitation.objects.get(email="dora@person.example").state == "pending"
    assert "_auth_user_id" not in client.session


def test_new_account_is_refused_when_the_email_has_an_account(admin_client, member, mailoutbox):
    invite(admin_client, "someone@else.example")
    link, token = link_in(mailoutbox[0])
    User.objects.create_user(username="someone@else.example", email="someone@else.example", password="pw")
    client = Client()
    accept_page(client, link)
    answer = client.post(ACCEPT, {"password1": STRONG, "password2": STRONG})
    assert answer.status_code == 200
    assert "log in to accept" in answer.content.decode()
    assert Invitation.objects.get(email="someone@else.example").state == "pending"


# --- Refusals: expired, revoked, used, invalid -------------------------------------------------------------


def test_expired_invitation_is_refused(admin_client, tenant, mailoutbox, settings):
    settings.PORTAL_INVITATION_DAYS = 1
    invite(admin_client, "late@person.example")
    invitation = Invitation.objects.get()
    assert invitation.expires_at - invitation.created_at == timedelta(days=1)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    link, token = link_in(mailoutbox[0])
    client = Client()
    page = accept_page(client, link)
    assert "expired" in page.content.decode()
    answer = client.post(ACCEPT, {"password1": STRONG, "password2": STRONG})
    assert "expired" in answer.content.decode()
    assert not User.objects.filter(email="late@person.example").exists()
    # Not listed as pending any more.
    assert admin_client.get(reverse("portal:member_list")).context["invitations"] == []


def test_revoked_invitation_is_refused(admin_client, tenant, mailoutbox):
    invite(admin_client, "gone@person.example")
    invitation = Invitation.objects.get()
    answer = admin_client.post(reverse("portal:member_invitation_revoke", args=[invitation.pk]))
    assert answer.status_code == 302
    invitation.refresh_from_db()
    assert invitation.state == "revoked"
    assert AuditEvent.objects.filter(action="invitation.revoked", tenant=tenant).exists()
    link, token = link_in(mailoutbox[0])
    client = Client()
    assert "withdrawn" in accept_page(client, link).content.decode()
    client.post(ACCEPT, {"password1": STRONG, "password2": STRONG})
    assert not User.objects.filter(email="gone@person.example").exists()
    no_token_anywhere(token)


def test_token_works_once(admin_client, tenant, mailoutbox):
    invite(admin_client, "once@person.example")
    link, token = link_in(mailoutbox[0])
    first = Client()
    accept_page(first, link)
    assert first.post(ACCEPT, {"password1": STRONG, "password2": STRONG}).status_code == 302
    user = User.objects.get(email="once@person.example")
    # The same link again: in another browser, and by the same (now signed-in) person.
    again = Client()
    assert "already been used" in accept_page(again, link).content.decode()
    again.post(ACCEPT, {"password1": STRONG, "password2": STRONG})
    assert "already been used" in accept_page(first, link).content.decode()
    assert first.post(ACCEPT).status_code == 200
    assert Membership.objects.filter(user=user).count() == 1
    with pytest.raises(ValidationError) as refused:
        services.invitation_accept(token=token, user=user)
    assert refused.value.code == "accepted"
    assert AuditEvent.objects.filter(action="invitation.accepted").count() == 1


def test_accept_is_compare_and_set(tenant, django_user_model, monkeypatch):
    """An acceptance that read the invitation as pending still loses to one that wrote first: the claim
    is a conditional update, and the loser adds no membership."""
    invitation, token = services.invitation_create(
        tenant=tenant, email="race@person.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    user = django_user_model.objects.create_user(username="race@person.example", email="race@person.example")
    real_same_email = invitations._same_email

    def concurrent_acceptance_wins(a: str, b: str) -> bool:
        # Runs after this acceptance checked the state, before it claims the invitation.
        Invitation.objects.filter(pk=invitation.pk).update(accepted_at=timezone.now())
        return real_same_email(a, b)

    monkeypatch.setattr(invitations, "_same_email", concurrent_acceptance_wins)
    with pytest.raises(ValidationError) as refused:
        services.invitation_accept(token=token, user=user)
    assert refused.value.code == "accepted"
    assert not Membership.objects.filter(user=user).exists()
    assert not AuditEvent.objects.filter(action="invitation.accepted").exists()


@pytest.mark.parametrize(
    "token",
    [
        "iv_nonsense",
        "iv_" + "A" * 38,
        "sk_" + "A" * 38,
        crypto.new_invitation_token(),
        "accept%20x",
        "x" * 300,
    ],
)
def test_unknown_or_malformed_link_is_refused(client, db, token):
    answer = client.get(f"/portal/invitations/{token}")
    assert answer.status_code == 302 and answer["Location"] == ACCEPT
    page = client.get(ACCEPT)
    assert "not valid" in page.content.decode()
    assert "invitation" not in client.session or client.session["invitation"] == token


def test_accept_without_a_link_says_so(client, db):
    assert "not valid" in client.get(ACCEPT).content.decode()
    assert "not valid" in client.post(ACCEPT, {"password1": STRONG, "password2": STRONG}).content.decode()
    assert User.objects.count() == 0


def test_link_page_keeps_the_token_out_of_the_url(admin_client, mailoutbox):
    invite(admin_client)
    link, token = link_in(mailoutbox[0])
    client = Client()
    opened = client.get(link)
    assert opened.status_code == 302
    assert token not in opened["Location"]
    assert opened["Referrer-Policy"] == "no-referrer"
    assert "no-store" in opened["Cache-Control"]
    assert client.post(link).status_code == 405


def test_a_new_invitation_replaces_the_pending_one(admin_client, tenant, mailoutbox):
    invite(admin_client, "twice@person.example", Role.VIEWER)
    invite(admin_client, "TWICE@person.example", Role.DEVELOPER)
    old, new = (link_in(mail) for mail in mailoutbox)
    assert Invitation.objects.filter(tenant=tenant).count() == 2
    assert [i.state for i in Invitation.objects.order_by("created_at", "pk")] == ["revoked", "pending"]
    assert "withdrawn" in accept_page(Client(), old[0]).content.decode()
    client = Client()
    accept_page(client, new[0])
    client.post(ACCEPT, {"password1": STRONG, "password2": STRONG})
    assert (
        Membership.objects.get(tenant=tenant, user__email__iexact="twice@person.example").role
        == Role.DEVELOPER
    )


def test_invitation_mail_failure_leaves_no_working_invitation(admin_client, tenant, monkeypatch):
    def refuse(*args, **kwargs):
        raise smtplib.SMTPException("down")

    monkeypatch.setattr("portal.members.send_mail", refuse)
    answer = invite(admin_client, "unlucky@person.example")
    assert answer.status_code == 200
    assert "could not be sent" in answer.content.decode()
    assert Invitation.objects.get().state == "revoked"


# --- Bad input, already a member, owner rules ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"email": "not-an-email", "role": Role.DEVELOPER}, "email"),
        ({"email": "", "role": Role.DEVELOPER}, "email"),
        ({"email": "a@b.example\nBcc: x@y.example", "role": Role.DEVELOPER}, "email"),
        ({"email": "ok@person.example", "role": "superuser"}, "role"),
        ({"email": "ok@person.example", "role": ""}, "role"),
        ({"email": "owner@acme.example", "role": Role.DEVELOPER}, "email"),  # already a member
        ({"email": "OWNER@ACME.EXAMPLE", "role": Role.VIEWER}, "email"),
    ],
)
def test_bad_invitation_shows_form_errors_and_creates_nothing(admin_client, tenant, mailoutbox, data, field):
    answer = admin_client.post(reverse("portal:member_invite"), data)
    assert answer.status_code == 200
    assert answer.context["form"].errors.get(field)
    assert Invitation.objects.count() == 0 and mailoutbox == []


def test_admin_may_not_invite_an_owner_but_an_owner_may(portal_client, tenant, mailoutbox):
    admin = portal_client(Role.ADMIN)
    answer = invite(admin, "boss@person.example", Role.OWNER)
    assert answer.status_code == 200 and answer.context["form"].errors.get("role")
    assert Invitation.objects.count() == 0
    with pytest.raises(ValidationError):
        services.invitation_create(
            tenant=tenant, email="boss@person.example", role=Role.OWNER, actor_role=Role.ADMIN
        )
    owner = portal_client(Role.OWNER)
    assert invite(owner, "boss@person.example", Role.OWNER).status_code == 302
    invitation = Invitation.objects.get()
    assert invitation.role == Role.OWNER
    # An admin may neither withdraw nor replace an owner's invitation.
    assert admin.post(reverse("portal:member_invitation_revoke", args=[invitation.pk])).status_code == 302
    invitation.refresh_from_db()
    assert invitation.state == "pending"
    assert invite(admin, "boss@person.example", Role.VIEWER).context["form"].errors.get("role")
    invitation.refresh_from_db()
    assert invitation.state == "pending"


def test_admin_may_not_change_or_remove_an_owner(portal_client, tenant):
    admin = portal_client(Role.ADMIN)
    owner = Membership.objects.get(tenant=tenant, role=Role.OWNER)
    page = admin.get(reverse("portal:member_list")).content.decode()
    assert reverse("portal:member_role", args=[owner.pk]) not in page
    answer = admin.post(reverse("portal:member_role", args=[owner.pk]), {"role": Role.VIEWER})
    assert answer.status_code == 200 and answer.context["form"].errors.get("role")
    answer = admin.post(reverse("portal:member_remove", args=[owner.pk]))
    assert answer.status_code == 200 and "Only an owner" in answer.content.decode()
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_the_last_owner_cannot_leave_or_step_down(portal_client, tenant):
    Membership.objects.filter(tenant=tenant, role=Role.OWNER).delete()
    owner = portal_client(Role.OWNER)
    user = owner.user
    mine = Membership.objects.get(tenant=tenant, user=user)
    answer = owner.post(reverse("portal:member_role", args=[mine.pk]), {"role": Role.ADMIN})
    assert "at least one owner" in answer.content.decode()
    answer = owner.post(reverse("portal:member_remove", args=[mine.pk]))
    assert "at least one owner" in answer.content.decode()
    assert Membership.objects.filter(pk=mine.pk, role=Role.OWNER).exists()


# --- Managing members ---------------------------------------------------------------------------------


def test_every_member_sees_members_and_pending_invitations(portal_client, tenant, member):
    services.invitation_create(
        tenant=tenant, email="soon@person.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    viewer = portal_client(Role.VIEWER)
    answer = viewer.get(reverse("portal:member_list"))
    assert answer.status_code == 200
    text = answer.content.decode()
    for email in ("owner@acme.example", "dev@tenant.example", "soon@person.example"):
        assert email in text
    assert "Developer" in text and "Owner" in text
    assert Membership.objects.get(user=member).created_at.strftime("%Y-%m-%d") in text


def test_admin_changes_a_role(admin_client, tenant, member):
    membership = Membership.objects.get(tenant=tenant, user=member)
    url = reverse("portal:member_role", args=[membership.pk])
    assert admin_client.get(url).status_code == 200
    answer = admin_client.post(url, {"role": Role.VIEWER})
    assert answer.status_code == 302
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER
    assert AuditEvent.objects.filter(action="member.role_changed", tenant=tenant).exists()
    answer = admin_client.post(url, {"role": "root"})
    assert answer.status_code == 200 and answer.context["form"].errors.get("role")


def test_remove_asks_first_and_only_post_removes(admin_client, tenant, member):
    membership = Membership.objects.get(tenant=tenant, user=member)
    url = reverse("portal:member_remove", args=[membership.pk])
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and "Remove the member" in confirm.content.decode()
    assert admin_client.put(url).status_code == 405
    assert Membership.objects.filter(pk=membership.pk).exists()
    assert admin_client.post(url).status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert User.objects.filter(pk=member.pk).exists()
    assert AuditEvent.objects.filter(action="member.removed", tenant=tenant).exists()


def test_revoke_is_post_only(admin_client, tenant):
    invitation, _ = services.invitation_create(
        tenant=tenant, email="p@person.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    url = reverse("portal:member_invitation_revoke", args=[invitation.pk])
    assert admin_client.get(url).status_code == 405
    invitation.refresh_from_db()
    assert invitation.state == "pending"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER])
def test_viewers_and_developers_see_no_controls_and_get_403(portal_client, tenant, member, role, mailoutbox):
    client = portal_client(role)
    invitation, _ = services.invitation_create(
        tenant=tenant, email="p@person.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    target = Membership.objects.get(tenant=tenant, user=member)
    page = client.get(reverse("portal:member_list"))
    assert page.status_code == 200
    text = page.content.decode()
    for control in ("Invite a person", "Change role", "Remove", "Withdraw"):
        assert control not in text
    assert client.get(reverse("portal:member_invite")).status_code == 403
    assert invite(client, "x@person.example").status_code == 403
    assert client.get(reverse("portal:member_role", args=[target.pk])).status_code == 403
    assert (
        client.post(reverse("portal:member_role", args=[target.pk]), {"role": Role.OWNER}).status_code == 403
    )
    assert client.get(reverse("portal:member_remove", args=[target.pk])).status_code == 403
    assert client.post(reverse("portal:member_remove", args=[target.pk])).status_code == 403
    assert client.post(reverse("portal:member_invitation_revoke", args=[invitation.pk])).status_code == 403
    target.refresh_from_db()
    invitation.refresh_from_db()
    assert target.role == Role.DEVELOPER and invitation.state == "pending"
    assert Invitation.objects.count() == 1 and mailoutbox == []


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_admins_and_owners_see_the_controls(portal_client, member, role):
    text = portal_client(role).get(reverse("portal:member_list")).content.decode()
    assert "Invite a person" in text and "Change role" in text and "Remove" in text


def test_another_tenants_member_or_invitation_is_404(portal_client, other_tenant):
    owner = portal_client(Role.OWNER)
    theirs = Membership.objects.get(tenant=other_tenant)
    invitation, _ = services.invitation_create(
        tenant=other_tenant, email="p@person.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    for url in (
        reverse("portal:member_role", args=[theirs.pk]),
        reverse("portal:member_remove", args=[theirs.pk]),
    ):
        assert owner.get(url).status_code == 404
        assert owner.post(url, {"role": Role.VIEWER}).status_code == 404
    assert owner.post(reverse("portal:member_invitation_revoke", args=[invitation.pk])).status_code == 404
    assert owner.post(reverse("portal:member_remove", args=[999999])).status_code == 404
    theirs.refresh_from_db()
    invitation.refresh_from_db()
    assert theirs.role == Role.OWNER and invitation.state == "pending"
    page = owner.get(reverse("portal:member_list")).content.decode()
    assert "owner@globex.example" not in page and "p@person.example" not in page


def test_pages_need_login(client, db):
    for name in ("member_list", "member_invite"):
        answer = client.get(reverse(f"portal:{name}"))
        assert answer.status_code == 302 and answer["Location"].startswith(reverse("portal:login"))


# --- Rate limit and CSRF ------------------------------------------------------------------------------


def test_invitations_are_rate_limited_per_tenant(portal_client, other_tenant, mailoutbox, settings):
    settings.PORTAL_INVITATION_RATE = "2/h"
    first = portal_client(Role.ADMIN)
    second = portal_client(Role.OWNER)
    assert invite(first, "a@person.example").status_code == 302
    assert invite(second, "b@person.example").status_code == 302
    answer = invite(first, "c@person.example")
    assert answer.status_code == 200
    assert "Too many invitations" in answer.content.decode()
    assert Invitation.objects.count() == 2 and len(mailoutbox) == 2
    # Another tenant has its own budget.
    theirs = portal_client(Role.ADMIN, tenant=other_tenant)
    assert invite(theirs, "c@person.example").status_code == 302


def test_csrf_is_enforced_on_every_post(portal_client, tenant, member, mailoutbox):
    admin = portal_client(Role.ADMIN, enforce_csrf_checks=True)
    target = Membership.objects.get(tenant=tenant, user=member)
    invitation, token = services.invitation_create(
        tenant=tenant, email="dev2@tenant.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    assert invite(admin, "x@person.example").status_code == 403
    assert (
        admin.post(reverse("portal:member_role", args=[target.pk]), {"role": Role.VIEWER}).status_code == 403
    )
    assert admin.post(reverse("portal:member_remove", args=[target.pk])).status_code == 403
    assert admin.post(reverse("portal:member_invitation_revoke", args=[invitation.pk])).status_code == 403
    anonymous = Client(enforce_csrf_checks=True)
    anonymous.get(f"/portal/invitations/{token}")
    assert anonymous.post(ACCEPT, {"password1": STRONG, "password2": STRONG}).status_code == 403
    invitee = User.objects.create_user(username="dev2@tenant.example", email="dev2@tenant.example")
    signed = Client(enforce_csrf_checks=True)
    signed.force_login(invitee)
    signed.get(f"/portal/invitations/{token}")
    assert signed.post(ACCEPT).status_code == 403
    target.refresh_from_db()
    invitation.refresh_from_db()
    assert target.role == Role.DEVELOPER and invitation.state == "pending"
    assert Invitation.objects.count() == 1 and mailoutbox == []
    assert not Membership.objects.filter(user=invitee).exists()


# --- Audit and admin ------------------------------------------------------------------------------------


def test_audit_events_name_the_email_and_role_never_the_token(tenant, django_user_model):
    invitation, token = services.invitation_create(
        tenant=tenant, email="audit@person.example", role=Role.ADMIN, actor_role=Role.OWNER, actor="test"
    )
    user = django_user_model.objects.create_user(
        username="audit@person.example", email="audit@person.example"
    )
    services.invitation_accept(token=token, user=user, ip_address="203.0.113.5")
    events = AuditEvent.objects.filter(action__startswith="invitation.").order_by("created_at")
    assert [e.action for e in events] == ["invitation.created", "invitation.accepted"]
    for event in events:
        assert event.data["email"] == "audit@person.example" and event.data["role"] == Role.ADMIN
        assert event.target_type == "Invitation" and event.target_id == str(invitation.pk)
    assert events[1].ip_address == "203.0.113.5"
    no_token_anywhere(token)


def test_admin_lists_invitations_without_the_token_hash_and_withdraws(client, staff_user, tenant):
    invitation, token = services.invitation_create(
        tenant=tenant, email="staff@person.example", role=Role.VIEWER, actor_role=Role.OWNER
    )
    client.force_login(staff_user)
    listing = client.get(reverse("admin:keys_invitation_changelist"))
    assert listing.status_code == 200 and invitation in listing.context["cl"].result_list
    change = client.get(reverse("admin:keys_invitation_change", args=[invitation.pk]))
    assert change.status_code == 200
    assert invitation.token_hash not in change.content.decode() and token not in change.content.decode()
    assert client.get(reverse("admin:keys_invitation_add")).status_code == 403
    answer = client.post(
        reverse("admin:keys_invitation_changelist"), {"action": "revoke", "_selected_action": [invitation.pk]}
    )
    assert answer.status_code == 302
    invitation.refresh_from_db()
    assert invitation.state == "revoked"

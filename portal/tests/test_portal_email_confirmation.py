"""E-mail confirmation: an account proves it reads its address's mail (the link mailed at sign-up, a
password reset, an accepted invitation) before it can be handed a membership by e-mail or invite anyone;
sign-up is rate limited per client and survives a concurrent sign-up of the same address."""

import importlib
import json
import re
import smtplib
import time

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from keys import selectors, services
from keys.models import AuditEvent, EmailConfirmation, Invitation, Membership, Role, Tenant
from keys.tests.api_helpers import error_of
from portal.tests.portal_helpers import found

User = get_user_model()
STRONG = "correct-horse-battery-staple-42"
VICTIM = "victim@corp.example"
CONFIRM_LINK_RE = re.compile(r"http://testserver(/portal/confirm-email/(\S+))")
RESET_LINK_RE = re.compile(r"http://testserver(/portal/password-reset/\S+)")
INVITE_LINK_RE = re.compile(r"http://testserver(/portal/invitations/iv_[0-9A-Za-z]+)")
CONFIRM = "/portal/confirm-email"

pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


def sign_up(client: Client, email: str = VICTIM, organisation: str = "Attacker Ltd", **extra):
    data = {"email": email, "password1": STRONG, "password2": STRONG, "organisation": organisation}
    return client.post(reverse("portal:signup"), data, **extra)


def confirmation_link(mailoutbox) -> tuple[str, str]:
    """The path and token of the last confirmation link mailed."""
    match = CONFIRM_LINK_RE.search(mailoutbox[-1].body)
    assert match, mailoutbox[-1].body
    return match.group(1), match.group(2)


def follow_link(client: Client, link: str):
    opened = client.get(link)
    assert opened.status_code == 302
    assert opened["Location"] == CONFIRM
    assert opened["Referrer-Policy"] == "no-referrer"
    return opened


def counts() -> tuple[int, int, int]:
    return User.objects.count(), Tenant.objects.count(), Membership.objects.count()


@pytest.fixture
def attacker(client, db, mailoutbox) -> AbstractBaseUser:
    """Someone who signed up with an address that is not theirs (and never sees its mail)."""
    assert sign_up(client).status_code == 302
    return User.objects.get(email=VICTIM)


# --- The attack: an account on someone else's address is handed nothing ------------------------------


def test_api_refuses_to_add_an_unconfirmed_account_as_a_member(attacker, api, tenant):
    response = api.post("/api/v1/members", {"email": VICTIM, "role": "admin"}, format="json")
    fields = error_of(response, 400, "invalid_request")["fields"]
    assert "invitation" in " ".join(fields["email"])
    assert not Membership.objects.filter(tenant=tenant, user=attacker).exists()


@pytest.mark.parametrize("spelling", [VICTIM, VICTIM.upper(), f"  {VICTIM}  "])
def test_member_add_service_refuses_any_spelling_of_the_unconfirmed_address(attacker, tenant, spelling):
    with pytest.raises(ValidationError) as refused:
        services.member_add(tenant=tenant, email=spelling, role=Role.VIEWER, actor_role=Role.OWNER)
    assert "accept an invitation" in " ".join(refused.value.message_dict["email"])


def test_create_tenant_refuses_an_unconfirmed_owner_and_leaves_nothing_behind(attacker):
    before = counts()
    with pytest.raises(CommandError, match="invitation"):
        call_command("create_tenant", "victimcorp", "--owner", VICTIM)
    assert counts() == before
    assert not Tenant.objects.filter(slug="victimcorp").exists()


def test_once_confirmed_the_account_may_be_added(attacker, api, client, mailoutbox):
    link, _ = confirmation_link(mailoutbox)
    follow_link(client, link)
    assert client.post(CONFIRM).status_code == 302
    response = api.post("/api/v1/members", {"email": VICTIM, "role": "viewer"}, format="json")
    assert response.status_code == 201, response.content


def test_a_new_address_is_still_added_without_a_password(api):
    response = api.post("/api/v1/members", {"email": "fresh@corp.example", "role": "viewer"}, format="json")
    assert response.status_code == 201, response.content
    assert not User.objects.get(email="fresh@corp.example").has_usable_password()


@pytest.mark.parametrize("spelling", ["owner@globex.example", "OWNER@globex.example"])
def test_an_unclaimed_account_made_by_create_tenant_is_not_added_without_consent(
    api, tenant, other_tenant, spelling
):
    # owner@globex.example was made by tenant_create, without a password: whoever claims it by a reset
    # would find themselves in acme, which nobody asked them about. They must accept an invitation.
    response = api.post("/api/v1/members", {"email": spelling, "role": "admin"}, format="json")
    fields = error_of(response, 400, "invalid_request")["fields"]
    assert "invitation" in " ".join(fields["email"])
    assert not Membership.objects.filter(tenant=tenant, user__email="owner@globex.example").exists()


def test_an_account_added_unclaimed_by_one_tenant_cannot_be_added_by_another(api, other_api):
    assert other_api.post("/api/v1/members", {"email": "new@corp.example", "role": "viewer"}, format="json")
    response = api.post("/api/v1/members", {"email": "new@corp.example", "role": "viewer"}, format="json")
    error_of(response, 400, "invalid_request")


def test_create_tenant_may_still_give_an_operator_made_unclaimed_account_a_second_tenant(other_tenant):
    call_command("create_tenant", "globex-eu", "--owner", "owner@globex.example", stdout=None)
    owner = Membership.objects.get(tenant__slug="globex-eu", role=Role.OWNER).user
    assert owner.email == "owner@globex.example" and not owner.has_usable_password()


# --- The link mailed at sign-up --------------------------------------------------------------------


def test_signup_signs_in_at_once_mails_a_link_and_shows_the_banner(client, db, mailoutbox):
    answer = sign_up(client, "ada@lovelace.example", "Analytical Engines")
    assert answer.status_code == 302 and answer["Location"] == reverse("portal:key_list")
    assert [mail.to for mail in mailoutbox] == [["ada@lovelace.example"]]
    assert "\n" not in mailoutbox[0].subject
    page = client.get(reverse("portal:key_list")).content.decode()
    assert "Confirm your e-mail address" in page
    assert reverse("portal:email_confirmation_resend") in page
    assert not selectors.email_confirmed(user=User.objects.get(email="ada@lovelace.example"))


def test_signup_still_succeeds_when_the_confirmation_mail_fails(client, db, monkeypatch):
    def refuse(*args, **kwargs):
        raise smtplib.SMTPException("down")

    monkeypatch.setattr("portal.accounts.send_mail", refuse)
    answer = sign_up(client, follow=True)
    assert answer.status_code == 200 and "could not be sent" in answer.content.decode()
    assert "_auth_user_id" in client.session
    assert Tenant.objects.filter(name="Attacker Ltd").exists()


def test_link_confirms_once_by_post_and_the_token_leaves_the_url(attacker, client, mailoutbox):
    link, token = confirmation_link(mailoutbox)
    opened = follow_link(client, link)
    assert token not in opened["Location"]
    page = client.get(CONFIRM)
    assert page.status_code == 200 and token not in page.content.decode()
    assert not selectors.email_confirmed(user=attacker)  # a mail scanner's GET confirms nothing
    done = client.post(CONFIRM)
    assert done.status_code == 302
    assert selectors.email_confirmed(user=attacker)
    assert EmailConfirmation.objects.get(user=attacker).method == EmailConfirmation.Method.LINK
    assert "Confirm your e-mail address" not in client.get(reverse("portal:key_list")).content.decode()
    assert AuditEvent.objects.filter(action="email.confirmed", actor=attacker).count() == 1

    follow_link(client, link)  # the same link again
    again = client.post(CONFIRM)
    assert again.status_code == 200 and "already confirmed" in again.context["problem"]
    assert AuditEvent.objects.filter(action="email.confirmed", actor=attacker).count() == 1


def test_link_works_without_being_signed_in(attacker, mailoutbox):
    link, _ = confirmation_link(mailoutbox)
    browser = Client()
    follow_link(browser, link)
    assert browser.post(CONFIRM)["Location"] == reverse("portal:login")
    assert selectors.email_confirmed(user=attacker)


def test_link_expires(attacker, client, settings, monkeypatch):
    settings.PORTAL_CONFIRMATION_DAYS = 3
    now = time.time()
    monkeypatch.setattr("django.core.signing.time.time", lambda: now - 3 * 86400 - 60)
    token = services.email_confirmation_token(user=attacker)
    monkeypatch.undo()
    follow_link(client, reverse("portal:email_confirmation_open", args=[token]))
    answer = client.post(CONFIRM)
    assert answer.status_code == 200 and "expired" in answer.context["problem"]
    assert not selectors.email_confirmed(user=attacker)


@pytest.mark.parametrize(
    "mangle", [lambda t: t[:-2] + "xx", lambda t: "x" + t, lambda t: "garbage", lambda t: ""]
)
def test_tampered_link_is_refused(attacker, client, mailoutbox, mangle):
    _, token = confirmation_link(mailoutbox)
    follow_link(client, reverse("portal:email_confirmation_open", args=[mangle(token) or "-"]))
    answer = client.post(CONFIRM)
    assert answer.status_code == 200 and "not valid" in answer.context["problem"]
    assert not selectors.email_confirmed(user=attacker)


def test_link_for_an_address_the_account_no_longer_has_is_refused(attacker, client, mailoutbox):
    link, _ = confirmation_link(mailoutbox)
    attacker.email = "other@corp.example"
    attacker.save(update_fields=["email"])
    follow_link(client, link)
    assert "not valid" in client.post(CONFIRM).context["problem"]
    assert not selectors.email_confirmed(user=attacker)


def test_a_confirmation_of_an_old_address_does_not_count_for_a_new_one(attacker):
    services.email_confirm(user=attacker, method=EmailConfirmation.Method.LINK)
    attacker.email = "changed@corp.example"
    attacker.save(update_fields=["email"])
    assert not selectors.email_confirmed(user=attacker)


def test_no_token_in_clear_in_the_database(attacker, client, mailoutbox):
    link, token = confirmation_link(mailoutbox)
    follow_link(client, link)
    client.post(CONFIRM)
    stored = [json.dumps(row, default=str) for row in AuditEvent.objects.values()]
    stored += [json.dumps(row, default=str) for row in EmailConfirmation.objects.values()]
    assert stored and not any(token in row for row in stored)
    assert token not in json.dumps(dict(client.session.items()), default=str)


def test_resend_mails_a_new_link_and_is_rate_limited(attacker, client, mailoutbox, settings):
    settings.PORTAL_RESET_RATE = "2/h"
    resend = reverse("portal:email_confirmation_resend")
    assert client.get(resend).status_code == 405
    sent = len(mailoutbox)
    for _ in range(2):
        assert client.post(resend).status_code == 302
    assert len(mailoutbox) == sent + 2
    limited = client.post(resend, follow=True)
    assert "Too many confirmation e-mails" in limited.content.decode()
    assert len(mailoutbox) == sent + 2
    link, _ = confirmation_link(mailoutbox)  # the newest link works
    follow_link(client, link)
    client.post(CONFIRM)
    assert selectors.email_confirmed(user=attacker)


def test_resend_when_confirmed_sends_nothing_and_needs_login(portal_client, mailoutbox, client):
    member = portal_client(Role.DEVELOPER)
    assert member.post(reverse("portal:email_confirmation_resend")).status_code == 302
    assert mailoutbox == []
    signed_out = client.post(reverse("portal:email_confirmation_resend"))
    assert signed_out.status_code == 302 and signed_out["Location"].startswith("/portal/login")
    assert mailoutbox == []


# --- Other proofs: a completed password reset, an accepted invitation --------------------------------


def test_completed_password_reset_confirms_the_address(attacker, mailoutbox):
    browser = Client()
    browser.post(reverse("portal:password_reset"), {"email": VICTIM})
    link = found(RESET_LINK_RE, mailoutbox[-1].body, 1)
    form_url = browser.get(link)["Location"]
    assert not selectors.email_confirmed(user=attacker)
    done = browser.post(form_url, {"new_password1": STRONG + "!", "new_password2": STRONG + "!"})
    assert done.status_code == 302
    assert EmailConfirmation.objects.get(user=attacker).method == EmailConfirmation.Method.RESET


def invite(client: Client, email: str):
    return client.post(reverse("portal:member_invite"), {"email": email, "role": Role.DEVELOPER})


def test_invited_sign_up_confirms_the_address(portal_client, mailoutbox):
    assert invite(portal_client(Role.ADMIN), "new@person.example").status_code == 302
    browser = Client()
    browser.get(found(INVITE_LINK_RE, mailoutbox[-1].body, 1))
    joined = browser.post(reverse("portal:invitation_accept"), {"password1": STRONG, "password2": STRONG})
    assert joined.status_code == 302
    user = User.objects.get(email="new@person.example")
    assert EmailConfirmation.objects.get(user=user).method == EmailConfirmation.Method.INVITATION


def test_accepting_an_invitation_signed_in_confirms_the_address(attacker, client, portal_client, mailoutbox):
    # The real owner of the address was invited: whoever reads its mail holds the account from now on.
    assert invite(portal_client(Role.ADMIN), VICTIM).status_code == 302
    client.get(found(INVITE_LINK_RE, mailoutbox[-1].body, 1))
    assert client.post(reverse("portal:invitation_accept")).status_code == 302
    assert EmailConfirmation.objects.get(user=attacker).method == EmailConfirmation.Method.INVITATION


# --- An unconfirmed account invites nobody ------------------------------------------------------------


def test_unconfirmed_admin_cannot_invite(portal_client, tenant, mailoutbox, settings):
    settings.PORTAL_INVITATION_RATE = "1/h"
    unconfirmed = portal_client(Role.OWNER, confirmed=False)
    answer = invite(unconfirmed, "target@bank.example")
    assert answer.status_code == 200
    assert "Confirm your own e-mail" in " ".join(answer.context["form"].non_field_errors())
    assert not Invitation.objects.exists() and mailoutbox == []
    # The refusal did not use up the tenant's invitations.
    assert invite(portal_client(Role.ADMIN), "colleague@acme.example").status_code == 302


def test_invitation_service_refuses_an_unconfirmed_inviter(tenant, django_user_model):
    user = django_user_model.objects.create_user(
        username="u@acme.example", email="u@acme.example", password="pw"
    )
    with pytest.raises(ValidationError, match="Confirm your own e-mail"):
        services.invitation_create(
            tenant=tenant, email="x@y.example", role=Role.VIEWER, actor_role=Role.OWNER, actor=user
        )
    services.email_confirm(user=user, method=EmailConfirmation.Method.LINK)
    invitation, _ = services.invitation_create(
        tenant=tenant, email="x@y.example", role=Role.VIEWER, actor_role=Role.OWNER, actor=user
    )
    assert invitation.invited_by == user


def test_the_signup_owner_cannot_invite_until_confirmed(attacker, client, mailoutbox):
    sent = len(mailoutbox)
    answer = invite(client, "target@bank.example")
    assert answer.status_code == 200 and not Invitation.objects.exists()
    assert len(mailoutbox) == sent


# --- Sign-up: rate limit and the concurrent sign-up ---------------------------------------------------


def test_signup_is_rate_limited_per_client_address_and_creates_nothing(db, mailoutbox, settings):
    settings.PORTAL_SIGNUP_RATE = "2/h"
    settings.PROXY_TRUSTED_PROXIES = ["10.0.0.0/8"]
    balancer = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    for n in range(2):
        assert sign_up(Client(), f"user{n}@corp.example", f"Org {n}", **balancer).status_code == 302
    before, mails = counts(), len(mailoutbox)
    browser = Client()
    limited = sign_up(browser, "user9@corp.example", "Org 9", **balancer)
    assert limited.status_code == 200
    assert "Too many sign-ups" in " ".join(limited.context["form"].non_field_errors())
    assert counts() == before and len(mailoutbox) == mails
    assert "_auth_user_id" not in browser.session
    # Another visitor behind the same balancer is not limited: the key is the client, not the balancer.
    other = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert sign_up(Client(), "user10@corp.example", "Org 10", **other).status_code == 302


def test_concurrent_signup_of_the_same_address_is_a_form_error(client, db, monkeypatch):
    # Another request creates the account after this one's check: the unique username catches it.
    User.objects.create_user(username=VICTIM, email=VICTIM, password="pw")
    monkeypatch.setattr(selectors, "account_exists", lambda *, email: False)
    before = counts()
    answer = sign_up(client)
    assert answer.status_code == 200
    assert "already exists" in " ".join(answer.context["form"].errors["email"])
    assert counts() == before and not Tenant.objects.filter(name="Attacker Ltd").exists()
    assert "_auth_user_id" not in client.session


def test_concurrent_invited_sign_up_is_a_form_error(portal_client, mailoutbox, monkeypatch):
    assert invite(portal_client(Role.ADMIN), "new@person.example").status_code == 302
    browser = Client()
    browser.get(found(INVITE_LINK_RE, mailoutbox[-1].body, 1))
    User.objects.create_user(username="new@person.example", email="new@person.example", password="pw")
    monkeypatch.setattr(selectors, "account_exists", lambda *, email: False)
    before = counts()
    answer = browser.post(reverse("portal:invitation_accept"), {"password1": STRONG, "password2": STRONG})
    assert answer.status_code == 200
    assert "already exists" in " ".join(answer.context["form"].non_field_errors())
    assert counts() == before
    assert Invitation.objects.get().accepted_at is None


# --- Accounts older than confirmation (the data migration) ---------------------------------------------


def test_migration_confirms_proven_accounts_but_not_self_signed_up_ones(attacker, tenant, portal_client):
    staff_made = User.objects.create_user(username="ops@corp.example", email="ops@corp.example", password="x")
    invited = User.objects.create_user(username="inv@corp.example", email="inv@corp.example", password="x")
    Invitation.objects.create(
        tenant=tenant,
        email="INV@corp.example",
        token_hash="h" * 64,
        accepted_by=invited,
        expires_at="2030-01-01T00:00Z",
    )
    EmailConfirmation.objects.all().delete()
    migration = importlib.import_module("keys.migrations.0005_email_confirmation")
    migration.confirm_proven_accounts(apps, None)
    methods = dict(EmailConfirmation.objects.values_list("user__email", "method"))
    assert methods[staff_made.email] == "existing"
    assert methods[invited.email] == "invitation"
    assert VICTIM not in methods  # signed up on their own: never proven
    assert "owner@acme.example" not in methods  # no usable password: proven when they set one

"""Password reset in the portal: a working link by e-mail, no user enumeration, rate limits, the token
out of the URL, password rules, and the new password logs in."""

import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

User = get_user_model()
STRONG = "correct-horse-battery-staple-42"
NEWER = "another-long-passphrase-of-ours-7"
LINK_RE = re.compile(r"http://testserver(/portal/password-reset/[^/\s]+/[^/\s]+)")


pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


def ask_reset(client: Client, email: str, **extra):
    return client.post(reverse("portal:password_reset"), {"email": email}, **extra)


def link_in(mail) -> str:
    match = LINK_RE.search(mail.body)
    assert match, mail.body
    return match.group(1)


def open_link(client: Client, link: str) -> str:
    """Follow the e-mailed link as a browser does; returns the URL of the password form."""
    answer = client.get(link)
    assert answer.status_code == 302
    return answer["Location"]


def set_password(client: Client, url: str, password1: str, password2: str | None = None):
    data = {"new_password1": password1, "new_password2": password2 if password2 is not None else password1}
    return client.post(url, data)


def can_log_in(email: str, password: str) -> bool:
    client = Client()
    answer = client.post(reverse("portal:login"), {"username": email, "password": password})
    return answer.status_code == 302 and "_auth_user_id" in client.session


def test_reset_page_renders(client, db):
    answer = client.get(reverse("portal:password_reset"))
    assert answer.status_code == 200
    assert 'name="email"' in answer.content.decode()


def test_reset_mails_a_working_link_and_the_new_password_logs_in(client, member, mailoutbox):
    answer = ask_reset(client, "DEV@Tenant.example")
    assert answer.status_code == 302
    assert answer["Location"] == reverse("portal:password_reset_done")
    assert client.get(answer["Location"]).status_code == 200
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["dev@tenant.example"]
    assert "\n" not in mail.subject
    form_url = open_link(client, link_in(mail))
    # The token leaves the address bar: Django keeps it in the session and redirects.
    assert form_url.endswith("/set-password")
    token = link_in(mail).rstrip("/").rsplit("/", 1)[1]
    assert token not in form_url
    page = client.get(form_url)
    assert page.status_code == 200 and page.context["validlink"]
    assert token not in page.content.decode()
    done = set_password(client, form_url, NEWER)
    assert done.status_code == 302
    assert done["Location"] == reverse("portal:password_reset_complete")
    assert client.get(done["Location"]).status_code == 200
    assert can_log_in("dev@tenant.example", NEWER)
    assert not can_log_in("dev@tenant.example", "pw")


def test_unknown_email_gets_the_same_answer_and_no_mail(client, member, mailoutbox):
    known = ask_reset(client, member.email)
    unknown = ask_reset(Client(), "nobody@nowhere.example")
    assert unknown.status_code == known.status_code == 302
    assert unknown["Location"] == known["Location"]
    assert len(mailoutbox) == 1 and mailoutbox[0].to == [member.email]


def test_inactive_user_gets_no_mail(client, member, mailoutbox):
    member.is_active = False
    member.save()
    assert ask_reset(client, member.email).status_code == 302
    assert mailoutbox == []


def test_person_added_without_a_password_sets_one_by_reset(client, tenant, mailoutbox):
    # tenant_create made owner@acme.example without a usable password: reset is how they get one.
    owner = User.objects.get(email="owner@acme.example")
    assert not owner.has_usable_password()
    ask_reset(client, "owner@acme.example")
    assert len(mailoutbox) == 1
    form_url = open_link(client, link_in(mailoutbox[0]))
    assert set_password(client, form_url, NEWER).status_code == 302
    assert can_log_in("owner@acme.example", NEWER)


def test_link_stops_working_after_an_hour(client, member, mailoutbox):
    from datetime import datetime, timedelta
    from unittest import mock

    from django.contrib.auth.tokens import default_token_generator

    ask_reset(client, member.email)
    link = link_in(mailoutbox[0])
    later = datetime.now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 5)  # noqa: DTZ005 - Django's own clock

    with mock.patch.object(default_token_generator, "_now", return_value=later):
        answer = client.get(link, follow=True)

    assert settings.PASSWORD_RESET_TIMEOUT == 3600
    assert answer.context["validlink"] is False


def test_link_works_once(client, member, mailoutbox):
    ask_reset(client, member.email)
    link = link_in(mailoutbox[0])
    set_password(client, open_link(client, link), NEWER)
    again = Client()
    answer = again.get(link, follow=True)
    assert answer.status_code == 200
    assert answer.context["validlink"] is False
    assert "does not work" in answer.content.decode()
    member.refresh_from_db()
    assert member.check_password(NEWER)


@pytest.mark.parametrize(
    "path",
    [
        "/portal/password-reset/MQ/bad-token",
        "/portal/password-reset/not-a-uid/cyz2v1-0123456789abcdef0123456789abcdef",
        "/portal/password-reset/MQ/set-password",  # no token in the session
    ],
)
def test_bad_link_shows_the_invalid_page(client, member, path):
    answer = client.get(path, follow=True)
    assert answer.status_code == 200
    assert answer.context["validlink"] is False
    post = client.post(path, {"new_password1": NEWER, "new_password2": NEWER})
    assert post.status_code == 200 and post.context["validlink"] is False
    member.refresh_from_db()
    assert member.check_password("pw")


def test_tampered_token_is_refused(client, member, mailoutbox):
    ask_reset(client, member.email)
    link = link_in(mailoutbox[0])
    tampered = link[:-1] + ("a" if link[-1] != "a" else "b")
    answer = client.get(tampered, follow=True)
    assert answer.context["validlink"] is False


@pytest.mark.parametrize(
    ("password1", "password2"),
    [
        (NEWER, NEWER + "x"),  # mismatched
        ("password", "password"),  # common
        ("12345678901", "12345678901"),  # numeric
        ("short", "short"),  # too short
        ("dev@tenant.example", "dev@tenant.example"),  # like the e-mail
    ],
)
def test_weak_or_mismatched_new_password_shows_form_errors(client, member, mailoutbox, password1, password2):
    ask_reset(client, member.email)
    form_url = open_link(client, link_in(mailoutbox[0]))
    answer = set_password(client, form_url, password1, password2)
    assert answer.status_code == 200
    assert answer.context["form"].errors.get("new_password2")
    member.refresh_from_db()
    assert member.check_password("pw")
    # The link still works for a good password.
    assert set_password(client, form_url, NEWER).status_code == 302


def test_reset_is_rate_limited_per_email(member, mailoutbox, settings):
    settings.PORTAL_RESET_RATE = "2/h"
    for n in range(2):
        answer = ask_reset(Client(), member.email, REMOTE_ADDR=f"192.0.2.{n + 1}")
        assert answer.status_code == 302
    # A third address, the same e-mail: refused with a form error, and no mail.
    answer = ask_reset(Client(), member.email.upper(), REMOTE_ADDR="192.0.2.9")
    assert answer.status_code == 200
    assert "Too many reset requests" in answer.content.decode()
    assert answer.context["form"].errors.as_data()["__all__"][0].code == "rate_limited"
    assert len(mailoutbox) == 2


def test_reset_is_rate_limited_per_address(member, mailoutbox, settings):
    settings.PORTAL_RESET_RATE = "2/h"
    client = Client()
    for n in range(2):
        assert ask_reset(client, f"guess{n}@x.example").status_code == 302
    answer = ask_reset(client, member.email)
    assert answer.status_code == 200
    assert "Too many reset requests" in answer.content.decode()
    assert mailoutbox == []
    # Another address is not limited by this one.
    assert ask_reset(Client(), member.email, REMOTE_ADDR="192.0.2.77").status_code == 302
    assert len(mailoutbox) == 1


def test_rate_limit_answers_the_same_for_unknown_emails(db, mailoutbox, settings):
    settings.PORTAL_RESET_RATE = "1/h"
    ask_reset(Client(), "nobody@nowhere.example")
    answer = ask_reset(Client(), "nobody@nowhere.example", REMOTE_ADDR="192.0.2.5")
    assert "Too many reset requests" in answer.content.decode()


def test_reset_request_needs_csrf(member, mailoutbox):
    client = Client(enforce_csrf_checks=True)
    assert ask_reset(client, member.email).status_code == 403
    assert mailoutbox == []


def test_set_password_needs_csrf(member, mailoutbox):
    ask_reset(Client(), member.email)
    client = Client(enforce_csrf_checks=True)
    form_url = open_link(client, link_in(mailoutbox[0]))
    assert set_password(client, form_url, NEWER).status_code == 403
    member.refresh_from_db()
    assert member.check_password("pw")


def test_login_page_links_to_reset(client, db):
    assert reverse("portal:password_reset") in client.get(reverse("portal:login")).content.decode()

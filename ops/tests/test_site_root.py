"""The site root leads a visitor to the portal, which sends a signed-out one to log in (with a way to
sign up); it never shows Django's list of URL patterns."""

from django.test import Client
from django.urls import reverse


def test_the_site_root_redirects_to_the_portal(db):
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:home") == "/portal/"


def test_a_signed_out_visitor_following_it_reaches_the_login_with_a_sign_up_link(db):
    response = Client().get("/", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0].startswith(reverse("portal:login"))
    assert f'href="{reverse("portal:signup")}"' in response.content.decode()


def test_the_site_root_under_debug_is_no_list_of_url_patterns(db, settings):
    settings.DEBUG = True
    response = Client().get("/")
    assert response.status_code == 302 and b"URLconf" not in response.content
